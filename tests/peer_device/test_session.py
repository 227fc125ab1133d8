"""Sessions, sequencing, retransmission, ESTOP, watchdog, BYE and persistence (ICD §2, §3, §6)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.peer_device.clients import ModelHost, channel_body, sim_body
from tests.peer_device.framing import Packet, encode_frame
from tests.peer_device.protocol import DEVICE_WIDE, FAULT, IDENTITY, NAK, STATUS, Fault, Msg, Nak, SimOp

pytestmark = pytest.mark.timeout(30)


def nak(reply: Packet) -> tuple[Nak, int]:
    assert reply.type == Msg.NAK, reply
    code, expected = NAK.unpack(reply.body)
    return Nak(code), expected


def identity(reply: Packet) -> tuple[Any, ...]:
    assert reply.type == Msg.IDENTITY
    return IDENTITY.unpack(reply.body)


def status(host: ModelHost) -> tuple[int, ...]:
    return STATUS.unpack(host.request(Msg.GET_STATUS).body)


def fault_codes(host: ModelHost) -> list[tuple[int, int]]:
    return [FAULT.unpack(p.body)[1:] for p in host.inbox if p.type == Msg.FAULT]


def next_telemetry(host: ModelHost, channel: int) -> Packet:
    while (telemetry := host.wait_for(Msg.TELEMETRY)).body[4] != channel:
        pass
    return telemetry


def test_before_hello_only_hello_estop_and_sim_control_are_served() -> None:
    host = ModelHost()
    assert nak(host.request(Msg.HEARTBEAT, seq=40)) == (Nak.NO_SESSION, 0)
    assert nak(host.request(Msg.BYE, seq=41))[0] == Nak.NO_SESSION
    assert host.request(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 0, 500), seq=99).type == Msg.ACK
    assert host.request(Msg.ESTOP, seq=7).type == Msg.ACK
    assert not [p for p in host.inbox if p.type == Msg.TELEMETRY]


@pytest.mark.parametrize(("device", "host", "session"), [(2, 2, 2), (2, 1, 1), (2, 9, 2), (1, 2, 1), (1, 1, 1)])
def test_session_runs_at_the_lower_version(device: int, host: int, session: int) -> None:
    h = ModelHost(protocol_version=device)
    assert identity(h.hello(host))[0] == session


def test_identity_reports_every_limit_and_the_serial() -> None:
    fields = identity(ModelHost(channels=3, serial="ABC", watchdog_ms=250, fw_major=9).hello())
    assert fields[1:5] == (9, 7, 3, b"ABC" + bytes(9))
    assert fields[5:] == (25000, 500, 1000, 150000, 10000, 500, 2500, 45000, 250, 20, 0)


def test_hello_with_version_0_or_a_bad_length_is_refused_and_opens_no_session() -> None:
    host = ModelHost()
    assert nak(host.request(Msg.HELLO, b"\x00", seq=5))[0] == Nak.OUT_OF_RANGE
    assert nak(host.request(Msg.HELLO, b"\x02\x00", seq=6))[0] == Nak.BAD_LENGTH
    assert nak(host.request(Msg.HEARTBEAT, seq=7))[0] == Nak.NO_SESSION


def test_hello_is_executed_whatever_its_seq_and_sets_expected() -> None:
    host = ModelHost()
    host.hello(seq=200)
    host.hello(seq=17)
    assert nak(host.request(Msg.HEARTBEAT, seq=200)) == (Nak.OUT_OF_ORDER, 18)
    assert host.request(Msg.HEARTBEAT, seq=18).type == Msg.ACK


def test_sequencing_wraps_and_counts_out_of_order() -> None:
    host = ModelHost()
    host.hello(seq=254)
    assert host.request(Msg.HEARTBEAT).seq == 255
    assert host.request(Msg.HEARTBEAT).type == Msg.ACK  # seq 0
    assert nak(host.request(Msg.HEARTBEAT, seq=100)) == (Nak.OUT_OF_ORDER, 1)
    assert status(host)[5] == 1  # rx_out_of_order


def test_retransmission_replays_the_stored_reply_without_executing_again() -> None:
    host = ModelHost()
    host.hello()
    first = host.request(Msg.GET_STATUS)
    host.advance(0.1)
    on = host.request(Msg.OUTPUT, b"\x01")
    host.request(Msg.OUTPUT, b"\x00")
    assert host.request(Msg.GET_STATUS, seq=first.seq) == first  # the stored reply, stale time and all
    assert host.request(Msg.OUTPUT, b"\x01", seq=on.seq) == on  # not executed: output stays off
    assert status(host)[2] == 0


def test_the_store_holds_eight_replies_and_hello_empties_it() -> None:
    host = ModelHost()
    host.hello(seq=0)
    for _ in range(10):
        host.request(Msg.HEARTBEAT)  # seq 1..10; expected 11
    assert host.request(Msg.HEARTBEAT, seq=3).type == Msg.ACK  # 8 before expected
    assert nak(host.request(Msg.HEARTBEAT, seq=2)) == (Nak.OUT_OF_ORDER, 11)  # 9 before
    host.hello(seq=12)
    assert nak(host.request(Msg.HEARTBEAT, seq=10)) == (Nak.OUT_OF_ORDER, 13)  # in the window, not stored


def test_estop_any_seq_own_ack_latches_fault_first_and_keeps_expected() -> None:
    host = ModelHost()
    host.hello(seq=10)
    host.request(Msg.OUTPUT, b"\x03")
    ack = host.request(Msg.ESTOP, seq=77)
    assert (ack.seq, ack.type) == (77, Msg.ACK)
    fault = host.inbox[-1]
    assert fault.type == Msg.FAULT and FAULT.unpack(fault.body)[1:] == (Fault.ESTOP, DEVICE_WIDE)
    assert host.request(Msg.ESTOP, b"junk", seq=11).type == Msg.ACK  # even with a body, even at expected
    assert host.request(Msg.HEARTBEAT, seq=11).type == Msg.ACK
    latched, mask = status(host)[1:3]
    assert (latched, mask) == (1 << Fault.ESTOP, 0)
    assert [e["cause"] for e in host.events if e["event"] == "output_off"] == ["ESTOP", "ESTOP"]


def test_latched_fault_blocks_output_until_clear_fault() -> None:
    host = ModelHost()
    host.hello()
    host.request(Msg.ESTOP, seq=200)
    assert nak(host.request(Msg.OUTPUT, b"\x01"))[0] == Nak.FAULT_LATCHED
    assert host.request(Msg.OUTPUT, b"\x00").type == Msg.ACK  # enabling nothing is allowed
    assert host.request(Msg.CLEAR_FAULT).type == Msg.ACK
    assert host.request(Msg.OUTPUT, b"\x01").type == Msg.ACK
    assert nak(host.request(Msg.CLEAR_FAULT))[0] == Nak.BAD_STATE


def test_watchdog_latches_after_watchdog_ms_of_silence() -> None:
    host = ModelHost(watchdog_ms=300)
    host.hello()
    host.request(Msg.OUTPUT, b"\x01")
    for _ in range(5):
        host.advance(0.25)
        host.send(Msg.HEARTBEAT)
    host.advance(0.299)
    assert fault_codes(host) == []
    host.advance(0.002)
    assert fault_codes(host) == [(Fault.WATCHDOG, DEVICE_WIDE)]
    assert host.events[-1]["event"] == "fault" and host.events[-2]["cause"] == "WATCHDOG"
    host.advance(2)
    assert len(fault_codes(host)) == 1  # once per silence, not again and again
    assert status(host)[1:3] == (1 << Fault.WATCHDOG, 0)


def test_any_valid_frame_feeds_the_watchdog_but_a_bad_frame_does_not() -> None:
    host = ModelHost(watchdog_ms=100)
    host.hello()
    for _ in range(4):
        host.advance(0.08)
        host.send(Msg.HEARTBEAT, seq=250)  # out of order, still a valid frame
    assert fault_codes(host) == []
    host.advance(0.08)
    host.write_raw(b"\x05\x01\x02\x03\x04\x00")
    host.advance(0.03)
    assert fault_codes(host) == [(Fault.WATCHDOG, DEVICE_WIDE)]


def test_bye_ends_the_session_without_latching() -> None:
    host = ModelHost(watchdog_ms=100)
    host.hello()
    host.request(Msg.OUTPUT, b"\x01")
    bye = host.request(Msg.BYE)
    assert bye.type == Msg.ACK
    assert nak(host.request(Msg.BYE, seq=bye.seq))[0] == Nak.NO_SESSION  # a resent BYE
    assert nak(host.request(Msg.GET_STATUS))[0] == Nak.NO_SESSION
    host.inbox.clear()
    host.advance(1)
    assert host.inbox == []  # no watchdog, no telemetry
    assert host.request(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 1, 100), seq=3).type == Msg.ACK
    assert identity(host.hello())[-1] == 0  # nothing latched


def test_v1_device_naks_bye_unknown_type_and_keeps_its_session() -> None:
    host = ModelHost(protocol_version=1)
    host.hello(2)
    assert nak(host.request(Msg.BYE))[0] == Nak.UNKNOWN_TYPE
    assert host.request(Msg.HEARTBEAT).type == Msg.ACK


def test_v1_session_on_a_v2_device_has_no_bye() -> None:
    host = ModelHost()
    host.hello(1)
    assert nak(host.request(Msg.BYE))[0] == Nak.UNKNOWN_TYPE


def test_unknown_type_bad_length_and_nak_expected_modes() -> None:
    host = ModelHost()
    host.hello(seq=4)
    assert nak(host.request(0x55)) == (Nak.UNKNOWN_TYPE, 0)
    assert nak(host.request(Msg.HEARTBEAT, b"x")) == (Nak.BAD_LENGTH, 0)
    host = ModelHost(nak_expected="expected")
    host.hello(seq=4)
    assert nak(host.request(Msg.GET_STATUS, b"x")) == (Nak.BAD_LENGTH, 6)


def test_bad_frames_are_dropped_silently_and_counted() -> None:
    host = ModelHost()
    host.hello()
    frame = bytearray(encode_frame(Packet(1, Msg.HEARTBEAT)))
    frame[2] ^= 0x40
    host.write_raw(bytes(frame) + b"\x01\x00")
    host.advance(0.1)
    assert not [p for p in host.inbox if p.type in (Msg.ACK, Msg.NAK)]
    assert status(host)[3:5] == (2, 2)  # rx_frames (HELLO and this GET_STATUS), rx_bad_frames


def test_replies_wait_for_the_processing_latency() -> None:
    host = ModelHost(reply_latency_ms=5)
    host.send(Msg.HELLO, b"\x02")
    host.advance(0.0049)
    assert host.inbox == []
    host.advance(0.0002)
    assert host.inbox[0].type == Msg.IDENTITY


def test_sim_control_nak_rules() -> None:
    host = ModelHost()
    host.hello()
    assert nak(host.request(Msg.SIM_CONTROL, sim_body(9)))[0] == Nak.UNSUPPORTED
    assert nak(host.request(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 2, 100)))[0] == Nak.OUT_OF_RANGE
    assert nak(host.request(Msg.SIM_CONTROL, sim_body(SimOp.INJECT_FAULT, 0, 6)))[0] == Nak.OUT_OF_RANGE
    assert nak(host.request(Msg.SIM_CONTROL, sim_body(SimOp.INJECT_FAULT, 5, Fault.COMPLIANCE)))[0] == Nak.OUT_OF_RANGE
    assert nak(host.request(Msg.SIM_CONTROL, b"\x01"))[0] == Nak.BAD_LENGTH
    assert host.request(Msg.SIM_CONTROL, sim_body(SimOp.INJECT_FAULT, 0, Fault.HARDWARE)).type == Msg.ACK
    assert fault_codes(host) == [(Fault.HARDWARE, DEVICE_WIDE)]


def test_a_real_device_naks_every_sim_control_unsupported() -> None:
    host = ModelHost(sim_control="unsupported")
    assert nak(host.request(Msg.SIM_CONTROL, sim_body(SimOp.REBOOT), seq=9))[0] == Nak.UNSUPPORTED
    host.hello()
    assert nak(host.request(Msg.SIM_CONTROL, b""))[0] == Nak.UNSUPPORTED


def test_state_persists_across_sessions_until_reboot() -> None:
    host = ModelHost(event_counter_start=0, protocol_version=1, output_off_amplitude="keep")
    host.hello()
    host.request(Msg.SET_CHANNEL, channel_body(frequency_mhz=5000, amplitude_ua=400))
    host.request(Msg.SIM_CONTROL, sim_body(SimOp.INJECT_FAULT, 0, Fault.OVERCURRENT))
    host.advance(0.2)
    assert identity(host.hello(seq=50))[-1] == 1 << Fault.OVERCURRENT  # latched faults survive HELLO
    assert status(host)[3] == 5  # rx_frames kept: HELLO, SET_CHANNEL, SIM_CONTROL, HELLO, GET_STATUS
    events_before = [p.seq for p in host.inbox if p.type in (Msg.TELEMETRY, Msg.FAULT)][-1]
    host.inbox.clear()
    assert host.wait_for(Msg.TELEMETRY).seq == events_before + 1  # the event counter runs on
    telemetry = next_telemetry(host, channel=0)
    assert len(telemetry.body) == 26 and telemetry.body[12:16] == (5000).to_bytes(4, "little")  # v1 kept it
    host.request(Msg.SIM_CONTROL, sim_body(SimOp.REBOOT))
    assert nak(host.request(Msg.HEARTBEAT))[0] == Nak.NO_SESSION
    assert identity(host.hello())[-1] == 0
    assert status(host)[3] == 3  # HEARTBEAT, HELLO, GET_STATUS since the reboot
    host.inbox.clear()
    assert host.wait_for(Msg.TELEMETRY).seq == 0  # boot event counter
    assert host.events[-1]["event"] == "reboot"


@pytest.mark.parametrize("options", [{}, {"protocol_version": 1, "v1_hello": "reset"}])
def test_hello_resets_registers_on_v2_and_on_a_resetting_v1_device(options: dict[str, object]) -> None:
    host = ModelHost(**options)
    host.hello()
    host.request(Msg.SET_CHANNEL, channel_body(channel=1, frequency_mhz=5000))
    host.hello()
    host.inbox.clear()
    telemetry = [host.wait_for(Msg.TELEMETRY) for _ in range(2)]
    assert all(t.body[12:16] == bytes(4) for t in telemetry)
