"""Today's channel set-up, typed once per visit: each channel's needle sites, needle and depth,
and the preset or program. The first command of the visit that names them (usually the
titration) keeps them; titrate, check, run, console and preview with `--patient` take them from
there, and say what they reuse. Named again, a channel's set-up is replaced (needles moved).

It is kept on this computer, where the needles are (one JSON file per visit in
`$XDG_DATA_HOME/estim/visit-setups/`, written whole: a temporary file renamed over the last),
bound to the visit by its store, id and start time, so another visit never picks it up."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from safety.thresholds import write_whole

from .pairs import Pair, given_pairs, picked


@dataclass(frozen=True)
class SetUp:
    pairs: dict[int, Pair] = field(default_factory=dict)
    preset: str | None = None
    program: str | None = None

    def describe(self) -> str:
        source = f"preset {self.preset}" if self.preset else f"program {self.program}" if self.program else ""
        return "; ".join([*([source] if source else []), *(p.describe() for p in self.pairs.values())])


def folder() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "estim" / "visit-setups"


def _path(visit: Any) -> Path:
    return folder() / f"{quote(visit.patient, safe='')}-visit-{visit.id}.json"


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    visit = args.visit
    return {"patient": visit.patient, "visit": visit.id, "started_at": visit.started_at.isoformat(),
            "store": getattr(args, "store", None) or os.environ.get("ESTIM_STORE_URL") or "default"}


def load(args: argparse.Namespace) -> SetUp:
    """The set-up kept for today's visit (empty without --patient, or when none was kept)."""
    if getattr(args, "visit", None) is None:
        return SetUp()
    try:
        data = json.loads(_path(args.visit).read_text())
    except (OSError, ValueError):
        return SetUp()
    if data.get("visit_of") != _identity(args):
        return SetUp()  # another store's visit with the same number
    pairs = {int(ch): Pair(int(ch), p["sites"], p["inserted_mm"], p["needle"]) for ch, p in data["pairs"].items()}
    return SetUp(pairs, data.get("preset"), data.get("program"))


def pairs_for(args: argparse.Namespace) -> dict[int, Pair]:
    """The needle pairs of this command: those typed, else today's set-up (said on stderr), then
    narrowed to --channel when it is given alone. Raises Refusal."""
    typed = given_pairs(args)
    if typed:
        return picked(args, typed)
    kept = load(args).pairs
    chosen = picked(args, kept)
    if chosen:
        print("from today's set-up: " + "; ".join(p.describe() for p in chosen.values()), file=sys.stderr)
    return chosen


def fill_source(args: argparse.Namespace) -> None:
    """No --preset or --program named, and nothing else that sets the waveform: today's set-up's."""
    if any(getattr(args, name, None) is not None for name in ("preset", "program", "frequency", "pulse_width")):
        return
    kept = load(args)
    if kept.preset:
        args.preset = kept.preset
        print(f"from today's set-up: preset {kept.preset}", file=sys.stderr)
    elif kept.program:
        args.program = Path(kept.program)
        print(f"from today's set-up: program {kept.program}", file=sys.stderr)


def program_and_pairs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """For check and preview: the preset or program (typed, else today's set-up's) and, for a
    preset, its needle pairs (typed, else today's set-up's) into `args.pairs`; a usage error when
    nothing names them. Raises Refusal for pairs that do not add up."""
    fill_source(args)
    if args.program is None and args.preset is None:
        parser.error("give a program FILE or --preset NAME (with --patient: or titrate first, which keeps them)")
    args.pairs = pairs_for(args) if args.program is None else {}
    if args.preset is not None and not args.pairs:
        parser.error("--preset needs the needles: --pair CH SITES MM (or --sites SIDE:REGION,SIDE:REGION "
                     "--inserted MM)")


def keep(args: argparse.Namespace, pairs: dict[int, Pair]) -> None:
    """Today's set-up updated with these pairs and the preset or program of this command (a
    file that cannot be written is said, and the command goes on: it is a convenience)."""
    if getattr(args, "visit", None) is None:
        return
    kept = load(args)
    preset, program = getattr(args, "preset", None), getattr(args, "program", None)
    if preset or program:
        kept = SetUp(kept.pairs, preset, str(Path(program).resolve()) if program and Path(program).exists()
                     else (str(program) if program else None))
    merged = {**kept.pairs, **pairs}
    data = {"visit_of": _identity(args), "preset": kept.preset, "program": kept.program,
            "pairs": {str(ch): p.as_dict() for ch, p in sorted(merged.items())}}
    try:
        write_whole(_path(args.visit), json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        print(f"notice: today's set-up could not be kept ({exc.strerror or exc}); type it again next time",
              file=sys.stderr)
