"""What a device command needs from today's visit when `--patient CODE` is given: the open,
screened visit; the screening's verdict on today's needle sites; and, afterwards, the
thresholds, the dose delivered and the treatment record kept with the visit.

Every function here prints in plain words and returns an exit code when it refuses."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
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
    try:
        args.envelope = envelope(args)
    except (SafetyError, ThresholdError) as exc:
        return refused(exc)
    return None


def _open_visit(args: argparse.Namespace) -> int | None:
    from ..visits import StoreError

    if getattr(args, "implanted_device", False) or getattr(args, "pregnant", False):
        return refused(ValueError("with --patient, today's screening answers for implanted devices and "
                                  "pregnancy; leave out --implanted-device and --pregnant"))
    try:
        with store(args) as visits:
            visit = visits.open_visit(args.patient)
    except StoreError as exc:
        return refused(exc)
    if visit is None:
        return refused(ValueError(f"no visit open today for {args.patient}: screen the patient first with "
                                  f"`estim visit start {args.patient} ...`"))
    args.visit = visit
    return None


def keep_thresholds(args: argparse.Namespace, thresholds: Any) -> None:
    """Titration results into today's visit."""
    if getattr(args, "visit", None) is None:
        return
    with store(args) as visits:
        visits.add_thresholds(args.visit.id, thresholds)


def keep_record(args: argparse.Namespace, record: Any) -> None:
    """The treatment record (safety.TreatmentRecord) written in today's visit, by its id."""
    if getattr(args, "visit", None) is None:
        return
    with store(args) as visits:
        visits.link_record(args.visit.id, record.record_id, str(record.path))


def keep_dose(args: argparse.Namespace, program: Any, request: Mapping[str, Any], stim: Any, completed: bool) -> None:
    """The dose as asked (to repeat it) and as the device delivered it, per channel."""
    if getattr(args, "visit", None) is None:
        return
    from safety import output_summary

    doses = stim.interlock.applied_doses()
    needles = {ch: stim.interlock.setup.needle(ch) for ch in stim.channels}
    summaries, _ = output_summary(doses, needles, {c: r.charge_total_uc for c, r in stim.readings.items()})
    delivered = [{
        "channel": s.channel,
        "peak_ma": max((d.setting.amplitude_ma for d in doses
                        if d.channel == s.channel and d.enabled and d.setting is not None), default=0.0),
        "stimulation_s": round(s.stimulation_s, 1),
        "charge_uc": round(s.delivered_charge_device_uc if s.delivered_charge_device_uc is not None
                           else s.delivered_charge_host_uc, 1),
    } for s in summaries]
    with store(args) as visits:
        visits.add_dose(args.visit.id, program.name, str(program.mechanism), request, delivered, completed)


def dose_request(args: argparse.Namespace) -> dict[str, Any]:
    """The options that ask for this dose again (`estim run --patient CODE --last-dose`); the
    needle pairs as `--pair CH SITES MM` would give them."""
    keys = ("program", "preset", "needle", "sensitivity", "minutes")
    request = {k: (str(v) if isinstance(v, Path) else v) for k in keys if (v := getattr(args, k, None)) is not None}
    pairs = getattr(args, "pairs", None) or {}
    if pairs:
        request["pair"] = [[str(ch), p.sites, f"{p.inserted_mm:g}"] for ch, p in sorted(pairs.items())]
        request["needle"] = next(iter(pairs.values())).needle
    return request


def apply_last_dose(args: argparse.Namespace) -> int | None:
    """--last-dose: fill the program options from the patient's last completed dose."""
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
