"""Wire framing of ICD §1: CRC-16/CCITT-FALSE, COBS, and splitting a byte stream at 0x00."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PACKET = 4  # seq, type, crc:u16
MAX_PACKET = 64  # seq, type, 60-byte body, crc:u16
MAX_ENCODED = MAX_PACKET + MAX_PACKET // 254 + 1


def crc16_ccitt_false(data: bytes) -> int:
    """Poly 0x1021, init 0xFFFF, no reflection, xorout 0 (check value 0x29B1 for b"123456789")."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent-overhead byte stuffing: the result contains no 0x00."""
    out = bytearray([0])
    code_at = 0
    for byte in data:
        if byte:
            out.append(byte)
        if not byte or len(out) - code_at == 0xFF:
            out[code_at] = len(out) - code_at
            code_at = len(out)
            out.append(0)
    out[code_at] = len(out) - code_at
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """The inverse of cobs_encode, or None when `data` is not a valid COBS encoding."""
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            return None
        block = data[i + 1 : i + code]
        if 0 in block:
            return None
        out += block
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    """One decoded packet: `seq | type | body`, its CRC already checked."""

    seq: int
    type: int
    body: bytes = b""


def encode_frame(packet: Packet) -> bytes:
    """COBS(seq|type|body|crc) followed by the 0x00 delimiter."""
    raw = bytes([packet.seq & 0xFF, packet.type]) + packet.body
    return cobs_encode(raw + crc16_ccitt_false(raw).to_bytes(2, "little")) + b"\x00"


def decode_packet(encoded: bytes) -> Packet | None:
    """A packet from one frame without its delimiter, or None when the frame is to be dropped."""
    raw = cobs_decode(encoded)
    if raw is None or not MIN_PACKET <= len(raw) <= MAX_PACKET:
        return None
    if crc16_ccitt_false(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        return None
    return Packet(raw[0], raw[1], raw[2:-2])


class Deframer:
    """Splits a byte stream at 0x00 into packets; resynchronises at the next 0x00 after garbage.

    An empty frame (two delimiters in a row) is idle line, not an error: it is neither a packet
    nor a bad frame. Over-long garbage is not buffered beyond one maximal frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[Packet | None]:
        """Packets completed by `data`, in order; None stands for a dropped (bad) frame."""
        frames: list[Packet | None] = []
        for byte in data:
            if byte:
                if len(self._buf) < MAX_ENCODED:
                    self._buf.append(byte)
                else:
                    self._overflow = True
                continue
            if self._buf or self._overflow:
                frames.append(None if self._overflow else decode_packet(bytes(self._buf)))
            self._buf.clear()
            self._overflow = False
        return frames
