"""`estim`: thin subcommands that parse, call the API, print and pick an exit code.

Imports are lazy (each subcommand imports its module only when chosen) so that
`estim --help` answers at once on a clinic laptop.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections.abc import Callable
from types import FrameType

from .. import INTENDED_USE

class Parser(argparse.ArgumentParser):
    """Every `estim` parser: an abbreviated flag is refused, not guessed (`--amp` is not
    `--amplitude`), and so is a flag given twice that takes one value (the last would win
    silently). Subcommand parsers are made of the same class."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]  # noqa: ANN001
        argv = list(sys.argv[1:] if args is None else args)
        seen: dict[str, list[str]] = {}
        for arg in argv[:argv.index("--")] if "--" in argv else argv:
            action = self._option_string_actions.get(arg.split("=", 1)[0])
            if action is not None and not isinstance(action, _REPEATABLE):
                seen.setdefault(action.dest, []).append(arg.split("=", 1)[0])
        for flags in seen.values():
            if len(flags) > 1:
                self.error(f"{flags[0]} is given {len(flags)} times: give it once (a second one would silently "
                           "replace the first)")
        return super().parse_known_args(argv, namespace)


_REPEATABLE = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction,  # noqa: SLF001
               argparse._HelpAction, argparse._VersionAction)  # noqa: SLF001 - argparse names no public base

# The exit codes of every `estim` command (README, "Exit codes", is the same table).
EXIT_OK = 0                 # done as asked (a session: ramped down, every output off)
EXIT_REFUSED = 2            # refused or bad input: nothing was sent to the device
EXIT_DEVICE_FAULT = 3       # a device fault, a lost link or an operator's STOP ended the session
EXIT_NO_DEVICE = 4          # the device was not found, did not answer, or another program is using it
EXIT_RECORD_NOT_CLOSED = 5  # record verify: intact, but the session did not close it
EXIT_RECORD_ALTERED = 6     # record verify: altered, cut or not a record
EXIT_RECORD_UNCHECKABLE = 7 # record verify: cannot check (no key, or no anchor in the visit store)
EXIT_INTERRUPTED = 130      # stopped by Ctrl-C (e-stop)
EXIT_TERMINATED = 143       # stopped by SIGTERM (e-stop)

# name -> (module under firmware_host.cli, one-line help)
COMMANDS = {
    "run": ("run", "run a stimulation session (default: the built-in simulated device)"),
    "sim": ("sim", "serve the simulated device on a pseudo-terminal or TCP port"),
    "devices": ("devices", "list serial ports and USB devices that look like stimulators, and sim://"),
    "titrate": ("titrate", "find a channel's sensory, motor and tolerance thresholds with the patient"),
    "console": ("console", "full-screen treatment-room console: live channels, intensity keys, STOP"),
    "check": ("check", "check a dosing program against every safety rule before a session (exit 0 / 2)"),
    "preview": ("preview", "draw a program (intensity and frequency over time, each pulse shape) to a PNG"),
    "record": ("record", "verify a treatment record, summarise a session, write its PDF report or FHIR export"),
    "keys": ("keys", "create and list the keys that sign treatment records"),
    "presets": ("presets", "list the presets by target mechanism, or show one with its evidence and sources"),
    "patient": ("patient", "add a patient by code, show their last visits, plot their outcomes over visits"),
    "visit": ("visit", "a visit: start it with the screening, record the outcomes, end it with the plan"),
    "clear-faults": ("clear_faults", "show what the device has latched and why, and clear it with your name"),
}

EPILOG = """a visit (the needles are typed once, at the titration):
  estim patient add P001
  estim visit start P001 --no all
  estim titrate --patient P001 --preset segmental_inhibition --pair 1 left:forearm,left:hand 10
  estim run --patient P001
  estim visit outcome P001 --pain-before 6 --pain-after 4 --felt "strong buzzing"
  estim visit end P001 --plan loading --text "step-downs 3x10"

keys in every session on a terminal: space or Esc STOP, down or - lower, up or + raise, p pause, q end

examples:
  estim run --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 --seconds 20 --sites left:forearm,left:forearm --inserted 10
  estim sim --listen pty
  estim sim --listen tcp:127.0.0.1:0 --set channels=2
  estim devices
  estim titrate --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm --inserted 10 --out th.json
  estim console --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm --inserted 10
  estim check low_rate_2hz --thresholds th.json
  estim clear-faults --device /dev/ttyUSB0 --operator "J. Doe"
  estim record verify session.jsonl
  estim record show session.jsonl --plot session.png
  estim record report session.jsonl --out visit.pdf
  estim keys init --label "Room 2"

exit codes: 0 done; 2 refused or bad input (nothing sent); 3 a device fault, lost link or STOP
ended the session; 4 device not found, not answering or in use; 5-7 record verify (not closed, altered,
cannot check); 130 Ctrl-C; 143 SIGTERM.
""" + INTENDED_USE


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim",
        description="Host controller for a needle e-stim (electroacupuncture) stimulator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


