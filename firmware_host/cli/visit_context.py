"""What a device command needs from today's visit when `--patient CODE` is given: the visit it
is for (named with `--visit ID`, or the patient's only open one); the screening's verdict on
today's needle sites; the dose, stored when the session starts and completed at its end;
the thresholds and the treatment record kept with the visit.

Every function here prints in plain words and returns an exit code when it refuses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import refused


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL",
                        help="the visit store (default: $ESTIM_STORE_URL, else a SQLite file in the user's data "
                             "directory), e.g. postgresql+psycopg://estim@db.clinic/estim")


def store(args: argparse.Namespace) -> Any:
    """The visit store named by --store (or the default); raises StoreError."""
    from ..visits import VisitStore

    return VisitStore(getattr(args, "store", None))


def add_visit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--visit", type=visit_ref, metavar="VISIT", dest="visit_id",
                        help="the visit this is for: the patient's code and the visit's number as `estim visit "
                             "start` prints it (P001/3), or the store's id of the visit; needed when the patient "
                             "has more than one visit open today")


def visit_ref(text: str) -> Any:
    """--visit P001/3 or --visit 57 (visits.VisitRef); a bad one is a usage error that says why."""
    from ..visits.values import VisitRef

    try:
        return VisitRef.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def attach_visit(args: argparse.Namespace) -> int | None:
    """Who is connected, into `args.envelope` (see `options.envelope`); with --patient, today's
    open visit into `args.visit` first. Returns the exit code of a refusal, else None."""
    args.visit = None
    from safety import SafetyError, ThresholdError

    from .options import envelope

    if getattr(args, "patient", None):
        code = _open_visit(args)
        if code is not None:
            return code
    elif getattr(args, "visit_id", None) is not None:
        return refused(ValueError("--visit needs --patient CODE"))
    try:
        args.envelope = envelope(args)
    except (SafetyError, ThresholdError) as exc:
        return refused(exc)
    return None


def _open_visit(args: argparse.Namespace) -> int | None:
    """The visit --patient acts on (--visit ID, else the patient's only open visit today)."""
    from ..visits import StoreError

    if getattr(args, "implanted_device", False) or getattr(args, "pregnant", False):
        return refused(ValueError("with --patient, today's screening answers for implanted devices and "
                                  "pregnancy; leave out --implanted-device and --pregnant"))
    try:
        with store(args) as visits:
            args.visit = visits.visit_for(args.patient, getattr(args, "visit_id", None))
    except StoreError as exc:
        return refused(exc)
    return None


def record_subject(args: argparse.Namespace) -> dict[str, Any]:
    """Whose treatment record it is, written in its first line: the patient and the visit."""
    visit = getattr(args, "visit", None)
    return {"patient": getattr(args, "patient", None), "visit": visit.id if visit is not None else None}


def keep_thresholds(args: argparse.Namespace, thresholds: Any) -> None:
    """Titration results into today's visit."""
    if getattr(args, "visit", None) is None:
        return
    _kept(args, "the thresholds", lambda visits: visits.add_thresholds(args.visit.id, thresholds))


def _kept(args: argparse.Namespace, what: str, write: Any) -> Any:
    """`write(store)`; a store that fails now is said in plain words, never a stop or a traceback
    (the session and its record go on; the record names its patient and visit)."""
    from ..visits import StoreError

    try:
        with store(args) as visits:
            return write(visits)
    except StoreError as exc:
        print(f"notice: the visit store did not keep {what} ({exc})", file=sys.stderr)
        return None


def keep_record(args: argparse.Namespace, record: Any) -> None:
    """The treatment record (safety.TreatmentRecord) written in this visit, by its id."""
    if getattr(args, "visit", None) is None:
        return
    _kept(args, f"that record {record.record_id} belongs to visit {args.visit.id}",
          lambda visits: visits.link_record(args.visit.id, record.record_id, record.path))


@dataclass
class DoseUnderWay:
    """What `kept_dose` completes the dose from: the session (once it exists) and whether it
    ran to its end."""

    stim: Any = None
    completed: bool = False


@contextmanager
def kept_dose(args: argparse.Namespace, program: str, mechanism: str | None, record: Any) -> Iterator[DoseUnderWay]:
    """With --patient: the dose, stored before the session reaches the device (a session
    killed before its end leaves it marked as not completed), and what the device delivered,
    per channel, and what stopped it early, appended once the session is over. The store is
    never written while the device is live, so a slow store never delays supervision."""
    dose = DoseUnderWay()
    dose_id = None
    if getattr(args, "visit", None) is not None:
        dose_id = _kept(args, "the dose as it starts", lambda visits: visits.start_dose(
            args.visit.id, program, mechanism, dose_request(args), record.record_id))
    interrupted = None
    try:
        yield dose
    except BaseException as exc:
        interrupted = exc
        raise
    finally:
        if dose_id is not None:
            delivered = _delivered(dose.stim) if dose.stim is not None else []
            why = None if dose.completed else _stopped_by(dose.stim, interrupted)
            _kept(args, "what the session delivered",
                  lambda visits: visits.finish_dose(dose_id, delivered, dose.completed, why))


def _stopped_by(stim: Any, interrupted: BaseException | None) -> str:
    """What ended a session before its end, as `estim patient show` says it."""
    from . import Terminated

    if isinstance(interrupted, KeyboardInterrupt):
        return "Ctrl-C (e-stop)"
    if isinstance(interrupted, Terminated):
        return "SIGTERM (e-stop)"
    if stim is None:
        return "the session did not reach the patient (refused, or the device was not reached)"
    return stim.tripped or ("an error in this program (see estim.log)" if interrupted is not None
                            else "ended before its planned end")


def _delivered(stim: Any) -> list[dict[str, Any]]:
    """Per channel: the highest intensity applied, time at output and charge (the device's
    counter when it reported one)."""
    from safety import output_summary

    doses = stim.interlock.applied_doses()
    needles = {ch: stim.interlock.setup.needle(ch) for ch in stim.channels}
    summaries, _ = output_summary(doses, needles, {c: r.charge_total_uc for c, r in stim.readings.items()})
    return [{
        "channel": s.channel,
        "peak_ma": max((d.setting.amplitude_ma for d in doses
                        if d.channel == s.channel and d.enabled and d.setting is not None), default=0.0),
        "stimulation_s": round(s.stimulation_s, 1),
        "charge_uc": round(s.delivered_charge_device_uc if s.delivered_charge_device_uc is not None
                           else s.delivered_charge_host_uc, 1),
    } for s in summaries]


def dose_request(args: argparse.Namespace) -> dict[str, Any]:
    """The options that ask for this dose again (`estim run --patient CODE --last-dose`); the
    needle pairs as `--pair CH SITES MM` would give them, and direct parameters as given."""
    keys = ("program", "preset", "needle", "sensitivity", "minutes", "seconds", "frequency", "pulse_width",
            "amplitude", "shape", "max_amplitude", "ramp")
    request = {k: (str(v) if isinstance(v, Path) else v) for k in keys if (v := getattr(args, k, None)) is not None}
    pairs = getattr(args, "pairs", None) or {}
    if pairs:
        request["pair"] = [[str(ch), p.sites, f"{p.inserted_mm:g}"] for ch, p in sorted(pairs.items())]
        request["needle"] = next(iter(pairs.values())).needle
    return request


def apply_last_dose(args: argparse.Namespace) -> int | None:
    """--last-dose: fill the options from the patient's last completed dose (a program, a
    preset or direct parameters)."""
    from ..visits import StoreError

    if not getattr(args, "patient", None):
        return refused(ValueError("--last-dose needs --patient CODE: the patient whose last dose to repeat"))

    try:
        with store(args) as visits:
            last = visits.last_dose(args.patient)
    except StoreError as exc:
        return refused(exc)
    if last is None:
        return refused(ValueError(f"{args.patient} has no completed dose yet"))
    for key, value in last.request.items():
        if key in ("channel", "sites", "inserted") and not isinstance(value, list):
            value = [value]  # a dose kept before several pairs could be given
        if getattr(args, key, None) is None:
            setattr(args, key, Path(value) if key == "program" else value)
    from .pairs import given_pairs

    reused = "; ".join(p.describe() for p in given_pairs(args).values())
    print(f"last dose: {last.program}, {last.recorded_at.astimezone():%Y-%m-%d}" + (f"; reusing {reused}" if reused
          else "") + "; today's thresholds set the intensity")
    return None
