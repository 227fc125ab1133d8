"""The simulator as its own process (`firmware_host.sim.process`) for benchmarks, on a pty,
TCP loopback or behind ser2net as RFC 2217 (as labgrid's exporter publishes a port), and raw
link helpers.

Benchmarks that measure the link itself send raw frames through `hil_tests.harness`
(`unguarded`, `ask`, `wave`), skipping the interlock as tests that play a faulty host do:
the figures are about bytes and clocks, not about which settings a prescription allows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware_host import icd
from firmware_host.drivers import open_transport
from firmware_host.errors import DeviceRefused, LinkError
from firmware_host.link import Link
from firmware_host.sim.process import Trace, spawn_sim
from hil_tests.harness import ask, unguarded, wave
from hil_tests.ser2net import Ser2net

LISTEN = {"pty": "pty", "tcp": "tcp:127.0.0.1:0", "rfc2217": "pty", "rfc2217_tuned": "pty"}
TRANSPORTS = ("pty", "tcp")
RFC2217 = ("rfc2217", "rfc2217_tuned")  # ser2net as labgrid runs it, and as hil_tests/README.md asks


@dataclass(frozen=True)
class Device:
    """Where the host connects, and the device's trace (CLOCK_MONOTONIC stamps)."""

    url: str
    trace: Trace


@contextmanager
def simulator(transport: str, workdir: Path, *settings: str) -> Iterator[Device]:
    """`estim sim` on a pty, TCP loopback, or a pty behind ser2net (`rfc2217`, `rfc2217_tuned`),
    with a trace in `workdir` (and `--set` settings); stopped (SIGTERM) on exit."""
    trace_path = workdir / f"trace-{transport}-{time.monotonic_ns()}.jsonl"
    with spawn_sim(LISTEN[transport], trace_path=trace_path, settings=settings) as sim:
        if transport not in RFC2217:
            yield Device(sim.url, sim.trace)
            return
        with Ser2net(sim.url, tuned=transport == "rfc2217_tuned") as ser2net:
            yield Device(ser2net.url, sim.trace)


@contextmanager
def opened_link(url: str, window: int = icd.RETRANSMIT_WINDOW) -> Iterator[Link]:
    """A handshaken Link, closed on exit."""
    link = Link(open_transport(url), window=window)
    link.open()
    try:
        yield link
    finally:
        link.close()


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
                    pending.append(unguarded(self._link, wave(self._channel, frequency)))
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
