"""Command-line options shared by the commands that start a session, and their parsing
into the safety layer's set-up (sites, needles, patient, sensitivity, record path)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safety import STANDARD, Envelope, Patient, Refusal, Sensitivity, ThresholdError, TreatmentRecord

from .pairs import Pair, add_pair_options, parse_sites  # noqa: F401 - parse_sites: the one parser of sites
from .visit_context import add_store_option, add_visit_option, record_subject

def add_session_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="sim://", metavar="URL",
                        help="device URL: sim:// (built-in simulated device), /dev/ttyUSB0, socket://HOST:PORT")
    parser.add_argument("--clear-faults", action="store_true",
                        help="clear a stop the device has latched from before, in the name given with --operator "
                             "(what was latched and why is shown and recorded); needed on ICD v1 devices, which "
                             "latch WATCHDOG after every session")
    add_pair_options(parser)
    parser.add_argument("--sensitivity", choices=["hyper", "typical", "hypo"],
                        help="the patient's sensitivity profile (hyper lowers the cap and the ramp rate); "
                             "default: the patient's, or typical")
    add_patient_options(parser)
    parser.add_argument("--record", type=Path, metavar="PATH",
                        help="treatment record (JSON lines); default: a timestamped file in the user's data dir")
    parser.add_argument("--operator", metavar="NAME",
                        help="the clinician's name or initials, written into the record (needed to clear a stop; "
                             "never taken from the login)")
    parser.add_argument("--mechanism", choices=PRESET_NAMES, metavar="MECHANISM",
                        help="the target mechanism of today's session, for the record: " + ", ".join(PRESET_NAMES))
    parser.add_argument("--plan", default="", metavar="TEXT",
                        help="the integration plan for right after the session (free text, into the record), "
                             "e.g. 'graded loading of the knee extensors, 3x10'")


def add_patient_options(parser: argparse.ArgumentParser) -> None:
    """Who is connected: a patient's screened visit, a research participant, or a test load."""
    parser.add_argument("--patient", metavar="CODE",
                        help="the patient's code: the session is part of today's visit (screened with "
                             "`estim visit start CODE`), its thresholds and dose are kept with the visit")
    add_visit_option(parser)
    add_store_option(parser)
    parser.add_argument("--research-protocol", metavar="ID",
                        help="without --patient: a participant screened under this research protocol (give "
                             "--subject CODE); their thresholds come from --thresholds FILE")
    parser.add_argument("--subject", metavar="CODE",
                        help="without --patient: the code of the person connected (a research participant); "
                             "a thresholds file must name the same code")
    parser.add_argument("--test-load", nargs="?", const="bench load", metavar="TEXT",
                        help="nobody is connected: a bench load (resistor or phantom), e.g. --test-load '1 kOhm'. "
                             "A device other than the built-in simulator needs this, --patient or "
                             "--research-protocol")
    parser.add_argument("--implanted-device", action="store_true",
                        help="without --patient: the patient has a pacemaker, ICD or other implanted electronic "
                             "device (stimulation is then refused)")
    parser.add_argument("--pregnant", action="store_true",
                        help="without --patient: the patient is pregnant (pelvic sites refused)")


SENSITIVITY = {"hyper": Sensitivity.HYPERSENSITIVE, "typical": Sensitivity.TYPICAL, "hypo": Sensitivity.HYPOSENSITIVE}


