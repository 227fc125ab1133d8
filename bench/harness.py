"""The simulator as its own process, its event trace, and raw link helpers.

Benchmarks that measure the link itself send raw frames with `send_raw`, skipping the
interlock (as tests that play a faulty host do): the figures are about bytes and clocks,
not about which settings a prescription allows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware_host import icd
from firmware_host.drivers import open_transport
from firmware_host.errors import DeviceRefused, LinkError
from firmware_host.link import Link

REPO = Path(__file__).resolve().parents[1]
LISTEN = {"pty": "pty", "tcp": "tcp:127.0.0.1:0"}
TRANSPORTS = tuple(LISTEN)


def subprocess_env() -> dict[str, str]:
    """The environment for child Pythons: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Trace:
    """Tails the simulator's JSONL trace; events are consumed in order as they match."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, encoding="utf-8")  # closed by close()
        self._partial = ""
        self._events: deque[dict] = deque()

    def wait(self, predicate: Callable[[dict], bool], timeout: float = 2.0) -> dict:
        """The first unconsumed event matching `predicate`; earlier events are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            while self._events:
                event = self._events.popleft()
                if predicate(event):
                    return event
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching device event within {timeout} s")
            time.sleep(0.0002)

    def output_off(self, reason: str, after: float, timeout: float = 2.0) -> float:
        """Device clock (time.monotonic) of the next output_off for `reason` at or after `after`."""
        event = self.wait(
            lambda e: e["kind"] == "output_off" and e["reason"] == reason and e["device_now"] >= after, timeout
        )
        return float(event["device_now"])

    def _read(self) -> None:
        text = self._partial + self._file.read()
        lines = text.split("\n")
        self._partial = lines.pop()
        self._events.extend(json.loads(line) for line in lines if line)

    def close(self) -> None:
        self._file.close()


@dataclass
class Simulator:
    url: str
    proc: subprocess.Popen[str]
    trace: Trace


@contextmanager
def simulator(transport: str, workdir: Path, *settings: str) -> Iterator[Simulator]:
    """`estim sim` on a pty or TCP loopback with a trace (and `--set` settings), stopped
    (SIGTERM) on exit."""
    trace_path = workdir / f"trace-{transport}-{time.monotonic_ns()}.jsonl"
    args = [sys.executable, "-m", "firmware_host", "sim", "--listen", LISTEN[transport], "--trace", str(trace_path)]
    for item in settings:
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"simulator printed nothing: {proc.stderr.read()}")
        trace = Trace(trace_path)
        try:
            yield Simulator(url, proc, trace)
        finally:
            trace.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def opened_link(url: str, window: int = icd.RETRANSMIT_WINDOW) -> Iterator[Link]:
    """A handshaken Link, closed on exit."""
    link = Link(open_transport(url), window=window)
    link.open()
    try:
        yield link
    finally:
        link.close()


def send_raw(link: Link, message: icd.Message) -> Future[icd.Message]:
    """Queue `message` without an interlock approval (benchmarks of the link only)."""
    return link._enqueue(message)  # noqa: SLF001


def ask(link: Link, message: icd.Message) -> icd.Message:
    """Send raw and wait for the reply (raises on NAK or timeout)."""
    return link.wait(send_raw(link, message), type(message).__name__)


def wave(channel: int, frequency_mhz: int = 100_000, amplitude_ua: int = 0) -> icd.SetChannel:
    """A biphasic SET_CHANNEL, 200 µs phase."""
    return icd.SetChannel(channel, icd.Shape.BIPHASIC, 1, 0, frequency_mhz, 0, 200, 0, amplitude_ua)


def arm(link: Link, channel: int = 0) -> None:
    """Leave `channel` enabled at 0 µA: CLEAR_FAULT, SET_CHANNEL, OUTPUT."""
    ask(link, icd.ClearFault())
    ask(link, wave(channel))
    ask(link, icd.Output(1 << channel))


class Streamer:
    """A thread streaming SET_CHANNEL updates to one channel as fast as the window allows.

    It keeps `depth` commands queued or in flight, so the window is always full; commands
    an e-stop cancels or the device refuses count as not completed.
    """

    def __init__(self, link: Link, channel: int, depth: int = 2 * icd.RETRANSMIT_WINDOW) -> None:
        self.completed = 0
        self._link = link
        self._channel = channel
        self._depth = depth
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-streamer", daemon=True)

    def __enter__(self) -> Streamer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._error is not None:
            raise RuntimeError("the streaming thread failed") from self._error

    def _run(self) -> None:
        pending: deque[Future[icd.Message]] = deque()
        frequency = 100_000
        try:
            while not self._stop.is_set() or pending:
                if not self._stop.is_set():
                    frequency = 300_000 - frequency  # alternate 100 Hz / 200 Hz: a real change
                    pending.append(send_raw(self._link, wave(self._channel, frequency)))
                if len(pending) >= self._depth or self._stop.is_set():
                    self._settle(pending.popleft())
        except BaseException as exc:  # re-raised on the caller's thread by __exit__
            self._error = exc

    def _settle(self, future: Future[icd.Message]) -> None:
        try:
            future.result(timeout=2.0)
            self.completed += 1
        except (LinkError, DeviceRefused):
            pass  # cancelled by an e-stop
