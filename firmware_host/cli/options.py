"""Command-line options shared by the commands that start a session, and their parsing
into the safety layer's set-up (sites, needles, patient, sensitivity, record path)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from safety import ChannelPlacement, Needle, NeedleSite, Patient, Refusal, Region, Sensitivity, Side, TreatmentRecord

SITES_HELP = (
    "the channel's two needles as SIDE:REGION,SIDE:REGION, e.g. left:forearm,left:forearm; "
    "regions: " + ", ".join(r.value for r in Region) + "; sides: left, right, midline"
)


def add_session_options(parser: argparse.ArgumentParser, sites_required: bool = True) -> None:
    parser.add_argument("--device", default="sim://", metavar="URL",
                        help="device URL: sim:// (built-in simulated device), /dev/ttyUSB0, socket://HOST:PORT")
    parser.add_argument("--sites", required=sites_required, metavar="SIDE:REGION,SIDE:REGION", help=SITES_HELP)
    parser.add_argument("--needle", default="0.25x15", metavar="DIAMETER_MMxLENGTH_MM",
                        help="needle diameter and inserted length in mm (default 0.25x15)")
    parser.add_argument("--sensitivity", choices=["hyper", "typical", "hypo"], default="typical",
                        help="the patient's sensitivity profile (hyper lowers caps and ramp rate)")
    parser.add_argument("--implanted-device", action="store_true",
                        help="the patient has a pacemaker, ICD or other implanted electronic device "
                             "(stimulation is then refused)")
    parser.add_argument("--pregnant", action="store_true",
                        help="the patient is pregnant (abdominal, lumbosacral and sacral sites refused)")
    parser.add_argument("--record", type=Path, metavar="PATH",
                        help="treatment record (JSON lines); default: a timestamped file in the user's data dir")
    parser.add_argument("--operator", default=os.environ.get("USER", ""),
                        help="the clinician's name or initials, written into the record")
    parser.add_argument("--mechanism", choices=PRESET_NAMES, metavar="MECHANISM",
                        help="the target mechanism of today's session, for the record: " + ", ".join(PRESET_NAMES))
    parser.add_argument("--plan", default="", metavar="TEXT",
                        help="the integration plan for right after the session (free text, into the record), "
                             "e.g. 'graded loading of the knee extensors, 3x10'")


def parse_sites(text: str) -> ChannelPlacement:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise Refusal("setup.sites", f"--sites needs two needle sites separated by a comma, got {text!r}",
                      value=text, limit="SIDE:REGION,SIDE:REGION")
    return ChannelPlacement(*(_site(part) for part in parts))


def _site(text: str) -> NeedleSite:
    side, _, region = text.partition(":")
    try:
        return NeedleSite(Region(region.strip().lower()), Side(side.strip().lower()))
    except ValueError:
        raise Refusal("setup.sites", f"needle site {text!r} is not SIDE:REGION (e.g. left:forearm)",
                      value=text, limit="SIDE:REGION") from None


def parse_needle(text: str) -> Needle:
    diameter, sep, length = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return Needle(float(diameter), float(length))
    except ValueError:
        raise Refusal("setup.needle", f"--needle {text!r} is not DIAMETER_MMxLENGTH_MM (e.g. 0.25x15)",
                      value=text, limit="DIAMETER_MMxLENGTH_MM") from None


SENSITIVITY = {"hyper": Sensitivity.HYPERSENSITIVE, "typical": Sensitivity.TYPICAL, "hypo": Sensitivity.HYPOSENSITIVE}


def patient(args: argparse.Namespace) -> Patient:
    return Patient(implanted_device=args.implanted_device, pregnant=args.pregnant)


def fixed_waveform_setup(args: argparse.Namespace, sites: dict[int, str], minutes: float) -> tuple[Any, dict, dict]:
    """Prescription, placements and needles for channels held at one --frequency and
    --pulse-width, capped at --max-amplitude, ramped at --ramp (run, titrate, console)."""
    from safety import Prescription

    prescription = Prescription(
        max_amplitude_ma={ch: args.max_amplitude for ch in sites},
        max_session_minutes=minutes,
        ramp_ma_per_s=args.ramp,
        frequency_hz=(args.frequency, args.frequency),
        pulse_width_us=(args.pulse_width, args.pulse_width),
        sensitivity=SENSITIVITY[args.sensitivity],
    )
    placements = {ch: parse_sites(text) for ch, text in sites.items()}
    needles = {ch: parse_needle(args.needle) for ch in sites}
    return prescription, placements, needles


def open_session(args: argparse.Namespace, setup: tuple[Any, dict, dict], record: TreatmentRecord) -> Any:
    """`firmware_host.open` for --device with the set-up from `fixed_waveform_setup`; on a
    refusal or an unreachable device, the exit code instead of a session."""
    import firmware_host as fh
    from safety import SafetyError

    from . import EXIT_NO_DEVICE, refused

    prescription, placements, needles = setup
    try:
        return fh.open(args.device, prescription=prescription, placements=placements, needles=needles,
                       patient=patient(args), record=record)
    except SafetyError as exc:
        return refused(exc)
    except fh.EstimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE


def session_plan(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """What the record says was intended and why: operator, target mechanism, sensitivity,
    thresholds, the integration plan, and how the session was started."""
    thresholds = getattr(args, "thresholds", None)
    return {
        "operator": args.operator,
        "mechanism": args.mechanism,
        "sensitivity": SENSITIVITY[args.sensitivity].value,
        "thresholds": _thresholds_as_given(thresholds),
        "integration_plan": args.plan,
        "argv": sys.argv[1:],
        **extra,
    }


def _thresholds_as_given(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return str(path)  # unreadable: the run refuses it on its own; the record names the file


def open_record(path: Path | None) -> TreatmentRecord:
    """A new record signed with this computer's key; on a first run the key is created here,
    with a notice (the README's quick start must work on a fresh machine)."""
    from safety.record_keys import default_key_or_create, key_dir

    if path is None:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        path = base / "estim" / "records" / time.strftime("session-%Y%m%d-%H%M%S.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    key, created = default_key_or_create()
    if created:
        print(f"notice: this computer had no record key; created {key.key_id} in {key_dir()} to sign treatment "
              "records. Back up that folder: records cannot be checked without it.", file=sys.stderr)
    return TreatmentRecord(path, key=key)


class ThresholdsError(ValueError):
    """The program needs thresholds that were not given."""


def load_thresholds(path: Path | None, program: Any) -> dict[int, dict[str, float]]:
    """Per-channel thresholds from a titration file (flat: every channel) or a per-channel map."""
    needs = ", ".join(f"{kind} on channel {ch}" for ch, kind in sorted(program.needed_thresholds))
    if path is None:
        raise ThresholdsError(f"{program.name!r} sets intensities relative to thresholds ({needs}); "
                            "give --thresholds FILE (e.g. from `estim titrate --out FILE`)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ThresholdsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ThresholdsError(f"{path}: expected a JSON object of thresholds in mA")

    def marks(d: Any) -> dict[str, float]:
        if not isinstance(d, dict):
            raise ThresholdsError(f"{path}: expected {{\"sensory\": mA, ...}}, got {d!r}")
        return {k: v for k, v in d.items() if v is not None}

    if all(key.isdigit() for key in data):
        return {int(ch): marks(d) for ch, d in data.items()}
    return {ch: marks(data) for ch in program.needles}


PRESET_NAMES = ("peripheral_analgesia", "segmental_inhibition", "descending_inhibition",
                "neuromuscular_reeducation", "tissue_perfusion")  # waveforms.program.Mechanism, kept light


def add_program_options(parser: argparse.ArgumentParser) -> None:
    """--program FILE | --preset NAME, and --thresholds FILE for threshold-relative intensity."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--program", type=Path, metavar="FILE", help="a dosing program (TOML or JSON)")
    source.add_argument("--preset", metavar="NAME", choices=PRESET_NAMES,
                        help="a preset for a target mechanism: " + ", ".join(PRESET_NAMES))
    parser.add_argument("--thresholds", type=Path, metavar="FILE",
                        help="thresholds measured by `estim titrate --out FILE`, for threshold-relative "
                             "programs and presets")


def program_from_args(args: argparse.Namespace) -> Any:
    """The resolved Program named by --program, or --preset for --channel/--sites/--needle,
    --sensitivity and --minutes; raises ProgramError, ThresholdsError, Refusal or ValueError."""
    from ..waveforms import preset_program
    from ..waveforms.program import Needle as NeedleSpec
    from ..waveforms.program import Program, Site

    if args.program is not None:
        program = Program.load(args.program)
    else:
        placement, needle = parse_sites(args.sites), parse_needle(args.needle)
        spec = NeedleSpec(diameter_mm=needle.diameter_mm, length_mm=needle.length_mm,
                          site_a=Site(region=placement.a.region, side=placement.a.side),
                          site_b=Site(region=placement.b.region, side=placement.b.side))
        program = preset_program(args.preset, {args.channel: spec}, SENSITIVITY[args.sensitivity], args.minutes)
    if program.needed_thresholds:
        program = program.resolve(load_thresholds(args.thresholds, program))
    return program