def envelope(args: argparse.Namespace) -> Envelope:
    """Who is connected, and every limit that comes from them, as the command line declares it:
    today's visit with --patient (its thresholds only from the visit store), a research
    participant, a test load, or nothing declared (the built-in simulator only). The
    sensitivity is the visit's, or the stricter of the visit's and --sensitivity. Raises Refusal
    (or ThresholdError for an unusable thresholds file)."""
    from safety import Envelope, stricter
    from safety.thresholds import load

    given = {flag: value for flag, value in (("--patient", getattr(args, "patient", None)),
                                             ("--research-protocol", getattr(args, "research_protocol", None)),
                                             ("--test-load", getattr(args, "test_load", None))) if value}
    if len(given) > 1:
        raise Refusal("usage.conflict", f"{' and '.join(given)} each say who is connected: give one",
                      value=sorted(given), limit="one")
    subject, thresholds_file = getattr(args, "subject", None), getattr(args, "thresholds", None)
    flag = SENSITIVITY[args.sensitivity] if getattr(args, "sensitivity", None) else None
    visit = getattr(args, "visit", None)
    if visit is not None:
        for name, value in (("--thresholds", thresholds_file), ("--subject", subject)):
            if value is not None:
                raise Refusal("usage.conflict", f"with --patient, thresholds and identity come from today's visit "
                              f"in the visit store only: leave out {name}", value=str(value), limit="--patient")
        profile = Sensitivity(visit.sensitivity)
        return Envelope.for_visit(args.patient, f"{visit.name} (store id {visit.id})", visit.screening,
                                  stricter(profile, flag) if flag else profile, visit.thresholds)
    thresholds = load(thresholds_file) if thresholds_file is not None else []
    named = sorted({t.patient for t in thresholds})
    if "--test-load" in given:
        if thresholds or subject:
            raise Refusal("usage.conflict", "a test load has no thresholds and no subject: give doses in mA",
                          value=str(thresholds_file or subject), limit="--test-load")
        return Envelope.test_load(args.test_load)
    person = Patient(implanted_device=getattr(args, "implanted_device", False), pregnant=getattr(args, "pregnant", False))
    if len(named) > 1 or (subject and named and named != [subject]):
        raise Refusal("envelope.thresholds_of_another", f"the thresholds name {', '.join(named)}"
                      + (f", not {subject}" if subject else ": one person's thresholds at a time"),
                      value=named, limit=subject or "one person")
    if "--research-protocol" in given:
        if not subject:
            raise Refusal("usage.missing", "--research-protocol needs --subject CODE: the participant's code",
                          value=None, limit="--subject CODE")
        return Envelope.research(args.research_protocol, subject, person, flag, thresholds)
    return Envelope.undeclared(person, flag, thresholds, who=subject or (named[0] if named else ""))


def preflight(chosen: Envelope, placements: dict, sensitivity: Sensitivity | None = None) -> int | None:
    """Before any device is opened: the envelope's own set-up verdict (placement across every
    channel, screening), the one the interlock gives again at set-up; cautions printed, a
    refusal's exit code returned. `sensitivity`: a program's own, when stricter."""
    from safety import stricter

    from . import refused

    refusals, cautions = chosen.setup_verdict(placements, stricter(sensitivity or Sensitivity.TYPICAL, chosen.sensitivity))
    for caution in cautions:
        print(f"caution: {caution}", file=sys.stderr)
    for extra in refusals[1:]:
        print(f"refused: {extra}", file=sys.stderr)
    return refused(refusals[0]) if refusals else None


def fixed_waveform_setup(args: argparse.Namespace, pairs: dict[int, Pair], minutes: float, chosen: Envelope,
                         frequency_hz: tuple[float, float] | None = None,
                         pulse_width_us: tuple[float, float] | None = None) -> SessionSetupParts:
    """Prescription, placements and needles for channels held at --frequency and --pulse-width
    (or within the given ranges), capped at --max-amplitude, ramped at --ramp (run, titrate,
    console), with the envelope of the person connected."""
    from safety import Prescription

    prescription = Prescription(
        max_amplitude_ma={ch: args.max_amplitude for ch in pairs},
        max_session_minutes=minutes,
        ramp_ma_per_s=args.ramp,
        frequency_hz=frequency_hz or (args.frequency, args.frequency),
        pulse_width_us=pulse_width_us or (args.pulse_width, args.pulse_width),
        sensitivity=chosen.sensitivity or Sensitivity.TYPICAL,
    )
    placements = {ch: pair.placement() for ch, pair in pairs.items()}
    needles = {ch: pair.safety_needle() for ch, pair in pairs.items()}
    return SessionSetupParts(prescription, placements, needles, chosen)


@dataclass(frozen=True)
class SessionSetupParts:
    """What `firmware_host.open` needs besides the device: everything a command decided."""

    prescription: Any
    placements: dict
    needles: dict
    envelope: Envelope


