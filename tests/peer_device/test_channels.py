"""SET_CHANNEL range checks, OUTPUT, ramp rules, load supervision, telemetry and charge (ICD §3-§5)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.peer_device.channel import Registers
from tests.peer_device.clients import ModelHost, channel_body, sim_body
from tests.peer_device.framing import Packet
from tests.peer_device.options import OPEN
from tests.peer_device.protocol import FAULT, NAK, TELEMETRY_V1, TELEMETRY_V2_TAIL, Fault, Msg, Nak, SimOp

pytestmark = pytest.mark.timeout(30)
FREE_RAMP = {"max_step_ua": 25000, "max_slew_ua_per_s": 10**7}


def code(reply: Packet) -> Nak | Msg:
    return Nak(NAK.unpack(reply.body)[0]) if reply.type == Msg.NAK else Msg(reply.type)


def session(**options: Any) -> ModelHost:
    """A session on a device whose watchdog stays out of the way (test_session covers it)."""
    host = ModelHost(**{"watchdog_ms": 60000, **options})
    host.hello()
    return host


def telemetry(host: ModelHost, channel: int) -> tuple[int, ...]:
    """The next TELEMETRY of `channel` from now on, v1 fields then (v2) the waveform fields."""
    host.inbox = [p for p in host.inbox if p.type != Msg.TELEMETRY]
    while (packet := host.wait_for(Msg.TELEMETRY)).body[4] != channel:
        pass
    v1 = TELEMETRY_V1.unpack(packet.body[:26])
    return v1 + (TELEMETRY_V2_TAIL.unpack(packet.body[26:]) if len(packet.body) == 36 else ())


def faults(host: ModelHost) -> list[tuple[int, int]]:
    return [FAULT.unpack(p.body)[1:] for p in host.inbox if p.type == Msg.FAULT]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"channel": 2}, Nak.OUT_OF_RANGE),
        ({"shape": 3}, Nak.OUT_OF_RANGE),
        ({"asym_ratio": 0}, Nak.OUT_OF_RANGE),
        ({"asym_ratio": 0, "shape": 2}, Msg.ACK),
        ({"frequency_mhz": 999}, Nak.OUT_OF_RANGE),
        ({"frequency_mhz": 1000}, Msg.ACK),
        ({"frequency_mhz": 150001}, Nak.OUT_OF_RANGE),
        ({"phase_us": 501}, Nak.OUT_OF_RANGE),
        ({"interphase_us": 501}, Nak.OUT_OF_RANGE),
        ({"phase_us": 500, "interphase_us": 500}, Msg.ACK),
        ({"amplitude_ua": 25001, "phase_us": 100}, Nak.OUT_OF_RANGE),
        ({"amplitude_ua": 20000, "phase_us": 500}, Msg.ACK),  # exactly max_phase_charge_nc
        ({"amplitude_ua": 20001, "phase_us": 500}, Nak.OUT_OF_RANGE),
        ({"burst_pulses": 3, "frequency_mhz": 6000, "burst_rate_mhz": 2000}, Msg.ACK),  # just fits
        ({"burst_pulses": 3, "frequency_mhz": 6000, "burst_rate_mhz": 2001}, Nak.OUT_OF_RANGE),
        ({"burst_pulses": 2, "frequency_mhz": 10000, "burst_rate_mhz": 999}, Nak.OUT_OF_RANGE),
        ({"burst_pulses": 1, "burst_rate_mhz": 0}, Msg.ACK),  # continuous: burst rate unused
    ],
)
def test_set_channel_range_checks(fields: dict[str, int], expected: Nak | Msg) -> None:
    assert code(session().request(Msg.SET_CHANNEL, channel_body(**fields))) == expected


def test_set_channel_bad_length() -> None:
    assert code(session().request(Msg.SET_CHANNEL, channel_body()[:-1])) == Nak.BAD_LENGTH


def test_output_zero_start_and_mask_range() -> None:
    host = session()
    assert code(host.request(Msg.OUTPUT, b"\x04")) == Nak.OUT_OF_RANGE
    host.request(Msg.SET_CHANNEL, channel_body(channel=1, amplitude_ua=100))
    assert code(host.request(Msg.OUTPUT, b"\x03")) == Nak.NOT_ZERO_START
    assert telemetry(host, 0)[2] == 0  # flags: nothing was enabled
    assert code(host.request(Msg.OUTPUT, b"\x01")) == Msg.ACK


@pytest.mark.parametrize(("mode", "re_enable"), [("zero", Msg.ACK), ("keep", Nak.NOT_ZERO_START)])
def test_output_off_amplitude_modes(mode: str, re_enable: Nak | Msg) -> None:
    host = session(output_off_amplitude=mode, **FREE_RAMP)
    host.request(Msg.OUTPUT, b"\x01")
    host.advance(0.1)
    host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=300))
    host.request(Msg.OUTPUT, b"\x00")
    assert host.events[-1] == {**host.events[-1], "event": "output_off", "cause": "OUTPUT"}
    assert code(host.request(Msg.OUTPUT, b"\x01")) == re_enable


def test_step_and_slew_limits_on_an_enabled_channel() -> None:
    host = session()  # max_step 500 µA, max_slew 2500 µA/s
    assert code(host.request(Msg.SET_CHANNEL, channel_body(channel=1, amplitude_ua=20000, phase_us=100))) == Msg.ACK
    host.request(Msg.SET_CHANNEL, channel_body(channel=1, amplitude_ua=0))
    host.request(Msg.OUTPUT, b"\x01")
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=100))) == Nak.SLEW_TOO_FAST
    host.advance(0.199)
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=500))) == Msg.ACK  # 500 µA in 0.2 s
    host.advance(0.5)
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=1001))) == Nak.STEP_TOO_LARGE
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=1000))) == Msg.ACK
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=1100))) == Nak.SLEW_TOO_FAST
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=10))) == Msg.ACK  # decreases always
    assert telemetry(host, 0)[4] == 10


def test_compliance_trips_the_channel_without_latching() -> None:
    host = session(**FREE_RAMP)  # 2000 ohm, 45000 mV: at most 22500 µA
    host.request(Msg.OUTPUT, b"\x03")
    host.advance(0.1)
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=22500, phase_us=100))) == Msg.ACK
    assert faults(host) == []
    assert code(host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=22501, phase_us=100))) == Msg.ACK
    assert faults(host) == [(Fault.COMPLIANCE, 0)]
    t0 = telemetry(host, 0)
    assert (t0[2], t0[3], t0[4]) == (0, 0, 0)  # disabled, nothing latched, amplitude 0
    assert telemetry(host, 1)[2] == 1  # the other channel carries on
    assert code(host.request(Msg.OUTPUT, b"\x03")) == Msg.ACK


def test_load_changes_trip_enabled_channels() -> None:
    host = session(**FREE_RAMP)
    host.request(Msg.OUTPUT, b"\x03")
    host.advance(0.1)
    host.request(Msg.SET_CHANNEL, channel_body(channel=1, amplitude_ua=5000, phase_us=100))
    host.request(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 1, 10000))  # 50 V > 45 V
    host.request(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 0, OPEN))
    assert faults(host) == [(Fault.COMPLIANCE, 1), (Fault.OPEN_CIRCUIT, 0)]
    assert telemetry(host, 0)[7] == OPEN
    host.request(Msg.SIM_CONTROL, sim_body(SimOp.INJECT_FAULT, 1, Fault.OPEN_CIRCUIT))
    assert faults(host)[-1] == (Fault.OPEN_CIRCUIT, 1)
    assert telemetry(host, 1)[3] == 0  # latched_faults


def test_open_circuit_modes() -> None:
    host = session(load_ohm="open,2000", open_circuit="driving", **FREE_RAMP)
    host.request(Msg.OUTPUT, b"\x01")
    assert faults(host) == []  # nothing to detect at 0 µA
    host.advance(0.1)
    host.request(Msg.SET_CHANNEL, channel_body(amplitude_ua=10))
    assert faults(host) == [(Fault.OPEN_CIRCUIT, 0)]
    host = session(load_ohm="open,2000")
    assert code(host.request(Msg.OUTPUT, b"\x01")) == Msg.ACK
    assert faults(host) == [(Fault.OPEN_CIRCUIT, 0)]


def test_fault_is_sent_before_the_reply_that_caused_it() -> None:
    host = session(**FREE_RAMP)
    host.request(Msg.OUTPUT, b"\x01")
    host.inbox.clear()
    host.send(Msg.SIM_CONTROL, sim_body(SimOp.SET_LOAD, 0, OPEN))
    host.advance(0.003)
    assert [p.type for p in host.inbox if p.type != Msg.TELEMETRY] == [Msg.FAULT, Msg.ACK]


def test_telemetry_v2_carries_the_waveform_and_v1_does_not() -> None:
    host = session()
    body = dict(channel=1, shape=1, asym_ratio=4, burst_pulses=5, frequency_mhz=100000,
                burst_rate_mhz=2000, phase_us=300, interphase_us=70, amplitude_ua=1234)  # fmt: skip
    host.request(Msg.SET_CHANNEL, channel_body(**body))
    fields = telemetry(host, 1)
    assert fields[4:7] == (1234, 100000, 300)
    assert fields[9:] == (1, 4, 5, 0, 70, 2000)
    host = ModelHost()
    host.hello(1)
    assert len(telemetry(host, 0)) == 9


@pytest.mark.parametrize(("schedule", "gap_ms"), [("spread", 25), ("burst", 0)])
def test_telemetry_rate_and_schedule(schedule: str, gap_ms: int) -> None:
    host = session(telemetry_schedule=schedule, event_counter_start=250)
    host.advance(1.0)
    packets = [p for p in host.inbox if p.type == Msg.TELEMETRY]
    assert len(packets) == 40  # 20 Hz, 2 channels
    assert [p.seq for p in packets[:8]] == [250, 251, 252, 253, 254, 255, 0, 1]
    times = {p.body[4]: TELEMETRY_V1.unpack(p.body[:26])[0] for p in packets[-2:]}
    assert abs(times[1] - times[0]) == gap_ms


def test_pulse_counting() -> None:
    continuous = Registers(frequency_mhz=2000)
    assert [continuous.pulses_before(us) for us in (0, 1, 500_000, 500_001, 1_000_000)] == [0, 1, 1, 2, 2]
    bursts = Registers(frequency_mhz=100_000, burst_pulses=3, burst_rate_mhz=2000)
    assert [bursts.pulses_before(us) for us in (1, 10_001, 30_000, 500_000, 500_001, 1_000_000)] == [1, 2, 3, 3, 4, 6]


def test_charge_total_counts_cathodic_charge_since_hello() -> None:
    host = session(**FREE_RAMP)
    host.request(Msg.SET_CHANNEL, channel_body(frequency_mhz=10000, phase_us=400))
    host.request(Msg.OUTPUT, b"\x01")
    host.advance(0.05)
    host.request(Msg.SET_CHANNEL, channel_body(frequency_mhz=10000, phase_us=400, amplitude_ua=2500))  # 1 µC/pulse
    host.advance(1.0)
    assert telemetry(host, 0)[8] in (10, 11)  # pulses at 0.1 s .. about 1.05 s after enabling
    host.hello()
    assert telemetry(host, 0)[8] == 0
