"""Byte-level tests of the simulated device through the ICD codec, with injected time."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from firmware_host import icd
from firmware_host.icd import (
    Ack, ClearFault, Estop, Fault, FaultCode, GetStatus, Heartbeat, Hello, Identity, Nak,
    NakCode, Output, SetChannel, SimControl, SimOp, Status, Telemetry, encode_frame,
)
from firmware_host.sim import SimConfig, SimulatedDevice

OPEN = icd.OPEN_CIRCUIT_OHM


def setting(channel: int = 0, amplitude_ua: int = 0, **kw: int) -> SetChannel:
    fields = dict(shape=0, asym_ratio=1, burst_pulses=0, frequency_mhz=10_000, burst_rate_mhz=0,
                  phase_us=200, interphase_us=50)
    fields.update(kw)
    return SetChannel(channel=channel, amplitude_ua=amplitude_ua, **fields)


class Host:
    """A test host: sends frames with its own seq, decodes what the device answers."""

    def __init__(self, config: SimConfig | None = None, now: float = 0.0) -> None:
        self.events: list[tuple[str, float, dict]] = []
        self.device = SimulatedDevice(config, now=now, on_event=lambda *e: self.events.append(e))
        self.decoder = icd.FrameDecoder()
        self.seq = 0
        self.telemetry: list[Telemetry] = []

    def raw(self, data: bytes, now: float) -> list[tuple[int, icd.Message]]:
        """What the device sent back, TELEMETRY aside (kept in self.telemetry)."""
        frames = self._decode(self.device.receive(data, now))
        self.telemetry += [m for _, m in frames if isinstance(m, Telemetry)]
        return [(s, m) for s, m in frames if not isinstance(m, Telemetry)]

    def send(self, msg: icd.Message, now: float, seq: int | None = None) -> list[tuple[int, icd.Message]]:
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        return self.raw(encode_frame(seq, msg), now)

    def reply(self, msg: icd.Message, now: float, seq: int | None = None) -> icd.Message:
        """The single reply to a command (unsolicited frames must not be mixed in)."""
        frames = self.send(msg, now, seq)
        assert len(frames) == 1, frames
        return frames[0][1]

    def tick(self, now: float) -> list[tuple[int, icd.Message]]:
        return self._decode(self.device.tick(now))

    def hello(self, now: float = 0.0, seq: int = 0) -> Identity:
        self.seq = (seq + 1) & 0xFF
        reply = self.reply(Hello(), now, seq)
        assert isinstance(reply, Identity)
        return reply

    def enable_at(self, channel: int, amplitude_ua: int, now: float, **kw: int) -> float:
        """Configure, enable from zero and ramp to amplitude within the step/slew limits."""
        assert self.reply(setting(channel, 0, **kw), now) == Ack()
        assert self.reply(Output(self.device.output_mask | 1 << channel), now) == Ack()
        level = 0
        while level < amplitude_ua:
            now += 0.25
            level = min(amplitude_ua, level + 1000)
            assert self.reply(setting(channel, level, **kw), now) == Ack()
        return now

    def _decode(self, data: bytes) -> list[tuple[int, icd.Message]]:
        return [(p.seq, p.message()) for p in self.decoder.feed(data)]


def long_watchdog(**kw: int) -> SimConfig:
    return SimConfig(watchdog_ms=60_000, **kw)


# --- configuration ------------------------------------------------------------------


def test_config_defaults_are_icd_section_7() -> None:
    c = SimConfig()
    assert (c.channels, c.max_amplitude_ua, c.max_phase_us, c.min_frequency_mhz, c.max_frequency_mhz) == (
        4, 30000, 1000, 500, 200000)
    assert (c.max_phase_charge_nc, c.max_step_ua, c.max_slew_ua_per_s, c.compliance_mv) == (20000, 1000, 4000, 60000)
    assert (c.watchdog_ms, c.telemetry_hz, c.load_ohm, c.protocol_version, c.serial) == (300, 10, 1000, 2, "SIM-0001")


def test_config_overrides_parse_and_name_the_bad_key() -> None:
    c = SimConfig.from_overrides({"channels": "2", "watchdog_ms": "500", "load_ohm": "open", "max_step_ua": "0x10"})
    assert (c.channels, c.watchdog_ms, c.load_ohm, c.max_step_ua) == (2, 500, OPEN, 16)
    with pytest.raises(ValueError, match="'chanels'"):
        SimConfig.from_overrides({"chanels": "2"})
    with pytest.raises(ValueError, match="'watchdog_ms'.*'abc'"):
        SimConfig.from_overrides({"watchdog_ms": "abc"})
    with pytest.raises(ValueError, match="'channels'"):
        SimConfig.from_overrides({"channels": "9"})
    with pytest.raises(ValueError, match="'serial'"):
        SimConfig.from_overrides({"serial": "X" * 13})


# --- session and sequencing ------------------------------------------------------------


def test_commands_before_hello_are_nak_no_session_with_expected_0() -> None:
    h = Host()
    for seq, msg in enumerate((Heartbeat(), GetStatus(), setting(), Output(0), ClearFault())):
        assert h.send(msg, 0.0, seq=seq + 40) == [(seq + 40, Nak(NakCode.NO_SESSION, 0))]
    assert h.send(Nak(1, 2), 0.0, seq=3) == [(3, Nak(NakCode.UNKNOWN_TYPE, 0))]
    assert h.raw(_packet(7, icd.MsgType.HELLO, b""), 0.0) == [(7, Nak(NakCode.BAD_LENGTH, 0))]
    assert not h.device.in_session


def test_sim_control_and_estop_run_outside_a_session_whatever_their_seq() -> None:
    h = Host()
    assert h.send(SimControl(SimOp.SET_LOAD, 1, 5000), 0.0, seq=200) == [(200, Ack())]
    assert h.send(Estop(), 0.0, seq=17) == [(17, Ack()), (0, Fault(0, FaultCode.ESTOP, icd.DEVICE_WIDE))]
    assert h.device.latched_faults == 1 << FaultCode.ESTOP
    identity = h.hello(seq=9)
    assert identity.latched_faults == 1 << FaultCode.ESTOP  # latched faults survive HELLO
    assert h.reply(Heartbeat(), 0.0, seq=10) == Ack()


def test_hello_reports_identity_and_sets_expected_from_any_seq() -> None:
    h = Host(SimConfig(channels=2, serial="ABC"))
    identity = h.hello(seq=255)
    assert identity == Identity(2, 1, 0, 2, "ABC", 30000, 1000, 500, 200000, 20000, 1000, 4000, 60000, 300, 10, 0)
    assert h.send(Heartbeat(), 0.0, seq=0) == [(0, Ack())]  # expected wrapped to 0
    # the session runs at the lower version; IDENTITY carries it, and the host decides
    assert h.reply(Hello(protocol_version=1), 0.0, seq=77).protocol_version == 1
    assert h.reply(Hello(protocol_version=9), 0.0, seq=78).protocol_version == 2


def test_out_of_order_nak_carries_expected_and_executes_nothing() -> None:
    h = Host()
    h.hello(seq=10)
    assert h.send(setting(0, 500), 0.0, seq=12) == [(12, Nak(NakCode.OUT_OF_ORDER, 11))]
    assert h.device.amplitudes_ua[0] == 0
    assert h.send(Heartbeat(), 0.0, seq=11) == [(11, Ack())]
    assert h.device.counters["rx_out_of_order"] == 1


def test_retransmission_replays_stored_reply_without_re_executing() -> None:
    h = Host(long_watchdog())
    h.hello(seq=0)
    assert h.reply(setting(0, 700), 0.0, seq=1) == Ack()
    assert h.reply(Output(0b10000), 0.0, seq=2) == Nak(NakCode.OUT_OF_RANGE, 3)
    assert h.reply(setting(0, 300), 0.0, seq=3) == Ack()
    # seq 1 again (even with another body): the stored ACK, amplitude stays 300
    assert h.reply(setting(0, 9999), 0.0, seq=1) == Ack()
    assert h.device.amplitudes_ua[0] == 300
    assert h.reply(Heartbeat(), 0.0, seq=2) == Nak(NakCode.OUT_OF_RANGE, 3)  # stored NAK replayed
    assert h.device.counters["rx_out_of_order"] == 2


def test_retransmission_window_is_eight_and_wraps() -> None:
    h = Host(long_watchdog())
    h.hello(seq=250)  # expected 251
    for seq in [*range(251, 256), *range(0, 6)]:
        assert h.reply(Heartbeat(), 0.0, seq=seq) == Ack()
    # expected is 6: 254..5 are the window; 253 is nine back
    assert h.reply(Heartbeat(), 0.0, seq=254) == Ack()
    assert h.reply(Heartbeat(), 0.0, seq=253) == Nak(NakCode.OUT_OF_ORDER, 6)
    assert h.reply(Heartbeat(), 0.0, seq=6) == Ack()


def test_window_seq_with_nothing_stored_after_hello_is_out_of_order() -> None:
    h = Host()
    h.hello(seq=5)
    assert h.reply(Heartbeat(), 0.0, seq=3) == Nak(NakCode.OUT_OF_ORDER, 6)
    assert isinstance(h.reply(Heartbeat(), 0.0, seq=5), Identity)  # HELLO's own reply is stored


def test_unknown_type_and_bad_length_consume_the_seq_in_a_session() -> None:
    h = Host()
    h.hello(seq=0)
    assert h.raw(_packet(1, 0x42, b""), 0.0) == [(1, Nak(NakCode.UNKNOWN_TYPE, 2))]
    assert h.raw(_packet(2, icd.MsgType.OUTPUT, b"\x01\x02"), 0.0) == [(2, Nak(NakCode.BAD_LENGTH, 3))]
    assert h.raw(_packet(3, icd.MsgType.ACK, b""), 0.0) == [(3, Nak(NakCode.UNKNOWN_TYPE, 4))]
    assert h.raw(_packet(4, icd.MsgType.HELLO, b""), 0.0) == [(4, Nak(NakCode.BAD_LENGTH, 5))]
    assert h.send(Heartbeat(), 0.0, seq=5) == [(5, Ack())]
    assert h.raw(_packet(1, 0x42, b""), 0.0) == [(1, Nak(NakCode.UNKNOWN_TYPE, 2))]  # replayed


# --- e-stop, faults, watchdog -----------------------------------------------------------


def test_estop_out_of_sequence_acks_then_faults_and_keeps_expected() -> None:
    h = Host(long_watchdog())
    h.hello(seq=0)
    now = h.enable_at(0, 2000, 0.0)
    frames = h.send(Estop(), now, seq=99)
    assert frames[0] == (99, Ack())
    assert frames[1][1] == Fault(int(now * 1000), FaultCode.ESTOP, icd.DEVICE_WIDE)
    assert h.device.output_mask == 0 and h.device.amplitudes_ua == (0, 0, 0, 0)
    assert ("output_off", now, {"reason": "estop", "mask": 1}) in h.events
    assert h.reply(Output(1), now) == Nak(NakCode.FAULT_LATCHED, h.seq)  # seq continued: expected kept
    assert h.reply(ClearFault(), now) == Ack()
    assert h.device.latched_faults == 0
    assert h.reply(Output(1), now) == Ack()
    # a CRC-valid ESTOP is honoured even with a malformed body
    assert h.raw(_packet(3, icd.MsgType.ESTOP, b"\x01"), now)[0] == (3, Ack())
    assert h.device.output_mask == 0


def test_watchdog_trips_after_silence_once_and_latches() -> None:
    h = Host()
    h.hello(now=1.0)
    h.enable_at(0, 0, 1.0)
    assert h.tick(1.299) == [] or all(isinstance(m, Telemetry) for _, m in h.tick(1.299))
    assert h.device.output_mask == 1
    faults = [m for _, m in h.tick(1.3) if isinstance(m, Fault)]
    assert faults == [Fault(1300, FaultCode.WATCHDOG, icd.DEVICE_WIDE)]  # device time counts from boot
    assert h.device.output_mask == 0 and h.device.latched_faults == 1 << FaultCode.WATCHDOG
    assert not [m for _, m in h.tick(2.0) if isinstance(m, Fault)]  # once per silence
    assert h.device.in_session


def test_valid_frames_restart_the_watchdog_but_bad_frames_do_not() -> None:
    h = Host()
    h.hello(now=0.0)
    assert h.reply(Nak(1, 1), 0.25, seq=44) == Nak(NakCode.OUT_OF_ORDER, 1)  # valid, even if refused
    h.raw(b"\x05\x01\x02\x03\x04\x00", 0.5)  # bad CRC: dropped, counted, no restart
    assert h.device.latched_faults == 0
    assert any(isinstance(m, Fault) for _, m in h.tick(0.55))
    assert h.device.counters["rx_bad_frames"] == 1


def test_frames_read_late_feed_the_watchdog_before_it_is_judged() -> None:
    # the serving thread hands over bytes when it gets to run; they arrived by then, and a
    # UART would have fed the watchdog on arrival: the device must not trip on its own lateness
    h = Host()
    h.hello(now=0.0)
    assert not [m for _, m in h.send(Heartbeat(), 0.45) if isinstance(m, Fault)]
    assert h.device.latched_faults == 0
    assert [m for _, m in h.tick(0.75) if isinstance(m, Fault)] == [Fault(750, FaultCode.WATCHDOG, icd.DEVICE_WIDE)]


def test_no_watchdog_outside_a_session() -> None:
    h = Host()
    assert h.tick(10.0) == []
    assert h.device.latched_faults == 0


@pytest.mark.parametrize("code", [FaultCode.HARDWARE, FaultCode.OVERCURRENT, FaultCode.WATCHDOG, FaultCode.ESTOP])
def test_injected_device_wide_fault_latches_and_stops(code: FaultCode) -> None:
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(1, 1000, 0.0)
    frames = h.send(SimControl(SimOp.INJECT_FAULT, 0, code), now)
    assert frames[0][1] == Ack() and frames[1][1] == Fault(int(now * 1000), code, icd.DEVICE_WIDE)
    assert h.device.output_mask == 0 and h.device.latched_faults == 1 << code


def test_sim_control_refusals() -> None:
    h = Host()
    h.hello()
    assert h.reply(SimControl(SimOp.INJECT_FAULT, 0, 6), 0.0) == Nak(NakCode.OUT_OF_RANGE, 2)
    assert h.reply(SimControl(SimOp.INJECT_FAULT, 4, FaultCode.COMPLIANCE), 0.0) == Nak(NakCode.OUT_OF_RANGE, 3)
    assert h.reply(SimControl(SimOp.SET_LOAD, 4, 100), 0.0) == Nak(NakCode.OUT_OF_RANGE, 4)
    assert h.reply(SimControl(9, 0, 0), 0.0) == Nak(NakCode.UNSUPPORTED, 5)


def test_clear_fault_needs_every_output_disabled() -> None:
    h = Host()
    h.hello()
    h.send(SimControl(SimOp.INJECT_FAULT, 0, FaultCode.HARDWARE), 0.0)
    h.reply(ClearFault(), 0.0)
    assert h.reply(Output(0b11), 0.0) == Ack()
    assert h.reply(ClearFault(), 0.0) == Nak(NakCode.BAD_STATE, h.seq)
    assert h.reply(Output(0), 0.0) == Ack()
    assert h.reply(ClearFault(), 0.0) == Ack()


# --- output rules ---------------------------------------------------------------------


def test_zero_start_and_mask_range() -> None:
    h = Host(long_watchdog(channels=2))
    h.hello()
    assert h.reply(setting(0, 500), 0.0) == Ack()
    assert h.reply(Output(0b01), 0.0) == Nak(NakCode.NOT_ZERO_START, h.seq)
    assert h.reply(Output(0b100), 0.0) == Nak(NakCode.OUT_OF_RANGE, h.seq)
    assert h.device.output_mask == 0
    assert h.reply(Output(0b10), 0.0) == Ack()
    assert h.reply(setting(1, 1000), 0.5) == Ack()
    assert h.reply(Output(0), 0.6) == Ack()
    assert h.device.amplitudes_ua == (500, 1000)  # disabling keeps the register
    assert h.reply(Output(0b10), 0.7) == Nak(NakCode.NOT_ZERO_START, h.seq)


def test_step_and_slew_limits_on_enabled_channel() -> None:
    h = Host(long_watchdog())
    h.hello()
    h.enable_at(0, 0, 0.0)
    assert h.reply(setting(0, 1001), 0.1) == Nak(NakCode.STEP_TOO_LARGE, h.seq)
    assert h.reply(setting(0, 1000, phase_us=300), 0.2) == Nak(NakCode.SLEW_TOO_FAST, h.seq)  # 4000*0.2=800
    assert h.device.amplitudes_ua[0] == 0
    assert h.reply(setting(0, 800), 0.2) == Ack()
    assert h.reply(setting(0, 1000), 0.2 + 0.049) == Nak(NakCode.SLEW_TOO_FAST, h.seq)  # 200 > 196
    assert h.reply(setting(0, 1000), 0.25) == Ack()
    assert h.reply(setting(0, 0), 0.25) == Ack()  # decreases are always accepted
    assert h.reply(setting(0, 400), 0.25) == Nak(NakCode.SLEW_TOO_FAST, h.seq)  # decrease did not reset
    assert h.reply(setting(1, 30000), 0.25) == Ack()  # disabled channel: no ramp rules


@pytest.mark.parametrize(
    "change",
    [
        dict(channel=4), dict(shape=3), dict(asym_ratio=0), dict(frequency_mhz=499),
        dict(frequency_mhz=200_001), dict(phase_us=0), dict(phase_us=1001), dict(interphase_us=1001),
        dict(amplitude_ua=30001), dict(amplitude_ua=20001, phase_us=1000),  # 20.001 µC per phase
        dict(frequency_mhz=200_000, phase_us=1000, interphase_us=1000, asym_ratio=4),  # 6 ms pulse, 5 ms period
        dict(burst_pulses=2, burst_rate_mhz=0), dict(burst_pulses=2, burst_rate_mhz=20_001, frequency_mhz=20_000),
        dict(burst_pulses=10, frequency_mhz=20_000, burst_rate_mhz=2_300),  # 9×50 ms + 0.45 ms > 434.8 ms
    ],
)
def test_set_channel_out_of_range(change: dict[str, int]) -> None:
    h = Host()
    h.hello()
    fields = dict(channel=0, amplitude_ua=0)
    fields.update(change)
    assert h.reply(setting(**fields), 0.0) == Nak(NakCode.OUT_OF_RANGE, 2)
    assert h.reply(setting(0, 0), 0.0) == Ack()  # the same channel, in range


def test_pulse_and_burst_fit_boundaries() -> None:
    h = Host()
    h.hello()
    # 200 Hz: 5000 µs period; 1000 + 1000 + 1000×3 = 5000 fits, 5001 does not
    assert h.reply(setting(0, frequency_mhz=200_000, phase_us=1000, interphase_us=1000, asym_ratio=3), 0.0) == Ack()
    assert h.reply(setting(0, frequency_mhz=200_000, phase_us=1000, interphase_us=1, asym_ratio=4), 0.0) == Nak(
        NakCode.OUT_OF_RANGE, h.seq)
    # monophasic: only the cathodic phase must fit
    assert h.reply(setting(0, shape=2, frequency_mhz=200_000, phase_us=1000, interphase_us=1000, asym_ratio=9),
                   0.0) == Ack()
    # bursts of 10 at 20 Hz: 9 × 50 ms + 0.45 ms = 450.45 ms; 2 Hz (500 ms) fits, 2.22 Hz (450.45 ms) fits exactly
    assert h.reply(setting(0, burst_pulses=10, frequency_mhz=20_000, burst_rate_mhz=2_000), 0.0) == Ack()
    assert h.reply(setting(0, burst_pulses=10, frequency_mhz=20_000, burst_rate_mhz=2_220), 0.0) == Ack()
    assert h.reply(setting(0, burst_pulses=10, frequency_mhz=20_000, burst_rate_mhz=2_221), 0.0) == Nak(
        NakCode.OUT_OF_RANGE, h.seq)
    assert h.reply(setting(0, burst_pulses=1, burst_rate_mhz=0), 0.0) == Ack()  # continuous: rate unused


# --- load supervision ---------------------------------------------------------------------


def test_compliance_trip_is_per_channel_not_latched_and_flagged_once() -> None:
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(2, 3000, 0.0)  # 3 mA × 1 kΩ = 3 V
    frames = h.send(SimControl(SimOp.SET_LOAD, 2, 20_001), now)  # 60.003 V > 60 V
    assert [m for _, m in frames] == [Ack(), Fault(int(now * 1000), FaultCode.COMPLIANCE, 2)]
    assert h.device.output_mask == 0 and h.device.amplitudes_ua[2] == 0 and h.device.latched_faults == 0
    first = [m for _, m in h.tick(now + 0.1) if isinstance(m, Telemetry) and m.channel == 2]
    second = [m for _, m in h.tick(now + 0.2) if isinstance(m, Telemetry) and m.channel == 2]
    assert first[0].flags == Telemetry.FLAG_COMPLIANCE_LIMITED and first[0].load_ohm == 20_001
    assert second[0].flags == 0
    assert h.reply(Output(0b100), now + 0.2) == Ack()  # not latched: zero start again


def test_compliance_checked_on_amplitude_change() -> None:
    h = Host(long_watchdog())
    h.hello()
    h.send(SimControl(SimOp.SET_LOAD, 0, 60_001), 0.0)
    now = h.enable_at(0, 0, 0.0)
    frames = h.send(setting(0, 1000), now + 0.25)  # 60.001 V
    assert [m for _, m in frames] == [Ack(), Fault(int((now + 0.25) * 1000), FaultCode.COMPLIANCE, 0)]


def test_open_circuit_trips_only_with_current() -> None:
    h = Host(long_watchdog())
    h.hello()
    h.send(SimControl(SimOp.SET_LOAD, 1, OPEN), 0.0)
    now = h.enable_at(1, 0, 0.0)
    assert h.device.output_mask == 0b10 and not h.tick(now + 0.001)
    frames = h.send(setting(1, 100), now + 0.1)
    assert [m for _, m in frames] == [Ack(), Fault(int((now + 0.1) * 1000), FaultCode.OPEN_CIRCUIT, 1)]
    assert h.device.output_mask == 0 and h.device.latched_faults == 0
    telemetry = [m for _, m in h.tick(now + 0.2) if isinstance(m, Telemetry) and m.channel == 1]
    assert telemetry[0].load_ohm == OPEN and telemetry[0].flags == 0


def test_injected_channel_faults() -> None:
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(3, 1000, 0.0)
    frames = h.send(SimControl(SimOp.INJECT_FAULT, 3, FaultCode.OPEN_CIRCUIT), now)
    assert [m for _, m in frames] == [Ack(), Fault(int(now * 1000), FaultCode.OPEN_CIRCUIT, 3)]
    assert h.device.output_mask == 0 and h.device.latched_faults == 0
    assert ("output_off", now, {"reason": "fault", "mask": 8}) in h.events


# --- telemetry and charge ---------------------------------------------------------------


def test_charge_total_against_hand_computation() -> None:
    h = Host(long_watchdog(telemetry_hz=1))
    h.hello(now=0.0)
    # ch0: continuous 10 Hz, 200 µs; ch1: bursts of 5 at 20 Hz every 0.5 s = 10 pulses/s, 100 µs
    now = h.enable_at(0, 1000, 0.0)  # 1000 µA from t=0.25
    assert now == 0.25
    h.enable_at(1, 0, now, burst_pulses=5, frequency_mhz=20_000, burst_rate_mhz=2_000, phase_us=100)
    for t in (0.5, 0.75, 1.0, 1.25):  # ch1 → 4000 µA at 1.25 s
        assert h.reply(setting(1, int((t - 0.25) * 4000), burst_pulses=5, frequency_mhz=20_000, burst_rate_mhz=2_000,
                               phase_us=100), t) == Ack()
    telemetry = {m.channel: m for _, m in h.tick(10.0) if isinstance(m, Telemetry)}
    # ch0: 1000 µA × 200 µs = 200 nC/pulse × 10/s × 9.75 s = 19500 nC
    assert telemetry[0].charge_total_uc == 19
    # ch1: 100 µs × 10/s × (1000×.25 + 2000×.25 + 3000×.25 + 4000×8.75) µA·s = 36 500 nC
    assert telemetry[1].charge_total_uc == 36
    assert telemetry[2].charge_total_uc == 0
    assert h.reply(Output(0), 10.0) == Ack()
    telemetry = {m.channel: m for _, m in h.tick(11.0) if isinstance(m, Telemetry)}
    assert (telemetry[0].charge_total_uc, telemetry[1].charge_total_uc) == (19, 36)  # nothing while disabled
    h.hello(now=11.0, seq=h.seq)
    telemetry = {m.channel: m for _, m in h.tick(12.0) if isinstance(m, Telemetry)}
    assert telemetry[0].charge_total_uc == 0  # since HELLO


def test_telemetry_cadence_and_event_counter_wrap() -> None:
    h = Host(long_watchdog())
    assert not h.tick(0.5)  # no telemetry outside a session
    h.hello(now=1.0)
    seen: list[tuple[int, Telemetry]] = []
    t = 1.0
    while t < 8.0:
        t = round(t + 0.005, 6)
        seen += [(s, m) for s, m in h.tick(t) if isinstance(m, Telemetry)]
    assert len(seen) == 70 * 4
    assert [s for s, _ in seen] == [i & 0xFF for i in range(280)]
    assert [m.channel for _, m in seen[:8]] == [0, 1, 2, 3] * 2
    assert sorted({m.device_time_ms for _, m in seen})[:3] == [1100, 1200, 1300]
    fault = h.send(Estop(), 8.0, seq=0)[1]
    assert fault[0] == 280 & 0xFF


def test_a_late_tick_sends_one_round_not_a_backlog() -> None:
    h = Host(long_watchdog())
    h.hello(now=0.0)
    assert len(h.tick(1.05)) == 4
    assert h.tick(1.09) == [] and len(h.tick(1.1)) == 4


def test_next_deadline_bounds() -> None:
    h = Host()
    assert h.device.next_deadline(0.0) == pytest.approx(0.005)
    h.hello(now=0.0)
    assert h.device.next_deadline(0.099) == pytest.approx(0.1)
    h.tick(0.2)
    assert h.device.next_deadline(0.298) == pytest.approx(0.3)
    assert h.device.next_deadline(0.25) == pytest.approx(0.255)


# --- status, reboot, bad frames -------------------------------------------------------------


def test_bad_frames_are_dropped_and_counted() -> None:
    h = Host()
    h.hello(now=0.0)
    good = encode_frame(1, Output(1))
    corrupt_crc = bytearray(good)
    corrupt_crc[2] ^= 0x40
    too_short = icd.cobs_encode(b"\x01\x02\x03") + b"\0"
    too_long = icd.cobs_encode(bytes(70)) + b"\0"
    bad_cobs = b"\x09\x01\x02\0"
    assert h.raw(bytes(corrupt_crc) + too_short + too_long + bad_cobs + b"\0\0", 0.0) == []
    assert h.device.output_mask == 0
    status = h.reply(GetStatus(), 0.0, seq=1)
    assert isinstance(status, Status) and status.rx_bad_frames == 4
    assert (status.rx_frames, status.tx_frames, status.rx_out_of_order) == (2, 1, 0)


def test_reboot_acks_then_restarts_as_from_power_on() -> None:
    h = Host(long_watchdog())
    h.send(SimControl(SimOp.SET_LOAD, 0, 2000), 0.0, seq=50)
    h.hello(now=0.0)
    now = h.enable_at(0, 1000, 0.0)
    h.send(SimControl(SimOp.INJECT_FAULT, 1, FaultCode.HARDWARE), now)
    h.reply(Output(0), now)
    assert h.reply(SimControl(SimOp.REBOOT, 0, 0), 5.0) == Ack()
    kinds = [(k, d.get("reason")) for k, _, d in h.events]
    assert ("reboot", None) in kinds
    assert not h.device.in_session and h.device.latched_faults == 0
    assert h.device.counters == {"rx_frames": 0, "rx_bad_frames": 0, "rx_out_of_order": 0, "tx_frames": 0}
    assert h.reply(Heartbeat(), 5.0) == Nak(NakCode.NO_SESSION, 0)
    h.hello(now=5.5, seq=3)
    first = h.tick(5.6)
    assert first[0][0] == 0  # event counter reset at boot
    assert first[0][1].load_ohm == 2000  # the simulated world (loads) survives a reboot
    status = h.reply(GetStatus(), 5.65)
    assert isinstance(status, Status) and status.device_time_ms == 650 and status.latched_faults == 0


def test_reboot_with_outputs_on_reports_output_off() -> None:
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(0, 1000, 0.0)
    h.send(SimControl(SimOp.REBOOT, 0, 0), now)
    assert ("output_off", now, {"reason": "reboot", "mask": 1}) in h.events
    assert h.device.output_mask == 0 and h.device.amplitudes_ua == (0, 0, 0, 0)


def test_hello_puts_the_device_in_safe_state() -> None:
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(0, 1000, 0.0)
    h.hello(now=now, seq=200)
    assert h.device.output_mask == 0 and h.device.amplitudes_ua[0] == 0
    assert ("output_off", now, {"reason": "hello", "mask": 1}) in h.events


# --- properties -----------------------------------------------------------------------------


def _packet(seq: int, type_: int, body: bytes) -> bytes:
    packet = bytes((seq, type_)) + body
    return icd.cobs_encode(packet + icd.crc16(packet).to_bytes(2, "little")) + b"\0"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_garbage_never_raises_and_never_changes_outputs(garbage: bytes) -> None:
    assume(not icd.FrameDecoder().feed(garbage + b"\0"))
    h = Host(long_watchdog())
    h.hello()
    now = h.enable_at(0, 2000, 0.0)
    before = (h.device.output_mask, h.device.amplitudes_ua, h.device.latched_faults)
    assert h.raw(garbage + b"\0", now) == []
    assert (h.device.output_mask, h.device.amplitudes_ua, h.device.latched_faults) == before


_commands = st.one_of(
    st.builds(Heartbeat), st.builds(GetStatus), st.builds(ClearFault), st.builds(Estop),
    st.builds(Hello, st.integers(0, 2)),
    st.builds(Output, st.integers(0, 0xFF)),
    st.builds(SetChannel, st.integers(0, 5), st.integers(0, 3), st.integers(0, 4), st.integers(0, 12),
              st.sampled_from([0, 499, 500, 2000, 10_000, 200_000, 200_001]), st.integers(0, 30_000),
              st.integers(0, 1100), st.integers(0, 1100), st.integers(0, 31_000)),
    st.builds(SimControl, st.integers(1, 4), st.integers(0, 5),
              st.sampled_from([0, 1, 2, 3, 4, 5, 6, 100, 70_000, OPEN])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_commands, st.none() | st.integers(0, 255), st.floats(0, 0.5)), max_size=40))
def test_random_command_streams_keep_the_safety_invariants(steps: list) -> None:
    h = Host(SimConfig(channels=3))
    now = 0.0
    for msg, seq, dt in steps:  # seq None: the host's next seq, so most commands execute
        now += dt
        if isinstance(msg, Hello):  # keep the host's seq in step with the device's expected
            seq = h.seq if seq is None else seq
            h.seq = (seq + 1) & 0xFF
        h.send(msg, now, seq=seq)
        h.tick(now)
        d = h.device
        mask, amps, latched = d.output_mask, d.amplitudes_ua, d.latched_faults
        assert mask < 1 << 3
        assert latched & ~0b101011 == 0  # only device-wide faults latch
        if latched:
            assert mask == 0
        if not d.in_session:
            assert mask == 0
        assert all(a <= 30_000 for a in amps)