def open_session(args: argparse.Namespace, setup: SessionSetupParts, record: TreatmentRecord) -> Any:
    """`firmware_host.open` for --device with the set-up from `fixed_waveform_setup`; on a
    refusal or an unreachable device, the exit code instead of a session. Tells the user once
    what a v1 device means for the end of the session, and prints the screening's cautions."""
    import firmware_host as fh
    from safety import SafetyError

    from . import refused, unreachable

    try:
        stim = fh.open(args.device, prescription=setup.prescription, placements=setup.placements,
                       needles=setup.needles, envelope=setup.envelope, record=record)
    except SafetyError as exc:
        _not_started(record, "refused", exc)
        return refused(declare_hint(exc))
    except fh.EstimError as exc:
        _not_started(record, "device not reachable", exc)
        return unreachable(exc)
    session_notices(stim.identity, stim.interlock.setup.envelope)
    return stim


def open_program_session(args: argparse.Namespace, program: Any, record: TreatmentRecord) -> Any:
    """A session for a dosed program on --device: checked whole against every rule with the
    device's own limits before anything is sent; on a refusal or an unreachable device, the exit
    code instead of a session."""
    import firmware_host as fh
    from safety import SafetyError

    from ..stimulator import Stimulator
    from ..units import device_limits
    from ..waveforms.check import check
    from . import refused, unreachable

    try:
        link = fh.connect(args.device)
    except fh.EstimError as exc:
        _not_started(record, "device not reachable", exc)
        return unreachable(exc)
    try:
        limits = device_limits(link.identity)
        verdict = check(program, limits, args.envelope)
        if not verdict.ok:
            print(verdict.table(), file=sys.stderr)
            link.close()
            return refused(ValueError(f"{program.name!r} breaks the rules above"))
        stim = Stimulator(link, program.session_setup(limits, args.envelope), record=record)
    except SafetyError as exc:
        link.close()
        return refused(declare_hint(exc))
    except BaseException:
        link.close()
        raise
    session_notices(stim.identity, args.envelope)
    return stim


def declare_hint(exc: Exception) -> Exception:
    """A device that refuses an undeclared session, said with the flags that declare one."""
    if getattr(exc, "rule", None) != "envelope.unscreened":
        return exc
    return Refusal("envelope.unscreened", "this is not the built-in simulated device, so a person may be connected, "
                   "and nobody was screened: give --patient CODE (today's screened visit), or declare what is "
                   "connected: --test-load for a bench load, or --research-protocol ID --subject CODE for a "
                   "participant screened under a research protocol", value=exc.value, limit=exc.limit)


def _not_started(record: TreatmentRecord, outcome: str, exc: Exception) -> None:
    """An auditor reading the record learns why the session it opened never began; a record
    that cannot take it changes nothing (nothing reached the device either way)."""
    from safety import SafetyError

    from . import plain

    try:
        record.append("not_started", {"outcome": outcome, "why": plain(exc), "rule": getattr(exc, "rule", None)})
    except (OSError, SafetyError):
        pass


def session_notices(identity: Any, chosen: Envelope) -> None:
    """Said once as a session opens: the intended use, who is connected as declared, and on an
    ICD v1 device (no end of session) what that means for the next one."""
    from .. import INTENDED_USE
    from ..fault_text import v1_note

    print(f"note: {INTENDED_USE}", file=sys.stderr)
    print(f"connected: {chosen.describe()}", file=sys.stderr)
    if identity.protocol_version < 2:
        print(f"note: {v1_note(identity.serial, 'this session')}", file=sys.stderr)


