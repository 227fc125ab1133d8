"""ICD codec (v2, and v1 as its subset): COBS framing, CRC-16/CCITT-FALSE and the typed
messages of ICD.md.

Pure data in, data out: no I/O, no clocks, no threads, so the host, the simulated device
and the fuzzers all exercise the very same bytes. Integers here are wire units
(µA, µs, mHz, ms, nC, µC, mV, Ω); conversion to physical units lives in `units.py`.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass, fields
from enum import IntEnum
from typing import ClassVar

PROTOCOL_VERSION = 2  # the highest version this host speaks (HELLO carries it)
PROTOCOL_VERSIONS = frozenset({1, 2})  # the session versions this host works with
MIN_PACKET = 4  # seq + type + crc
MAX_PACKET = 64  # seq + type + 60-byte body + crc
MAX_BODY = MAX_PACKET - MIN_PACKET
MAX_ENCODED = MAX_PACKET + 1  # COBS adds at most one byte per 254 for packets this short
OPEN_CIRCUIT_OHM = 0xFFFFFFFF
DEVICE_WIDE = 0xFF  # FAULT.channel for a device-wide fault
RETRANSMIT_WINDOW = 8  # commands the device remembers and the host may keep in flight


class MsgType(IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    GET_STATUS = 0x03
    BYE = 0x04
    SET_CHANNEL = 0x10
    OUTPUT = 0x11
    CLEAR_FAULT = 0x12
    ESTOP = 0x1F
    SIM_CONTROL = 0xF0
    ACK = 0x80
    IDENTITY = 0x81
    STATUS = 0x83
    NAK = 0x8F
    TELEMETRY = 0x90
    FAULT = 0x91


class NakCode(IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3
    NOT_ZERO_START = 4
    STEP_TOO_LARGE = 5
    SLEW_TOO_FAST = 6
    FAULT_LATCHED = 7
    OUT_OF_ORDER = 8
    UNSUPPORTED = 9
    BAD_STATE = 10
    NO_SESSION = 11


class FaultCode(IntEnum):
    """Fault codes; each is also its bit number in `latched_faults`."""

    WATCHDOG = 0
    ESTOP = 1
    OPEN_CIRCUIT = 2
    OVERCURRENT = 3
    COMPLIANCE = 4
    HARDWARE = 5


DEVICE_WIDE_FAULTS = frozenset(
    {FaultCode.WATCHDOG, FaultCode.ESTOP, FaultCode.OVERCURRENT, FaultCode.HARDWARE}
)


class Shape(IntEnum):
    BIPHASIC = 0
    BIPHASIC_ALTERNATING = 1
    MONOPHASIC = 2


class SimOp(IntEnum):
    SET_LOAD = 1
    INJECT_FAULT = 2
    REBOOT = 3


def faults_from_mask(mask: int) -> frozenset[FaultCode]:
    """The fault codes set in a `latched_faults` bit mask (unknown bits are ignored)."""
    return frozenset(code for code in FaultCode if mask & (1 << code))


def mask_from_faults(codes: frozenset[FaultCode] | set[FaultCode]) -> int:
    mask = 0
    for code in codes:
        mask |= 1 << code
    return mask


# --- CRC-16/CCITT-FALSE --------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


# --- COBS ----------------------------------------------------------------------------


class FrameError(ValueError):
    """A frame the receiver must drop silently (bad COBS, length or CRC) and count."""


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00 byte."""
    out = bytearray([0])
    code_at = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of `cobs_encode`; raises FrameError on any malformed input."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("COBS code runs past the end of the frame")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError("zero byte inside a COBS frame")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# --- Messages ------------------------------------------------------------------------