class _SurvivingStream:
    """stdout/stderr that outlive their reader: `estim run ... | head` closes the pipe, and a
    session must not stop because nobody reads its progress (writes go nowhere from then on)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream
        self._lost = False

    def write(self, text: str) -> int:
        if not self._lost:
            try:
                return self._stream.write(text)  # type: ignore[attr-defined]
            except (BrokenPipeError, OSError, ValueError):
                self._lost = True
        return len(text)

    def flush(self) -> None:
        if not self._lost:
            try:
                self._stream.flush()  # type: ignore[attr-defined]
            except (BrokenPipeError, OSError, ValueError):
                self._lost = True

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


_JSON_ASKED = False  # `--json` on the command line: refusals are JSON on stdout too, in every command


def main(argv: list[str] | None = None) -> int:
    global _JSON_ASKED
    argv = list(sys.argv[1:] if argv is None else argv)
    _JSON_ASKED = "--json" in argv
    if not isinstance(sys.stdout, _SurvivingStream):
        sys.stdout = _SurvivingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _SurvivingStream):
        sys.stderr = _SurvivingStream(sys.stderr)  # type: ignore[assignment]
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_REFUSED
    garbled = next((arg for arg in argv if not _utf8(arg)), None)
    if garbled is not None:  # bytes the terminal sent that are not text: never half-written into a record
        shown = garbled.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return refused(ValueError(f"{shown!r} on the command line is not UTF-8 text: type it again (check the "
                                  "terminal's character encoding)"))
    if argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help (exit 0) or the usage error (exit 2)
        return EXIT_REFUSED
    _diagnostics_to_file()
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][0]}")
    return int(module.main(argv[1:]))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _diagnostics_to_file() -> None:
    """The library's diagnostics (a lost link's details, a failed BYE, a stack trace) are for
    engineers: they go to estim.log in the user's state directory, never between the lines a
    clinician reads. Every command says in plain words what happened."""
    import logging
    import os
    from pathlib import Path

    root = logging.getLogger()
    if any(getattr(handler, "estim_cli", False) for handler in root.handlers):
        return
    logging.raiseExceptions = False  # a full disk must not print a logging traceback either
    folder = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "estim"
    handler: logging.Handler
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(folder / "estim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # its user's only
        handler = logging.FileHandler(folder / "estim.log", encoding="utf-8", delay=True)
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s pid %(process)d %(name)s %(levelname)s: %(message)s"))
    handler.estim_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the same e-stop path as Ctrl-C runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def refused(exc: Exception) -> int:
    """A safety refusal or bad input in plain words (with --json, also as JSON on stdout), and exit 2."""
    print(f"refused: {plain(exc)}\nnothing was sent to the device.", file=sys.stderr)
    if _JSON_ASKED:
        print(json.dumps({"outcome": "refused", "message": plain(exc), "rule": getattr(exc, "rule", None),
                          "value": _jsonable(getattr(exc, "value", None)),
                          "limit": _jsonable(getattr(exc, "limit", None)), "sent": False}))
    return EXIT_REFUSED


def unreachable(exc: Exception) -> int:
    """The device could not be reached (not found, in use, no answer): say so, and exit 4."""
    print(f"error: {exc}", file=sys.stderr)
    if _JSON_ASKED:
        print(json.dumps({"outcome": "device not reachable", "message": str(exc), "sent": False}))
    return EXIT_NO_DEVICE


def _jsonable(value: object) -> object:
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


_FIELDS = {  # prescription fields as a person meets them on the command line
    "ramp_ma_per_s": "the ramp rate (--ramp, mA/s)",
    "max_amplitude_ma": "the intensity cap (--max-amplitude, mA)",
    "max_session_minutes": "the session length (minutes)",
    "frequency_hz": "the frequency (Hz)",
    "pulse_width_us": "the phase width (µs)",
}
_BOUNDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "below"),
           "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "above")}


def plain(exc: BaseException) -> str:
    """An error as a person reads it: a validation error becomes one short clause per field
    (what, the value given, the limit), with no library names or links."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return str(exc)
    parts = []
    for error in errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("function-after", "function-before"))
        where = _FIELDS.get(where, where)
        bound = _BOUNDS.get(error.get("type", ""))
        if bound and bound[0] in error.get("ctx", {}):
            what = f"must be {bound[1]} {error['ctx'][bound[0]]}"
        else:
            what = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if isinstance(given, (dict, list)) or given is None else f" (given: {given!r})"
        parts.append(f"{where or 'value'} {what}{shown}".strip())
    return "; ".join(parts)


def stoppable(body: Callable[[], int], device: str | None = None) -> int:
    """Run a command that may drive a device: Ctrl-C and SIGTERM unwind through its session
    (which e-stops on the way out) and end with exit 130 / 143, the bell, and what the stop
    leaves behind on `device`: a latched stop, and how to clear it."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    # a program started in the background inherits SIGINT ignored; a session must stop on it anyway
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return body()
    except KeyboardInterrupt:
        said_stopped("Ctrl-C", device)
        return EXIT_INTERRUPTED
    except Terminated:
        said_stopped("SIGTERM", device)
        return EXIT_TERMINATED


def said_stopped(what: str, device: str | None) -> None:
    """An e-stop by Ctrl-C or SIGTERM, with the bell, and what it leaves latched on `device`."""
    from .terminal import bell

    bell(f"\nstopped: {what} — output off (e-stop)")
    if device is None:
        return
    if device.startswith("sim://"):
        print("the built-in simulated device starts afresh with the next command: nothing stays latched",
              file=sys.stderr)
        return
    from ..fault_text import clear_hint

    print(f"a stop is now latched on the device, so the next session will not start until it is cleared: check the "
          f"patient and the needles, then clear it with your name: {clear_hint(device, 2)}", file=sys.stderr)