def latched_at_start(stim: Any, args: argparse.Namespace) -> int | None:
    """None when the device is ready, or was made ready by `--clear-faults` in the operator's
    name; else EXIT_DEVICE_FAULT with what is latched, why, and the command that clears it."""
    if stim.tripped is None:
        return None
    from .. import fault_text
    from . import EXIT_DEVICE_FAULT

    if getattr(args, "clear_faults", False):
        from safety import SafetyError, operator_name

        from ..errors import EstimError

        try:
            cleared = stim.clear_faults(args.operator or "")
        except (SafetyError, EstimError) as exc:
            hint = " (--operator NAME)" if getattr(exc, "rule", None) == "clear.operator" else ""
            print(f"refused: the stop latched from before was not cleared: {exc}{hint}", file=sys.stderr)
            return EXIT_DEVICE_FAULT
        for code in sorted(cleared):
            print(f"cleared by {operator_name(args.operator)}: {fault_text.explain(code)}", file=sys.stderr)
        return None
    print("refused: the device has a stop latched from before, so nothing was sent:", file=sys.stderr)
    for code in sorted(stim.status().latched_faults) or ["(none reported now)"]:
        print(f"  - {fault_text.explain(code)}", file=sys.stderr)
    print(f"check the patient and the device, then clear it with your name: "
          f"{fault_text.clear_hint(args.device, stim.identity.protocol_version)}", file=sys.stderr)
    return EXIT_DEVICE_FAULT


def check_writable(path: Path, what: str) -> None:
    """Refuse (before any device is opened) a file this command could not write: by trying,
    since permission bits say nothing to root and nothing about read-only file systems. A file
    not there yet is tried through a scratch file beside it, so the path itself never flickers."""
    import tempfile

    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".estim-check-"):
                pass
    except OSError as exc:
        raise Refusal("output.not_writable", f"the {what} {path} cannot be written there "
                      f"({exc.strerror or exc}): choose another place", value=str(path),
                      limit="a writable file") from None


