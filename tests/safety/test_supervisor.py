import itertools

import pytest

from safety import ActionKind, ChannelReading, Refusal, Supervisor

from .conftest import send, setting, start_channel

_DEVICE_T = itertools.count(1)


def reading(channel=1, enabled=True, amplitude_ma=0.0, load_ohm=1000.0, frequency_hz=10.0, pulse_width_us=200.0,
            compliance_limited=False, t=None, charge_uc=0.0, **v2):
    """A reading whose device time advances by 0.1 s per call unless `t` is given."""
    device_t = next(_DEVICE_T) / 10 if t is None else t
    return ChannelReading(channel, device_t, enabled, compliance_limited, amplitude_ma, frequency_hz,
                          pulse_width_us, load_ohm, charge_uc, **v2)


@pytest.fixture
def running(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    return Supervisor(interlock, telemetry_hz=10.0, clock=clock)


def kinds(actions):
    return [a.kind for a in actions]


def test_matching_readings_need_nothing(running):
    assert running.on_reading(reading(amplitude_ma=1.0)) == []
    assert running.on_reading(reading(amplitude_ma=1.001)) == []          # within 1 µA
    assert running.on_reading(reading(2, enabled=False, frequency_hz=0.0, pulse_width_us=0.0)) == []


def test_stale_telemetry_estops_once(running, interlock, clock):
    clock.advance(0.29)
    running.on_reading(reading(amplitude_ma=1.0))
    running.on_reading(reading(2, enabled=False))
    clock.advance(0.49)   # three frames missing at 10 Hz, but not yet half a second
    assert running.poll() == []
    clock.advance(0.02)   # half a second without a frame
    assert kinds(running.poll()) == [ActionKind.ESTOP]
    assert running.poll() == []


def test_stale_telemetry_at_a_slow_rate_waits_for_three_frames(interlock, clock):
    supervisor = Supervisor(interlock, telemetry_hz=2.0, clock=clock)
    clock.advance(1.74)   # 3.5 periods of 0.5 s
    assert supervisor.poll() == []
    clock.advance(0.02)
    assert kinds(supervisor.poll()) == [ActionKind.ESTOP]


def test_telemetry_that_repeats_itself_is_stale(running, clock):
    """A device that keeps sending the same reading (its clock not advancing) is not reporting:
    only readings with a newer device time count as fresh."""
    frozen = reading(amplitude_ma=1.0)
    for _ in range(5):
        clock.advance(0.1)
        assert running.on_reading(frozen) == []
        running.on_reading(reading(2, enabled=False))
        assert running.poll() == []
    clock.advance(0.15)
    [action] = running.poll()
    assert action.kind is ActionKind.ESTOP and "channel 1" in action.reason


@pytest.mark.parametrize("r,text", [(reading(amplitude_ma=1.002), "amplitude"),
                                    (reading(amplitude_ma=1.0, frequency_hz=10.001), "frequency"),
                                    (reading(amplitude_ma=1.0, pulse_width_us=201.0), "phase width"),
                                    (reading(amplitude_ma=1.0, enabled=False), "off")])
def test_applied_differs_from_commanded_estops(running, interlock, r, text):
    [action] = running.on_reading(r)
    assert action.kind is ActionKind.ESTOP and text in action.reason


def test_in_flight_command_is_an_accepted_reading(running, interlock, clock):
    clock.advance(1.0)
    interlock.approve_set_channel(setting(1, 1.5)).consume()
    assert running.on_reading(reading(amplitude_ma=1.5)) == []
    assert running.on_reading(reading(amplitude_ma=1.0)) == []


@pytest.mark.parametrize("r,text", [(reading(amplitude_ma=1.0, load_ohm=None), "open"),
                                    (reading(amplitude_ma=1.0, load_ohm=99.0), "touching"),
                                    (reading(amplitude_ma=1.0, load_ohm=60_001.0), "too high"),
                                    (reading(amplitude_ma=1.0, compliance_limited=True), "too high")])
def test_load_problems_zero_the_channel_and_tell_the_clinician(running, interlock, clock, r, text):
    actions = running.on_reading(r)
    assert kinds(actions) == [ActionKind.ZERO_CHANNEL, ActionKind.NOTIFY]
    assert all(a.channel == 1 and text in a.reason for a in actions)
    assert not interlock.tripped
    clock.advance(5.0)
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 1.5))
    assert exc.value.rule == "supervision.hold"
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    send(interlock, interlock.approve_outputs(set()))
    send(interlock, interlock.approve_outputs({1}))                       # from zero again
    clock.advance(0.5)
    send(interlock, interlock.approve_set_channel(setting(1, 0.5)))


