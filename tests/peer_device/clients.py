"""Raw host-side drivers for this package's tests: one on a simulated clock, one over the wire.

Both speak only ICD framing (no host code): `send` frames a command with the next seq,
`request` waits for the reply carrying that seq, and `inbox` keeps every packet received.
"""

from __future__ import annotations

import os
import select
import socket
import time
import tty
from collections.abc import Callable
from typing import Any

from .device import Device
from .framing import Deframer, Packet, encode_frame
from .options import DeviceOptions
from .protocol import SET_CHANNEL, SIM_CONTROL, Msg

REPLIES = frozenset({Msg.ACK, Msg.NAK, Msg.IDENTITY, Msg.STATUS})


def channel_body(
    channel: int = 0, shape: int = 0, asym_ratio: int = 1, burst_pulses: int = 0, frequency_mhz: int = 2000,
    burst_rate_mhz: int = 0, phase_us: int = 200, interphase_us: int = 50, amplitude_ua: int = 0,
) -> bytes:  # fmt: skip
    return SET_CHANNEL.pack(channel, shape, asym_ratio, burst_pulses, frequency_mhz, burst_rate_mhz,
                            phase_us, interphase_us, amplitude_ua)  # fmt: skip


def sim_body(op: int, channel: int = 0, value: int = 0) -> bytes:
    return SIM_CONTROL.pack(op, channel, value)


class Host:
    """What both drivers share: seq numbering and the received packets."""

    def __init__(self) -> None:
        self.seq = 0
        self.inbox: list[Packet] = []
        self._deframer = Deframer()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _wait(self, until: Callable[[], bool], timeout: float) -> None:
        raise NotImplementedError

    def _collect(self, data: bytes) -> None:
        self.inbox += [p for p in self._deframer.feed(data) if p is not None]

    def send(self, type_: int, body: bytes = b"", seq: int | None = None) -> int:
        """Send one command; without `seq`, the next in the host's own count."""
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        self._write(encode_frame(Packet(seq, type_, body)))
        return seq

    def request(self, type_: int, body: bytes = b"", seq: int | None = None, timeout: float = 1.0) -> Packet:
        """Send and return the reply carrying the same seq (taken out of the inbox)."""
        sent = self.send(type_, body, seq)
        self._wait(lambda: self._reply(sent) is not None, timeout)
        reply = self._reply(sent)
        if reply is None:
            raise TimeoutError(f"no reply to seq {sent}")
        self.inbox.remove(reply)
        return reply

    def hello(self, version: int = 2, seq: int = 0) -> Packet:
        self.seq = (seq + 1) & 0xFF
        return self.request(Msg.HELLO, bytes([version]), seq=seq)

    def wait_for(self, type_: int, timeout: float = 2.0) -> Packet:
        """The first received packet of `type_`, taken out of the inbox."""
        self._wait(lambda: any(p.type == type_ for p in self.inbox), timeout)
        found = next((p for p in self.inbox if p.type == type_), None)
        if found is None:
            raise TimeoutError(f"no packet of type {type_:#x}")
        self.inbox.remove(found)
        return found

    def _reply(self, seq: int) -> Packet | None:
        return next((p for p in self.inbox if p.seq == seq and p.type in REPLIES), None)


class ModelHost(Host):
    """Drives a Device in-process on a simulated clock that only moves when told to."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.t = 0.0
        self.events: list[dict[str, Any]] = []
        self.device = Device(DeviceOptions(**options), self.t, self.events.append)

    def advance(self, seconds: float) -> None:
        """Let time pass, stepping the device at each of its own deadlines."""
        target = self.t + seconds
        while (deadline := self.device.next_deadline()) is not None and deadline <= target:
            self.t = max(self.t, deadline)
            self._collect(self.device.step(self.t))
        self.t = target
        self._collect(self.device.step(self.t))

    def write_raw(self, data: bytes) -> None:
        self._write(data)

    def _write(self, data: bytes) -> None:
        self._collect(self.device.step(self.t, data))

    def _wait(self, until: Callable[[], bool], timeout: float) -> None:
        end = self.t + timeout
        while not until() and self.t < end:
            self.advance(0.001)


class WireHost(Host):
    """Talks to a served device over its pty path or socket:// URL, in real time."""

    def __init__(self, url: str) -> None:
        super().__init__()
        if url.startswith("socket://"):
            host, _, port = url.removeprefix("socket://").rpartition(":")
            self._sock: socket.socket | None = socket.create_connection((host, int(port)), timeout=2)
            self._fd = self._sock.fileno()
        else:
            self._sock = None
            self._fd = os.open(url, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self._fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        else:
            os.close(self._fd)

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)

    def read_for(self, seconds: float) -> bytes:
        """Raw bytes received within `seconds` (also collected into the inbox); b"" at end of stream."""
        got = bytearray()
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and select.select([self._fd], [], [], left)[0]:
            chunk = os.read(self._fd, 4096)
            if not chunk:
                break
            got += chunk
        self._collect(bytes(got))
        return bytes(got)

    def _wait(self, until: Callable[[], bool], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not until() and time.monotonic() < end:
            self.read_for(min(0.02, end - time.monotonic()))