def session_plan(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """What the record says was intended and why: operator, target mechanism, sensitivity,
    thresholds, the integration plan, and how the session was started."""
    thresholds = getattr(args, "thresholds", None)
    return {
        "operator": args.operator,
        "mechanism": args.mechanism,
        "sensitivity": (args.envelope.sensitivity or Sensitivity.TYPICAL).value,
        "patient": getattr(args, "patient", None),
        "visit": visit.id if (visit := getattr(args, "visit", None)) is not None else None,
        "thresholds": _thresholds_as_given(thresholds),
        "integration_plan": args.plan,
        "argv": _without_passwords(sys.argv[1:]),
        **extra,
    }


def _without_passwords(argv: list[str]) -> list[str]:
    """The command line as the record keeps it: a database password given in --store is hidden."""
    from sqlalchemy.engine import make_url

    def hidden(url: str) -> str:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # not a URL: the store refuses it anyway; keep nothing that may be a secret
            return "***"

    out = []
    for n, arg in enumerate(argv):
        if arg.startswith("--store="):
            arg = "--store=" + hidden(arg.split("=", 1)[1])
        elif n and argv[n - 1] == "--store":
            arg = hidden(arg)
        out.append(arg)
    return out


def _thresholds_as_given(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return str(path)  # unreadable: the run refuses it on its own; the record names the file


def open_record(path: Path | None, kind: str = "session", store: str | None = None, patient: str | None = None,
                visit: int | None = None) -> TreatmentRecord:
    """The treatment record at `path` (default: a timestamped file in the user's data dir),
    signed with this computer's record key, naming the patient and visit it belongs to; a
    place that cannot be written, or an existing file that is not an intact record of the
    same patient, is a refusal before any device is opened. On a first run the key is
    created here, with a notice (the README's quick start must work on a fresh machine).
    Its head is anchored in the visit store at `store` (None: the default); records the
    store could not take before are anchored now that it answers."""
    from safety.record_keys import RecordKeyError, default_key_or_create, key_dir

    from .anchoring import AnnouncedRecord, StoreAnchor, anchor_pending

    if path is None:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        # a random tail: two sessions started in the same second never share (and refuse) one file
        path = base / "estim" / "records" / f"{time.strftime(f'{kind}-%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.jsonl"
    check_writable(path, "treatment record")
    try:
        key, created = default_key_or_create()
    except (OSError, RecordKeyError) as exc:
        raise Refusal("output.no_record_key", f"no usable record key in {key_dir()} "
                      f"({getattr(exc, 'strerror', None) or exc}); fix it or run `estim keys init`",
                      value=str(key_dir()), limit="a readable key, or a writable folder for one") from None
    if created:
        print(f"notice: this computer had no record key; created {key.key_id} in {key_dir()} to sign treatment "
              "records. Back up that folder: records cannot be checked without it.", file=sys.stderr)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = AnnouncedRecord(path, key=key, anchor=StoreAnchor(store), patient=patient, visit=visit)
    except OSError as exc:
        raise Refusal("output.not_writable", f"the treatment record {path} cannot be written ({exc.strerror}): "
                      "choose another place with --record", value=str(path), limit="a writable file") from None
    except ValueError as exc:
        raise Refusal("output.not_a_record", f"{exc}: choose a new file with --record", value=str(path),
                      limit="an intact record or a new file") from None
    if not record.wait_anchored(ANCHOR_START_WAIT_S):  # before anything is sent; never on the way to a stop
        why = record.anchor_error or f"no answer in {ANCHOR_START_WAIT_S:g} s"
        print(f"notice: the visit store did not take this record's head ({why}); the session goes on, and the "
              "record is anchored once the store answers again (`estim record anchor PATH`)", file=sys.stderr)
    else:
        anchor_pending(store)
    return record



def open_session_record(args: argparse.Namespace) -> TreatmentRecord | int:
    """The record of a session command (run, console, titrate), naming its patient and visit;
    on a refusal (an unusable key, a place that cannot be written, another patient's record),
    the exit code instead, said in words before any device is opened."""
    from safety import SafetyError

    from . import refused

    try:
        return open_record(args.record, store=args.store, **record_subject(args))
    except (SafetyError, OSError, ValueError) as exc:
        return refused(exc)

ANCHOR_START_WAIT_S = 3.0
"""Longest wait, before a session starts, for the visit store to take the record's first head."""


def dose(args: argparse.Namespace, program: Any) -> tuple[Any, tuple[str, ...]]:
    """The program dosed for the person declared (`args.envelope`): threshold-relative
    intensities in mA from their thresholds on each waveform, held at the envelope's ceilings,
    with notes on what was converted or held down. `args.envelope` becomes the session's (its
    sensory-level channels marked). Raises ProgramError saying what to titrate."""
    if not program.needed_thresholds:
        return program, ()
    if not args.envelope.thresholds:
        needs = ", ".join(f"{kind} on channel {ch}" for ch, kind in sorted(program.needed_thresholds))
        raise ThresholdError(f"{program.name!r} sets intensities relative to thresholds ({needs}); titrate first "
                             "(`estim titrate --patient CODE ...`) or give --thresholds FILE")
    dosed, args.envelope, notes = program.dose(args.envelope, lambda ch, wave: _retitrate_hint(args, ch, wave))
    return dosed, notes


def _retitrate_hint(args: argparse.Namespace, channel: int, waveform: Any) -> str:
    source = f"--preset {args.preset}" if getattr(args, "preset", None) else (
        f"--program {args.program}" if getattr(args, "program", None) else
        f"--frequency {waveform.frequency_hz:g} --pulse-width {waveform.pulse_width_us:g}")
    who = f" --patient {args.patient}" if getattr(args, "patient", None) else ""
    return f"titrate channel {channel} on {waveform} first: estim titrate{who} --channel {channel} {source} ..."


PRESET_NAMES = ("peripheral_analgesia", "segmental_inhibition", "descending_modulation",
                "neuromuscular_reeducation", "tissue_perfusion")  # waveforms.program.Mechanism, kept light


def add_preset_options(parser: argparse.ArgumentParser) -> None:
    """Where a preset goes, for commands that do not open a session (check, preview)."""
    add_pair_options(parser, " (with --preset; --channel defaults to 1)")
    parser.add_argument("--sensitivity", choices=sorted(SENSITIVITY),
                        help="with --preset: the patient's sensitivity (default: the patient's, or typical)")
    parser.add_argument("--minutes", type=float, help="with --preset: its length")


def add_program_options(parser: argparse.ArgumentParser) -> None:
    """--program FILE | --preset NAME, and --thresholds FILE for threshold-relative intensity."""
    source = parser.add_mutually_exclusive_group()
    from ..programs import shipped

    source.add_argument("--program", type=Path, metavar="FILE",
                        help="a dosing program (TOML or JSON), or one shipped with estim by name: "
                             + ", ".join(shipped()))
    source.add_argument("--preset", metavar="NAME", choices=PRESET_NAMES,
                        help="a preset for a target mechanism: " + ", ".join(PRESET_NAMES))
    parser.add_argument("--thresholds", type=Path, metavar="FILE",
                        help="thresholds measured by `estim titrate --out FILE` (without --patient, whose "
                             "thresholds come from today's visit), for threshold-relative programs and presets")


def unresolved_program(args: argparse.Namespace) -> Any:
    """The Program named by --program (a file, or a shipped program by name), or --preset on the
    needle pairs (`args.pairs`) for the sensitivity and --minutes/--seconds, capped by --max-amplitude and --ramp when given,
    before thresholds; raises ProgramError, Refusal or ValueError."""
    from ..programs import find
    from ..waveforms import preset_program
    from ..waveforms.program import Program

    if args.program is not None:
        program = Program.load(find(args.program))
    else:
        minutes = args.seconds / 60 if getattr(args, "seconds", None) is not None else getattr(args, "minutes", None)
        longest = STANDARD.max_session_minutes
        if minutes is not None and not 0 < minutes <= longest:
            raise Refusal("session.too_long", f"a preset of {minutes:g} minutes is outside 0 to the {longest:g} "
                          "minutes allowed", value=minutes, limit=longest)
        if not args.pairs:
            raise Refusal("setup.sites", f"--preset {args.preset} needs the needles: --pair CH SITES MM (or --sites "
                          "SIDE:REGION,SIDE:REGION --inserted MM)", value=None, limit="--pair")
        profile = args.envelope.sensitivity or Sensitivity.TYPICAL
        program = preset_program(args.preset, {ch: pair.program_needle() for ch, pair in args.pairs.items()},
                                 profile, minutes)
        if minutes is not None and program.duration_s < minutes * 60 - 1e-6:
            raise Refusal("preset.minutes", f"{args.preset} for a {profile.value} patient lasts at most "
                          f"{program.duration_s / 60:g} minutes, not {minutes:g}: choose --minutes "
                          f"{program.duration_s / 60:g} or less", value=minutes, limit=program.duration_s / 60)
    return _capped(program, getattr(args, "max_amplitude", None), getattr(args, "ramp", None))


def program_from_args(args: argparse.Namespace) -> tuple[Any, tuple[str, ...]]:
    """The resolved program and the notes on its thresholds (see `dose_thresholds`)."""
    program = unresolved_program(args)
    if not program.needed_thresholds and getattr(args, "thresholds", None) is not None:
        raise Refusal("usage.conflict", f"--thresholds is not used: {program.name!r} sets every intensity in mA",
                      value=str(args.thresholds), limit="a threshold-relative program or preset")
    return dose(args, program)


def _capped(program: Any, max_amplitude: float | None, ramp: float | None) -> Any:
    """`program` with its prescription's amplitude caps and ramp rate lowered to the given ones
    (a cap never raises what the program prescribes; a dose above it is then refused)."""
    rx = program.prescription
    update: dict[str, Any] = {}
    if max_amplitude is not None:
        if not max_amplitude > 0:
            raise Refusal("setup.max_amplitude", f"--max-amplitude {max_amplitude:g} mA is not a positive cap",
                          value=max_amplitude, limit="> 0")
        update["max_amplitude_ma"] = {ch: min(cap, max_amplitude) for ch, cap in rx.max_amplitude_ma.items()}
    if ramp is not None:
        if not ramp > 0:
            raise Refusal("setup.ramp", f"--ramp {ramp:g} mA/s is not a positive rate", value=ramp, limit="> 0")
        update["ramp_rate_ma_per_s"] = min(rx.ramp_rate_ma_per_s, ramp)
    if not update:
        return program
    return type(program).model_validate({**program.model_dump(), "prescription": {**rx.model_dump(), **update}})
