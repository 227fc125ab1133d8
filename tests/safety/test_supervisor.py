import pytest

from safety import ActionKind, ChannelReading, Refusal, Supervisor

from .conftest import send, setting, start_channel


def reading(channel=1, enabled=True, amplitude_ma=0.0, load_ohm=1000.0, frequency_hz=10.0, pulse_width_us=200.0,
            compliance_limited=False):
    return ChannelReading(channel, 0.0, enabled, compliance_limited, amplitude_ma, frequency_hz, pulse_width_us,
                          load_ohm, 0.0)


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
    clock.advance(0.34)   # three frames due, the third only just: not yet missed
    assert running.poll() == []
    clock.advance(0.02)   # 3.6 periods without a frame: three are missing
    assert kinds(running.poll()) == [ActionKind.ESTOP]
    assert interlock.tripped and running.poll() == []


@pytest.mark.parametrize("r,text", [(reading(amplitude_ma=1.002), "amplitude"),
                                    (reading(amplitude_ma=1.0, frequency_hz=10.001), "frequency"),
                                    (reading(amplitude_ma=1.0, pulse_width_us=201.0), "phase width"),
                                    (reading(amplitude_ma=1.0, enabled=False), "off")])
def test_applied_differs_from_commanded_estops(running, interlock, r, text):
    [action] = running.on_reading(r)
    assert action.kind is ActionKind.ESTOP and text in action.reason
    assert interlock.tripped


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
    assert interlock.tripped
    from safety import InterlockStateError
    with pytest.raises(InterlockStateError):
        interlock.approve_outputs({1, 2})


def test_reading_for_unknown_channel_estops(running):
    assert kinds(running.on_reading(reading(4))) == [ActionKind.ESTOP]


def test_a_reading_that_waited_in_a_queue_is_judged_by_when_it_was_sampled(running, interlock, clock):
    def at(device_s, amplitude_ma):
        return ChannelReading(1, device_s, True, False, amplitude_ma, 10.0, 200.0, 1000.0, 0.0)

    assert running.on_reading(at(100.0, 1.0)) == []          # fixes the latency floor
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.5)))  # applied now (host t)
    sampled_before = at(100.0 + 0.999, 1.0)                  # taken just before the change...
    clock.advance(1.0)                                       # ...and handled a whole second later
    assert running.on_reading(sampled_before) == []
    assert interlock.tripped is None
    clock.advance(0.1)
    [action] = running.on_reading(at(102.1, 1.0))            # sampled after the change: a real mismatch
    assert action.kind is ActionKind.ESTOP


def test_power_on_registers_sampled_before_the_first_setting_are_no_mismatch(interlock, clock):
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    power_on = ChannelReading(1, 5.0, False, False, 0.0, 0.0, 0.0, 1000.0, 0.0)
    assert supervisor.on_reading(power_on) == []             # fixes the latency floor
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))  # the first waveform, ACKed
    clock.advance(0.05)
    assert supervisor.on_reading(ChannelReading(1, 5.04, False, False, 0.0, 0.0, 0.0, 1000.0, 0.0)) == []
    assert interlock.tripped is None