class BodyError(ValueError):
    """A frame that passed its CRC but whose type or body the receiver cannot accept."""

    def __init__(self, code: NakCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every ICD message: a fixed little-endian struct body."""

    TYPE: ClassVar[MsgType]
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<")

    def body(self) -> bytes:
        try:
            return self.LAYOUT.pack(*astuple(self))
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: field out of wire range: {exc}") from None

    @classmethod
    def from_body(cls, body: bytes) -> Message:
        if len(body) != cls.LAYOUT.size:
            raise BodyError(
                NakCode.BAD_LENGTH,
                f"{cls.__name__} body is {len(body)} bytes, expected {cls.LAYOUT.size}",
            )
        return cls(*cls.LAYOUT.unpack(body))


def _layout(fmt: str) -> struct.Struct:
    return struct.Struct("<" + fmt)


# Host -> device


@dataclass(frozen=True, slots=True)
class Hello(Message):
    TYPE = MsgType.HELLO
    LAYOUT = _layout("B")
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    TYPE = MsgType.HEARTBEAT


@dataclass(frozen=True, slots=True)
class GetStatus(Message):
    TYPE = MsgType.GET_STATUS


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """v2: end the session latching nothing."""

    TYPE = MsgType.BYE


@dataclass(frozen=True, slots=True)
class SetChannel(Message):
    TYPE = MsgType.SET_CHANNEL
    LAYOUT = _layout("BBBBIIHHI")
    channel: int
    shape: int
    asym_ratio: int
    burst_pulses: int
    frequency_mhz: int
    burst_rate_mhz: int
    phase_us: int
    interphase_us: int
    amplitude_ua: int


@dataclass(frozen=True, slots=True)
class Output(Message):
    TYPE = MsgType.OUTPUT
    LAYOUT = _layout("B")
    enable_mask: int


@dataclass(frozen=True, slots=True)
class ClearFault(Message):
    TYPE = MsgType.CLEAR_FAULT


@dataclass(frozen=True, slots=True)
class Estop(Message):
    TYPE = MsgType.ESTOP


@dataclass(frozen=True, slots=True)
class SimControl(Message):
    TYPE = MsgType.SIM_CONTROL
    LAYOUT = _layout("BBI")
    op: int
    channel: int
    value: int


# Device -> host


@dataclass(frozen=True, slots=True)
class Ack(Message):
    TYPE = MsgType.ACK


@dataclass(frozen=True, slots=True)
class Nak(Message):
    TYPE = MsgType.NAK
    LAYOUT = _layout("BB")
    code: int
    expected: int


@dataclass(frozen=True, slots=True)
class Identity(Message):
    TYPE = MsgType.IDENTITY
    LAYOUT = _layout("BBBB12sIHIIIIIIHBH")
    protocol_version: int
    fw_major: int
    fw_minor: int
    channels: int
    serial: str
    max_amplitude_ua: int
    max_phase_us: int
    min_frequency_mhz: int
    max_frequency_mhz: int
    max_phase_charge_nc: int
    max_step_ua: int
    max_slew_ua_per_s: int
    compliance_mv: int
    watchdog_ms: int
    telemetry_hz: int
    latched_faults: int

    def body(self) -> bytes:
        serial = self.serial.encode("ascii")
        if len(serial) > 12:
            raise ValueError(f"Identity: serial {self.serial!r} is longer than 12 bytes")
        values = list(astuple(self))
        values[4] = serial
        try:
            return self.LAYOUT.pack(*values)
        except struct.error as exc:
            raise ValueError(f"Identity: field out of wire range: {exc}") from None

    @classmethod
    def from_body(cls, body: bytes) -> Identity:
        if len(body) != cls.LAYOUT.size:
            raise BodyError(
                NakCode.BAD_LENGTH, f"Identity body is {len(body)} bytes, expected {cls.LAYOUT.size}"
            )
        values = list(cls.LAYOUT.unpack(body))
        values[4] = values[4].rstrip(b"\0").decode("ascii", errors="replace")
        return cls(*values)


@dataclass(frozen=True, slots=True)
class Status(Message):
    TYPE = MsgType.STATUS
    LAYOUT = _layout("IHBIIII")
    device_time_ms: int
    latched_faults: int
    output_mask: int
    rx_frames: int
    rx_bad_frames: int
    rx_out_of_order: int
    tx_frames: int


@dataclass(frozen=True, slots=True)
class Telemetry(Message):
    """One channel's reading. v1 carries the first nine fields (26 bytes); v2 adds the whole
    waveform as applied (36 bytes). The v2 fields are None in a v1 reading."""

    TYPE = MsgType.TELEMETRY
    LAYOUT = _layout("IBBHIIHII")
    LAYOUT_V2 = _layout("IBBHIIHIIBBBBHI")
    device_time_ms: int
    channel: int
    flags: int
    latched_faults: int
    amplitude_ua: int
    frequency_mhz: int
    phase_us: int
    load_ohm: int
    charge_total_uc: int
    shape: int | None = None
    asym_ratio: int | None = None
    burst_pulses: int | None = None
    interphase_us: int | None = None
    burst_rate_mhz: int | None = None

    FLAG_ENABLED: ClassVar[int] = 0x01
    FLAG_COMPLIANCE_LIMITED: ClassVar[int] = 0x02

    def body(self) -> bytes:
        values = astuple(self)
        try:
            if self.shape is None:
                return self.LAYOUT.pack(*values[:9])
            return self.LAYOUT_V2.pack(*values[:9], self.shape, self.asym_ratio, self.burst_pulses, 0,
                                       self.interphase_us, self.burst_rate_mhz)
        except struct.error as exc:
            raise ValueError(f"Telemetry: field out of wire range: {exc}") from None

    @classmethod
    def from_body(cls, body: bytes) -> Telemetry:
        if len(body) == cls.LAYOUT.size:
            return cls(*cls.LAYOUT.unpack(body))
        if len(body) == cls.LAYOUT_V2.size:
            *v1, shape, asym, burst, _reserved, interphase, burst_rate = cls.LAYOUT_V2.unpack(body)
            return cls(*v1, shape, asym, burst, interphase, burst_rate)
        raise BodyError(NakCode.BAD_LENGTH, f"Telemetry body is {len(body)} bytes, expected "
                                            f"{cls.LAYOUT.size} (v1) or {cls.LAYOUT_V2.size} (v2)")


@dataclass(frozen=True, slots=True)
class Fault(Message):
    TYPE = MsgType.FAULT
    LAYOUT = _layout("IBB")
    device_time_ms: int
    code: int
    channel: int


MESSAGES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello, Heartbeat, GetStatus, Bye, SetChannel, Output, ClearFault, Estop, SimControl,
        Ack, Nak, Identity, Status, Telemetry, Fault,
    )
}
HOST_COMMANDS = frozenset(t for t in MESSAGES if t < 0x80) | {MsgType.SIM_CONTROL}
REPLIES = frozenset({MsgType.ACK, MsgType.NAK, MsgType.IDENTITY, MsgType.STATUS})
EVENTS = frozenset({MsgType.TELEMETRY, MsgType.FAULT})

assert Identity.LAYOUT.size == 51 and Status.LAYOUT.size == 23
assert Telemetry.LAYOUT.size == 26 and Telemetry.LAYOUT_V2.size == 36 and SetChannel.LAYOUT.size == 20


def field_names(cls: type[Message]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# --- Packets and frames --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawPacket:
    """A packet whose framing and CRC are valid; its body is not yet interpreted."""

    seq: int
    type: int
    body: bytes

    def message(self) -> Message:
        """Decode the body; raises BodyError (UNKNOWN_TYPE / BAD_LENGTH)."""
        cls = MESSAGES.get(self.type)
        if cls is None:
            raise BodyError(NakCode.UNKNOWN_TYPE, f"unknown message type 0x{self.type:02X}")
        return cls.from_body(self.body)


def encode_frame(seq: int, message: Message) -> bytes:
    """One complete wire frame: COBS(seq|type|body|crc) + 0x00."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq {seq} outside 0..255")
    packet = bytes((seq, message.TYPE)) + message.body()
    packet += crc16(packet).to_bytes(2, "little")
    return cobs_encode(packet) + b"\0"


