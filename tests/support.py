"""Test helpers: session set-ups. The simulator as its own process is
`firmware_host.sim.process`; the unguarded request path for tests that play a faulty host
is `hil_tests.harness` (`unguarded`, `ask`, `wave`)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from firmware_host import icd
from firmware_host.drivers.base import Transport
from safety import ChannelPlacement, Envelope, NeedleSite, Prescription, Region, Side

REPO = Path(__file__).resolve().parents[1]
OUTPUT_CHANGING = frozenset({icd.MsgType.SET_CHANNEL, icd.MsgType.OUTPUT, icd.MsgType.CLEAR_FAULT,
                             icd.MsgType.SIM_CONTROL})
BENCH = Envelope.test_load("test suite: a simulated device behind a real byte path")
"""What the tests declare on any device but the built-in `sim://`: nobody is connected."""
DECLARED = ("--research-protocol", "test-suite", "--subject", "P001")
"""What `estim` is told is connected on any device but `sim://`: a participant whose thresholds
files name P001 (`write_thresholds`), screened under a (test) protocol."""

DIRECT_SESSION = ["--channel", "1", "--frequency", "20", "--pulse-width", "200", "--amplitude", "1",
                  "--sites", "left:forearm,left:forearm", "--inserted", "10"]
"""A short direct session on channel 1 at 1 mA, for tests about reaching a device."""


def estim_on(url: str, command: str = "run", *args: str) -> list[str]:
    """argv of `estim COMMAND --device URL ARGS`: the one place the tests of device paths (ptys
    by any name, RFC 2217, lab places) say which device is connected, and who: a test load."""
    declared = ("--test-load", "test rig") if command in ("run", "titrate", "console") else ()
    return [sys.executable, "-m", "firmware_host", command, "--device", url, *declared, *args]


def forearm_sites(*channels: int) -> dict[int, ChannelPlacement]:
    site = NeedleSite(Region.FOREARM, Side.LEFT)
    return {ch: ChannelPlacement(site, site) for ch in channels}


def prescription(max_ma: float = 5.0, ramp: float = 2.0) -> Prescription:
    return Prescription(max_amplitude_ma=max_ma, ramp_ma_per_s=ramp, frequency_hz=(1, 200),
                        pulse_width_us=(50, 600), sensitivity="hyposensitive")


def measured(program, values=None, patient: str = "P001", when=None) -> list:  # noqa: ANN001 - Program
    """Thresholds as `estim titrate` keeps them on every channel and waveform of `program`
    (`hil_tests.harness.thresholds_on`, which the HIL suite uses too)."""
    from hil_tests.harness import thresholds_on

    return thresholds_on(program, values or {"sensory": 1.0, "motor": 2.0, "tolerance": 4.0}, patient, when)


def envelope_for(program, values=None, patient: str = "P001"):  # noqa: ANN001 - Program
    """An envelope (nobody declared: the simulator) holding `measured(program, values)`."""
    from safety import Envelope

    return Envelope.undeclared(thresholds=measured(program, values, patient), who=patient)


def write_thresholds(path: Path, program, sensory: float = 1.0, motor: float = 2.0,  # noqa: ANN001 - Program
                     tolerance: float = 4.0, patient: str = "P001") -> Path:
    """A thresholds file as `estim titrate --out` writes it, measured now on every threshold-
    relative channel of `program`, on its sites and each of its waveforms."""
    from safety.thresholds import save

    save(path, measured(program, {"sensory": sensory, "motor": motor, "tolerance": tolerance}, patient))
    return path


class SpyTransport(Transport):
    """Records every frame written, with the time it was written."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.frames: list[tuple[float, icd.Message]] = []
        self._decoder = icd.FrameDecoder()

    def write(self, data: bytes) -> None:
        now = time.monotonic()
        self.frames += [(now, raw.message()) for raw in self._decoder.feed(data)]
        self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        return self.inner.read(timeout)

    def discard_input(self) -> None:
        self.inner.discard_input()

    def _close(self) -> None:
        self.inner.close()

    def output_changing(self) -> int:
        return sum(1 for _, m in self.frames if m.TYPE in OUTPUT_CHANGING)


def stimulating(estim_run: subprocess.Popen[str]) -> None:
    """Returns once a running `estim run` reports channel 1 on (its progress lines on stdout)."""
    assert estim_run.stdout is not None
    for line in estim_run.stdout:
        if line.startswith("ch1 on"):
            return
    raise AssertionError(f"estim never stimulated: exit {estim_run.wait()}: "
                         f"{estim_run.stderr.read() if estim_run.stderr else ''}")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition until it holds (bounded): no fixed sleeps in the tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def peak_ua(record: Path) -> int:
    """The highest current the device has reported so far in a treatment record, in µA."""
    from safety import read_readings

    if not record.exists():
        return 0
    return max((r["amplitude_ua"] for r in read_readings(record)), default=0)


def titrate_with_keys(argv: Sequence[str], record: Path, keys: Sequence[tuple[str, int]],
                      cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `estim titrate` (argv without --record), pressing each key once the current it shows
    reaches its level in µA, as a clinician presses it when the patient reports it (what the
    command prints, at once; the record's readings reach the disk up to a second later)."""
    from firmware_host.sim.process import child_env

    proc = subprocess.Popen([*argv, "--record", str(record)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    said: list[str] = []
    shown_ua = [0]

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            said.append(line)
            shown = re.fullmatch(r"\s*([\d.]+) mA\s*", line.rstrip("\n"))
            if shown:
                shown_ua[0] = round(float(shown.group(1)) * 1000)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for key, level in keys:
        wait_for(lambda: shown_ua[0] >= level or proc.poll() is not None, timeout=30)
        if proc.poll() is None:
            proc.stdin.write(key + "\n")
            proc.stdin.flush()
    proc.wait(timeout=30)   # the input stays open until the end: its end would be an e-stop
    reader.join(timeout=5)
    out = proc.stdout.read()
    proc.stdin.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(said))


class Terminal:
    """`estim ARGS` in a child process on a pseudo-terminal, as a clinician's terminal runs it:
    the terminal is its stdin, stdout, stderr and controlling terminal (so Ctrl-C there is a
    SIGINT), with a window size for the full-screen console. What it writes is collected as it
    comes; `text` is that output without its escape sequences, `raw` as written (bells and all)."""

    ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>NOPMc78])")

    def __init__(self, *args: str, cwd: Path | None = None, rows: int = 50, cols: int = 160) -> None:
        from firmware_host.sim.process import child_env

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**child_env(), "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware_host", *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, env=env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal (EIO)
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def raw(self) -> str:
        with self._lock:
            return self._raw.decode(errors="replace")

    @property
    def text(self) -> str:
        return self.ANSI.sub("", self.raw)

    def expect(self, *phrases: str, timeout: float = 30.0) -> str:
        """Wait until every phrase has been written (escape sequences aside); the text so far."""
        try:
            wait_for(lambda: all(p in self.text for p in phrases) or self.proc.poll() is not None, timeout)
        except AssertionError:
            pass  # said below, with what the terminal showed
        missing = [p for p in phrases if p not in self.text]
        assert not missing, f"never said {missing}; said:\n{self.text[-3000:]}"
        return self.text

    def press(self, *keys: str, gap: float = 0.05) -> None:
        for key in keys:
            os.write(self.master, key.encode())
            time.sleep(gap)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


UP, DOWN, ESC, CTRL_C, ENTER = "\x1b[A", "\x1b[B", "\x1b", "\x03", "\r"
"""Keys as a terminal sends them."""