def test_load_limits_just_inside(running):
    assert running.on_reading(reading(amplitude_ma=1.0, load_ohm=100.0)) == []
    assert running.on_reading(reading(amplitude_ma=1.0, load_ohm=60_000.0)) == []


def test_channel_fault_notifies_and_device_zeroed(running, interlock):
    [action] = running.on_fault("OPEN_CIRCUIT", 1)
    assert action.kind is ActionKind.NOTIFY and "open circuit" in action.reason
    assert interlock.applied(1)[0].amplitude_ma == 0 and interlock.applied(1)[1] is False
    assert running.on_reading(reading(enabled=False)) == []


@pytest.mark.parametrize("code,channel", [("WATCHDOG", None), ("OVERCURRENT", None), ("HARDWARE", None),
                                          ("ESTOP", None), ("OVERCURRENT", 1)])
def test_device_wide_faults_stop_everything(running, interlock, code, channel):
    [action] = running.on_fault(code, channel)
    assert action.kind is ActionKind.ESTOP and code in action.reason


def test_a_channel_outside_the_session_may_not_deliver(running):
    assert kinds(running.on_reading(reading(4))) == [ActionKind.ESTOP]
    assert kinds(running.on_reading(reading(3, enabled=False, amplitude_ma=0.5))) == [ActionKind.ESTOP]
    assert running.on_reading(reading(3, enabled=False, frequency_hz=150.0, pulse_width_us=900.0)) == []


def test_registers_left_over_on_a_channel_this_session_never_configured_are_no_mismatch(running):
    """A device that keeps its registers across HELLO (ICD v1) shows the previous session's
    waveform on a channel this session has not set: off at 0 mA, it is not a mismatch."""
    leftover = dict(enabled=False, frequency_hz=100.0, pulse_width_us=500.0)
    assert running.on_reading(reading(2, **leftover)) == []
    assert running.on_reading(reading(2, **leftover, shape=1, asym_ratio=3, burst_pulses=5, interphase_us=50.0,
                                      burst_rate_hz=2.0)) == []
    assert kinds(running.on_reading(reading(2, enabled=False, amplitude_ma=0.2))) == [ActionKind.ESTOP]


def test_a_reading_that_waited_in_a_queue_is_judged_by_when_it_was_sampled(running, interlock, clock):
    def at(device_s, amplitude_ma):
        return ChannelReading(1, device_s, True, False, amplitude_ma, 10.0, 200.0, 1000.0, 0.0)

    for i in range(10):                                      # fixes the latency floor
        clock.advance(0.1)
        assert running.on_reading(at(99.0 + i / 10, 1.0)) == []
    clock.advance(0.1)
    assert running.on_reading(at(100.0, 1.0)) == []
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.5)))  # applied now (host t)
    sampled_before = at(100.0 + 0.999, 1.0)                  # taken just before the change...
    clock.advance(0.3)                                       # ...and handled 0.3 s later
    assert running.on_reading(sampled_before) == []
    assert interlock.tripped is None
    clock.advance(0.3)
    [action] = running.on_reading(at(101.6, 1.0))            # sampled after the change: a real mismatch
    assert action.kind is ActionKind.ESTOP