def parse_packet(encoded: bytes) -> RawPacket:
    """Decode one delimiter-free frame; raises FrameError for anything to drop."""
    packet = cobs_decode(encoded)
    if not MIN_PACKET <= len(packet) <= MAX_PACKET:
        raise FrameError(f"packet of {len(packet)} bytes outside {MIN_PACKET}..{MAX_PACKET}")
    if crc16(packet[:-2]) != int.from_bytes(packet[-2:], "little"):
        raise FrameError("CRC mismatch")
    return RawPacket(packet[0], packet[1], bytes(packet[2:-2]))


class FrameDecoder:
    """Turns a byte stream into valid packets, resynchronising at every 0x00.

    Never raises on input: bad frames are counted in `bad_frames` and dropped. An
    over-long run without a delimiter is discarded as it grows, so memory stays bounded
    whatever a broken peer sends.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.good_frames = 0
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[RawPacket]:
        packets: list[RawPacket] = []
        start = 0
        while True:
            end = data.find(b"\0", start)
            if end < 0:
                self._append(data[start:])
                return packets
            self._append(data[start:end])
            frame, overflow = bytes(self._buf), self._overflow
            self._buf.clear()
            self._overflow = False
            start = end + 1
            if overflow:
                self.bad_frames += 1
            elif frame:  # back-to-back delimiters are idle fill, not frames
                try:
                    packets.append(parse_packet(frame))
                    self.good_frames += 1
                except FrameError:
                    self.bad_frames += 1

    def _append(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buf += chunk
        if len(self._buf) > MAX_ENCODED:
            self._buf.clear()
            self._overflow = True
