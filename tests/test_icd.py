"""ICD codec (v2, v1 its subset): exact inverses, the CRC check value, and every malformed frame dropped."""

from __future__ import annotations

import struct
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import icd

_INT_RANGES = {"B": (0, 0xFF), "H": (0, 0xFFFF), "I": (0, 0xFFFFFFFF)}


def _field_strategies(cls: type[icd.Message]) -> list[st.SearchStrategy]:
    codes = [c for c in cls.LAYOUT.format.lstrip("<") if not c.isdigit()]
    strategies = []
    for code in codes:
        if code == "s":
            strategies.append(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", max_size=12))
        else:
            low, high = _INT_RANGES[code]
            strategies.append(st.integers(low, high))
    return strategies


messages = st.one_of(
    *(st.builds(cls, *_field_strategies(cls)) for cls in icd.MESSAGES.values())
)


def test_crc_check_value() -> None:
    assert icd.crc16(b"123456789") == 0x29B1


def test_body_sizes_match_icd() -> None:
    sizes = {
        icd.SetChannel: 20, icd.Identity: 51, icd.Status: 23, icd.Telemetry: 26,
        icd.Fault: 6, icd.Nak: 2, icd.SimControl: 6, icd.Hello: 1, icd.Output: 1,
    }
    for cls, size in sizes.items():
        assert cls.LAYOUT.size == size, cls.__name__


@given(st.binary(max_size=600))
def test_cobs_round_trip_and_no_zero(data: bytes) -> None:
    encoded = icd.cobs_encode(data)
    assert 0 not in encoded
    assert icd.cobs_decode(encoded) == data


@given(st.integers(0, 255), messages)
def test_frame_round_trip(seq: int, message: icd.Message) -> None:
    frame = icd.encode_frame(seq, message)
    assert frame.endswith(b"\0") and frame.count(0) == 1
    [raw] = icd.FrameDecoder().feed(frame)
    assert raw.seq == seq and raw.type == message.TYPE
    assert raw.message() == message


@given(st.lists(st.tuples(st.integers(0, 255), messages), max_size=20), st.data())
def test_stream_split_anywhere(frames: list, data: st.DataObject) -> None:
    stream = b"".join(icd.encode_frame(seq, msg) for seq, msg in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = icd.FrameDecoder()
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        out += decoder.feed(stream[start:end])
    assert [(p.seq, p.message()) for p in out] == frames
    assert decoder.bad_frames == 0


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_never_raises(garbage: bytes) -> None:
    decoder = icd.FrameDecoder()
    for raw in decoder.feed(garbage):
        try:
            raw.message()
        except icd.BodyError:
            pass
    # a good frame after any garbage is still found once the stream resynchronises
    good = icd.encode_frame(7, icd.Ack())
    assert icd.RawPacket(7, icd.MsgType.ACK, b"") in decoder.feed(b"\0" + good)


@given(st.integers(0, 255), messages, st.data())
def test_any_single_bit_error_in_a_packet_is_dropped(seq: int, message: icd.Message, data: st.DataObject) -> None:
    packet = bytearray(icd.cobs_decode(icd.encode_frame(seq, message)[:-1]))
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    packet[bit // 8] ^= 1 << (bit % 8)
    decoder = icd.FrameDecoder()
    # CRC-16 detects every single-bit error: nothing valid may come out of a damaged packet
    assert decoder.feed(icd.cobs_encode(bytes(packet)) + b"\0") == []
    assert decoder.bad_frames == 1


def test_length_limits() -> None:
    decoder = icd.FrameDecoder()
    short = icd.cobs_encode(b"\x01\x02\x03") + b"\0"
    long_packet = bytes(70)
    long_packet += icd.crc16(long_packet).to_bytes(2, "little")
    assert decoder.feed(short + icd.cobs_encode(long_packet) + b"\0") == []
    assert decoder.bad_frames == 2


def test_overlong_run_without_delimiter_is_bounded() -> None:
    decoder = icd.FrameDecoder()
    for _ in range(1000):
        decoder.feed(b"\x55" * 1000)
    assert len(decoder._buf) <= icd.MAX_ENCODED
    assert decoder.feed(b"\0" + icd.encode_frame(1, icd.Ack())) == [icd.RawPacket(1, icd.MsgType.ACK, b"")]
    assert decoder.bad_frames == 1


def test_body_errors_name_the_problem() -> None:
    with pytest.raises(icd.BodyError) as unknown:
        icd.RawPacket(0, 0x42, b"").message()
    assert unknown.value.code == icd.NakCode.UNKNOWN_TYPE
    with pytest.raises(icd.BodyError) as bad_length:
        icd.RawPacket(0, icd.MsgType.SET_CHANNEL, b"\0" * 19).message()
    assert bad_length.value.code == icd.NakCode.BAD_LENGTH


def test_out_of_wire_range_fields_refused_on_encode() -> None:
    with pytest.raises(ValueError, match="wire range"):
        icd.encode_frame(0, icd.Output(256))
    with pytest.raises(ValueError, match="longer than 12"):
        icd.encode_frame(0, icd.Identity(1, 1, 0, 4, "X" * 13, *([0] * 11)))
    with pytest.raises(ValueError):
        icd.encode_frame(256, icd.Ack())


def test_fault_masks() -> None:
    codes = {icd.FaultCode.WATCHDOG, icd.FaultCode.HARDWARE}
    assert icd.faults_from_mask(icd.mask_from_faults(codes)) == codes
    assert [f.name for f in fields(icd.Telemetry)][8] == "charge_total_uc"
    assert struct.calcsize("<IBBHIIHII") == 26


def test_telemetry_of_both_versions_round_trips() -> None:
    """v1: 26 bytes; v2: 36 bytes with the whole waveform (and a reserved zero byte)."""
    v1 = icd.Telemetry(1000, 2, 1, 0, 1500, 2000, 200, 1000, 7)
    v2 = icd.Telemetry(1000, 2, 1, 0, 1500, 2000, 200, 1000, 7, 1, 3, 5, 40, 2000)
    for message, size in ((v1, 26), (v2, 36)):
        raw = icd.parse_packet(icd.encode_frame(9, message)[:-1])
        assert len(raw.body) == size and raw.message() == message
    assert icd.encode_frame(9, v2)[:-1] == icd.encode_frame(9, v2)[:-1]
    assert icd.cobs_decode(icd.encode_frame(9, v2)[:-1])[2 + 29] == 0  # the reserved byte
    with pytest.raises(icd.BodyError):
        icd.RawPacket(0, icd.MsgType.TELEMETRY, bytes(30)).message()


def test_bye_is_an_empty_command() -> None:
    assert icd.parse_packet(icd.encode_frame(4, icd.Bye())[:-1]).message() == icd.Bye()
    assert icd.MsgType.BYE == 0x04 and icd.MsgType.BYE in icd.HOST_COMMANDS
