"""The simulated device as its own process, and its event trace.

Tests, the HIL suite and the benchmarks all need the device on its own process and clock
(`python -m firmware_host sim --listen ... --trace ...`), so that a host can be paused,
killed or raced against it the way a real stimulator would be. This is the one way to
start it and to read what it did. Standard library only: importing it must stay cheap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

CHECKOUT = Path(__file__).resolve().parents[2]
"""The directory holding the `firmware_host` package (the repository root of a checkout)."""


def child_env() -> dict[str, str]:
    """The environment for child Pythons: this checkout first on PYTHONPATH, so the child
    runs the same code as its parent whatever its cwd or the installed package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH")]))
    return env


def output_off(reason: str) -> Predicate:
    """Matches the trace event of the device switching its outputs off for `reason`."""
    return lambda e: e["kind"] == "output_off" and e.get("reason") == reason


class Trace:
    """The simulator's JSONL event trace, read incrementally as the device appends to it.

    Events are stamped with CLOCK_MONOTONIC (`t`, `device_now`), which every process on the
    machine shares, so host and device instants compare directly. Two ways to wait:
    `wait_event` scans every event since `mark()` without using any up (tests asking "did
    this happen?"); `wait` consumes events in order (benchmarks timing a sequence of stops,
    where each event must count once).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._partial = b""
        self._events: list[Event] = []
        self._mark = 0  # wait_event / events_after look at events from here
        self._cursor = 0  # wait consumes events from here

    def events(self) -> list[Event]:
        """Every event the device has written so far (complete lines only)."""
        self._read()
        return list(self._events)

    def mark(self) -> None:
        """Only events after this call count (for every way of waiting)."""
        self._read()
        self._mark = self._cursor = len(self._events)

    def events_after(self, t: float) -> list[Event]:
        """Events since the mark stamped at or after `t`."""
        self._read()
        return [e for e in self._events[self._mark:] if e["t"] >= t]

    def wait_event(self, predicate: Predicate, timeout: float = 5.0, poll: float = 0.01) -> Event:
        """The first event since the mark matching `predicate`; nothing is consumed.
        Raises AssertionError (with the last events seen) after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            for event in self._events[self._mark:]:
                if predicate(event):
                    return event
            if time.monotonic() >= deadline:
                raise AssertionError(f"no matching device event within {timeout} s; saw {self._events[-5:]}")
            time.sleep(poll)

    def wait(self, predicate: Predicate, timeout: float = 2.0) -> Event:
        """The first unconsumed event matching `predicate`; it and every earlier event are
        consumed. Raises TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            while self._cursor < len(self._events):
                event = self._events[self._cursor]
                self._cursor += 1
                if predicate(event):
                    return event
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching device event within {timeout} s")
            time.sleep(0.0002)

    def output_off(self, reason: str, after: float, timeout: float = 2.0) -> float:
        """Device clock (time.monotonic) of the next unconsumed output_off for `reason` at or
        after `after`."""
        is_off = output_off(reason)
        event = self.wait(lambda e: is_off(e) and e["device_now"] >= after, timeout)
        return float(event["device_now"])

    def _read(self) -> None:
        if self._file is None:
            if not self.path.exists():
                return
            self._file = open(self.path, "rb")  # closed by close()
        lines = (self._partial + self._file.read()).split(b"\n")
        self._partial = lines.pop()  # a line the device is still writing
        self._events.extend(json.loads(line) for line in lines if line.strip())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SimProcess:
    """A running `python -m firmware_host sim`: its URL, process and trace.

    A context manager (stopped on exit). `pause`/`resume` freeze the device (SIGSTOP /
    SIGCONT) as a hung firmware would; `stop` ends it like a power-off request.
    """

    def __init__(self, url: str, proc: subprocess.Popen[str], trace_path: Path) -> None:
        self.url = url
        self.proc = proc
        self.trace_path = Path(trace_path)
        self.trace = Trace(self.trace_path)

    def events(self) -> list[Event]:
        """Every trace event read so far."""
        return self.trace.events()

    def wait_event(self, predicate: Predicate, timeout: float = 5.0) -> Event:
        """The first trace event (since the trace's mark) matching `predicate`; see `Trace.wait_event`."""
        return self.trace.wait_event(predicate, timeout)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be paused), SIGKILL if still alive after 5 s."""
        try:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            self.trace.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_sim(listen: str = "pty", *, trace_path: Path, settings: Iterable[str] = ()) -> SimProcess:
    """Start the simulator listening on `listen` ("pty", "tcp:127.0.0.1:0", ...) with its
    trace at `trace_path` and `--set` `settings` ("watchdog_ms=500", ...); returns once it
    printed the URL to connect to."""
    args = [sys.executable, "-m", "firmware_host", "sim", "--listen", listen, "--trace", str(trace_path)]
    for item in settings:
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdout is not None and proc.stderr is not None
    url = proc.stdout.readline().strip()
    if not url:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the simulator printed nothing: {proc.stderr.read()}")
    return SimProcess(url, proc, Path(trace_path))
