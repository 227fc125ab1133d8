"""A fault-injecting wrapper around any transport, on the host side of the link.

It works frame by frame (frames end at 0x00) in both directions, so it sits in front of
real hardware as well as the simulator: drop, corrupt, duplicate or delay frames at set
rates (seeded, reproducible), or exactly the frames named by index for scripted tests.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from .base import Transport


@dataclass
class FaultPlan:
    """What to do to frames in one direction. Rates are probabilities per frame."""

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay_s: float = 0.0
    drop_frames: frozenset[int] = frozenset()  # 0-based frame indices, for scripted tests
    corrupt_frames: frozenset[int] = frozenset()
    blackout: bool = False  # total loss: nothing passes


@dataclass
class FaultCounts:
    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0


@dataclass
class _Direction:
    plan: FaultPlan
    rng: random.Random
    counts: FaultCounts = field(default_factory=FaultCounts)
    partial: bytearray = field(default_factory=bytearray)

    def apply(self, data: bytes) -> bytes:
        """Whole frames out of `data`, each passed, dropped, damaged or doubled."""
        self.partial += data
        out = bytearray()
        while (end := self.partial.find(b"\0")) >= 0:
            frame = bytes(self.partial[: end + 1])
            del self.partial[: end + 1]
            out += self._one(frame)
        return bytes(out)

    def _one(self, frame: bytes) -> bytes:
        index = self.counts.frames
        self.counts.frames += 1
        plan, rng = self.plan, self.rng
        if plan.blackout or index in plan.drop_frames or rng.random() < plan.drop:
            self.counts.dropped += 1
            return b""
        if (index in plan.corrupt_frames or rng.random() < plan.corrupt) and len(frame) > 1:
            damaged = bytearray(frame)
            at = rng.randrange(len(frame) - 1)  # never the delimiter: the stream must resynchronise
            damaged[at] ^= 1 << rng.randrange(8)
            frame = bytes(damaged)
            self.counts.corrupted += 1
        if rng.random() < plan.duplicate:
            self.counts.duplicated += 1
            frame += frame
        if plan.delay_s:
            time.sleep(plan.delay_s)
        return frame


class FaultyTransport(Transport):
    """Wraps `inner`; `to_device` acts on writes, `from_device` on reads."""

    def __init__(self, inner: Transport, to_device: FaultPlan | None = None,
                 from_device: FaultPlan | None = None, seed: int = 0) -> None:
        super().__init__(f"faulty+{inner.url}")
        self.inner = inner
        self.simulated = inner.simulated
        self._tx = _Direction(to_device or FaultPlan(), random.Random(seed))
        self._rx = _Direction(from_device or FaultPlan(), random.Random(seed + 1))
        self._tx_lock = threading.Lock()

    @property
    def to_device(self) -> FaultCounts:
        return self._tx.counts

    @property
    def from_device(self) -> FaultCounts:
        return self._rx.counts

    def set_blackout(self, on: bool) -> None:
        """Total loss in both directions (the device's watchdog must take over)."""
        self._tx.plan.blackout = self._rx.plan.blackout = on

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            passed = self._rx.apply(self.inner.read(max(deadline - time.monotonic(), 0.0)))
            if passed or time.monotonic() >= deadline:
                return passed

    def write(self, data: bytes) -> None:
        with self._tx_lock:
            passed = self._tx.apply(data)
        if passed:
            self.inner.write(passed)

    def discard_input(self) -> None:
        self.inner.discard_input()
        self._rx.partial.clear()

    def _close(self) -> None:
        self.inner.close()