def test_power_on_registers_sampled_before_the_first_setting_are_no_mismatch(interlock, clock):
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    power_on = ChannelReading(1, 5.0, False, False, 0.0, 0.0, 0.0, 1000.0, 0.0)
    assert supervisor.on_reading(power_on) == []             # fixes the latency floor
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))  # the first waveform, ACKed
    clock.advance(0.05)
    assert supervisor.on_reading(ChannelReading(1, 5.04, False, False, 0.0, 0.0, 0.0, 1000.0, 0.0)) == []
    assert interlock.tripped is None


def test_one_reading_stamped_an_hour_ahead_cannot_blind_the_supervisor(interlock, clock):
    """The device-to-host clock offset came from the smallest offset ever seen, so one reading
    from the future made every later reading look old: a device ignoring a 4 -> 1 mA decrease
    went unnoticed for 5 s. Now it is caught within the usual two telemetry periods."""
    start_channel(interlock, clock)
    for level in (1.0, 2.0, 3.0, 4.0):
        clock.advance(1.0)
        send(interlock, interlock.approve_set_channel(setting(1, level)))
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    device_t = 50.0
    for _ in range(15):
        clock.advance(0.1)
        device_t += 0.1
        assert supervisor.on_reading(reading(amplitude_ma=4.0, t=device_t)) == []
    assert supervisor.on_reading(reading(amplitude_ma=4.0, t=device_t + 3600.0)) == []  # the poison
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))  # the device ignores it
    decreased_at = clock()
    actions = []
    while not actions:
        clock.advance(0.05)
        device_t += 0.05
        actions = supervisor.on_reading(reading(amplitude_ma=4.0, t=device_t))
    assert kinds(actions) == [ActionKind.ESTOP] and "amplitude" in actions[0].reason
    assert clock() - decreased_at <= 0.25


def test_the_whole_waveform_is_compared_when_the_device_reports_it(running):
    """ICD v2 telemetry carries shape, asymmetry, burst and interphase: a device bursting (or
    not) unlike the command is stopped; v1 telemetry (fields absent) is judged on what it has."""
    same = dict(amplitude_ma=1.0, shape=0, asym_ratio=1, burst_pulses=0, interphase_us=0.0, burst_rate_hz=0.0)
    assert running.on_reading(reading(**same)) == []
    for field, value in (("shape", 1), ("asym_ratio", 2), ("burst_pulses", 7), ("interphase_us", 20.0),
                         ("burst_rate_hz", 2.0)):
        [action] = running.on_reading(reading(**(same | {field: value})))
        assert action.kind is ActionKind.ESTOP and "waveform" in action.reason, field
    assert running.on_reading(reading(amplitude_ma=1.0)) == []


def charge_readings(supervisor, clock, charge_per_s, seconds, start_t=10.0, start_q=0.0, amplitude_ma=1.0):
    """Readings every 0.1 s whose charge counter grows at `charge_per_s` (floored to µC)."""
    actions = []
    for i in range(1, int(seconds * 10) + 1):
        clock.advance(0.1)
        q = start_q + charge_per_s * i / 10
        actions += supervisor.on_reading(reading(amplitude_ma=amplitude_ma, t=start_t + i / 10,
                                                 charge_uc=float(int(q))))
    return actions


def test_charge_counter_matches_the_commanded_setting(interlock, clock):
    """1 mA x 200 µs x 10 Hz = 2 µC/s: a device delivering that is not stopped, one delivering
    five times as much (a waveform nobody commanded) is, on any protocol version."""
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    clock.advance(1.0)
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    assert charge_readings(supervisor, clock, 2.0, 12.0) == []
    actions = charge_readings(supervisor, clock, 10.0, 6.0, start_t=22.0, start_q=24.0)
    assert ActionKind.ESTOP in kinds(actions)
    assert "not delivering what was commanded" in next(a.reason for a in actions if a.kind is ActionKind.ESTOP)


def test_charge_counter_that_stands_still_while_stimulating_is_stopped(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0, frequency_hz=100.0)))  # 20 µC/s
    clock.advance(1.0)
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    actions = charge_readings(supervisor, clock, 0.0, 3.0)
    assert ActionKind.ESTOP in kinds(actions)
