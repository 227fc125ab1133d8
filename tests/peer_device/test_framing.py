"""Framing: CRC-16/CCITT-FALSE, COBS, frame codec and stream splitting (ICD §1)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.peer_device import protocol
from tests.peer_device.framing import (
    Deframer, Packet, cobs_decode, cobs_encode, crc16_ccitt_false, decode_packet, encode_frame,
)  # fmt: skip

pytestmark = pytest.mark.timeout(30)

packets = st.builds(Packet, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=60))


def test_crc_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_body_layouts_have_the_icd_sizes() -> None:
    sizes = (protocol.SET_CHANNEL, protocol.IDENTITY, protocol.STATUS, protocol.FAULT, protocol.TELEMETRY_V1)
    assert [s.size for s in sizes] == [20, 51, 23, 6, 26]
    assert protocol.TELEMETRY_V1.size + protocol.TELEMETRY_V2_TAIL.size == 36


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data


@given(packets)
def test_frame_round_trip(packet: Packet) -> None:
    frame = encode_frame(packet)
    assert frame.endswith(b"\x00") and 0 not in frame[:-1]
    assert Deframer().feed(frame) == [packet]


@given(packets, st.integers(0, 63), st.integers(1, 255))
def test_any_single_byte_corruption_is_dropped(packet: Packet, where: int, flip: int) -> None:
    encoded = bytearray(encode_frame(packet)[:-1])
    encoded[where % len(encoded)] ^= flip
    assume(0 not in encoded)  # a new 0x00 splits the frame in two: each part is dropped on its own
    assert decode_packet(bytes(encoded)) is None


def test_lengths_outside_4_to_64_are_dropped() -> None:
    def raw_frame(raw: bytes) -> bytes:
        return cobs_encode(raw + crc16_ccitt_false(raw).to_bytes(2, "little"))

    assert decode_packet(raw_frame(b"\x01")) is None  # 3 bytes
    assert decode_packet(raw_frame(b"\x01\x02" + bytes(60))) is not None  # 64 bytes
    assert decode_packet(raw_frame(b"\x01\x02" + bytes(61))) is None  # 65 bytes


def test_stream_resynchronises_after_garbage_and_ignores_idle_delimiters() -> None:
    good = encode_frame(Packet(1, 2, b"ab"))
    frames = Deframer().feed(b"\x00\x00" + b"\x05garbage\x00" + bytes([7] * 500) + b"\x00" + good)
    assert frames == [None, None, Packet(1, 2, b"ab")]


def test_frames_split_across_reads() -> None:
    deframer = Deframer()
    frame = encode_frame(Packet(9, 0x10, bytes(20)))
    assert [p for i in range(len(frame)) for p in deframer.feed(frame[i : i + 1])] == [Packet(9, 0x10, bytes(20))]
