import pytest

from safety import (ClearFaults, InterlockStateError, Interlock, Needle, Patient, Prescription, Refusal, SetChannel,
                    SetOutputs)
from safety.dynamic import JITTER_S
from safety.interlock import SIM_REBOOT

from .conftest import SLOW_DEVICE, ListRecord, make_setup, send, setting, start_channel


def test_first_increase_must_wait_for_the_ramp(interlock, clock):
    start_channel(interlock, clock)
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 0.1))
    assert exc.value.rule == "prescription.ramp_rate" and exc.value.channel == 1
    clock.advance(0.1)
    assert isinstance(send(interlock, interlock.approve_set_channel(setting(1, 0.1))), SetChannel)


def test_ramp_rate_is_measured_from_the_last_acknowledged_increase(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(0.5)
    send(interlock, interlock.approve_set_channel(setting(1, 0.5)))
    clock.advance(0.2)
    with pytest.raises(Refusal):
        interlock.approve_set_channel(setting(1, 0.5 + 0.2 + 2 * JITTER_S))
    interlock.approve_set_channel(setting(1, 0.7))   # 0.2 mA after 0.2 s


def test_one_increase_in_flight_per_channel(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    interlock.approve_set_channel(setting(1, 0.4))
    clock.advance(1.0)
    with pytest.raises(InterlockStateError):
        interlock.approve_set_channel(setting(1, 0.8))
    interlock.approve_set_channel(setting(1, 0.0))   # a decrease is still approved at once


def test_step_limit_and_device_ramp():
    fast = Prescription(max_amplitude_ma=10.0, ramp_ma_per_s=2.0, frequency_hz=(1.0, 100.0),
                        pulse_width_us=(50.0, 500.0))
    from .conftest import FakeClock
    clock = FakeClock()
    il = Interlock(make_setup(fast, device=SLOW_DEVICE), clock=clock)
    start_channel(il, clock)
    clock.advance(0.1)
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 0.5))        # 0.5 mA in 0.1 s > 0.8 x 2 mA/s
    assert exc.value.rule == "device.ramp_rate"
    clock.advance(1.0)
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 1.001))      # step above 1 mA
    assert exc.value.rule == "device.max_step"
    send(il, il.approve_set_channel(setting(1, 1.0)))


def test_decreases_are_immediate(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    send(interlock, interlock.approve_set_channel(setting(1, 0.3)))
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    assert interlock.applied(1)[0].amplitude_ma == 0


def test_zero_start(interlock, clock):
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 1.0))     # disabled channel
    assert exc.value.rule == "dynamic.zero_start"
    with pytest.raises(Refusal) as exc:
        interlock.approve_outputs({1})                     # nothing configured yet
    assert exc.value.rule == "dynamic.not_configured"
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    send(interlock, interlock.approve_outputs({1}))
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    send(interlock, interlock.approve_outputs(set()))
    with pytest.raises(Refusal) as exc:
        interlock.approve_outputs({1})                     # still at 1 mA
    assert exc.value.rule == "dynamic.zero_start"


def test_waveform_change_while_stimulating_is_checked_not_blocked(interlock, clock):
    """Dense-disperse switches phase width at a constant amplitude; once the wider phase was
    delivered at that level, switching back and forth needs no ramp; static rules still hold."""
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0, pulse_width_us=300.0)))
    assert interlock.applied(1)[0].pulse_width_us == 300.0
    for width in (200.0, 300.0, 200.0, 300.0):
        send(interlock, interlock.approve_set_channel(setting(1, 1.0, pulse_width_us=width)))
    with pytest.raises(Refusal):
        interlock.approve_set_channel(setting(1, 1.0, pulse_width_us=5000.0))


def test_static_refusal_is_recorded_and_nothing_approved(interlock, record):
    before = len(interlock._outstanding)
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 0.0, frequency_hz=150.0))
    assert exc.value.rule == "prescription.frequency_max"
    assert record.kinds()[-1] == "refusal" and record.entries[-1][1]["rule"] == "prescription.frequency_max"
    assert len(interlock._outstanding) == before


def test_undeclared_channel_refused(interlock):
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(3, 0.0))
    assert exc.value.rule == "setup.channel"
    with pytest.raises(Refusal):
        interlock.approve_outputs({4})


def test_placement_refusal_at_setup_is_recorded():
    record = ListRecord()
    with pytest.raises(Refusal) as exc:
        Interlock(make_setup(patient=Patient(implanted_device=True)), record=record)
    assert exc.value.rule == "placement.implanted_device"
    assert "refusal" in record.kinds()


def test_ramp_plan_follows_the_rate_and_reaches_target(interlock, clock):
    start_channel(interlock, clock)
    plan = interlock.ramp_plan(1, 2.5)
    assert plan[-1][1] == 2.5
    level = 0.0
    for delay, amp in plan:
        assert amp - level <= 1.0 + 1e-12
        assert amp - level <= 1.0 * max(delay, 1e-12) + 1e-9 or delay == pytest.approx((amp - level) / 1.0)
        clock.advance(delay)
        send(interlock, interlock.approve_set_channel(setting(1, amp)))
        level = amp
    assert interlock.applied(1)[0].amplitude_ma == 2.5
    assert interlock.ramp_plan(1, 1.0) == [(0.0, 1.0)]


def test_ramp_plan_refuses_target_above_limits(interlock, clock):
    start_channel(interlock, clock)
    with pytest.raises(Refusal) as exc:
        interlock.ramp_plan(1, 9.0)
    assert exc.value.rule == "prescription.amplitude_max"


def test_ramp_plan_keeps_asymmetric_steps_balanced(interlock, clock):
    start_channel(interlock, clock, asym_ratio=4)
    plan = interlock.ramp_plan(1, 0.5)
    assert all(round(a * 1000) % 4 == 0 for _, a in plan)


def test_session_timer_ramp_down_and_stop(interlock, clock):
    assert interlock.session_remaining_s() == 30 * 60 and interlock.session_tick() == []
    start_channel(interlock, clock)
    for amp in (1.0, 2.0):
        clock.advance(1.0)
        send(interlock, interlock.approve_set_channel(setting(1, amp)))
    clock.advance(interlock.session_remaining_s() - 1.0)   # 1 s left at 1 mA/s: ceiling 1 mA
    [down] = interlock.session_tick()
    assert down.command.setting.amplitude_ma == 1.0
    send(interlock, down)
    clock.advance(0.5)
    [down] = interlock.session_tick()
    assert down.command.setting.amplitude_ma == 0.5
    send(interlock, down)
    clock.advance(0.6)
    assert interlock.session_expired()
    approvals = interlock.session_tick()
    assert [type(a.command) for a in approvals] == [SetChannel, SetOutputs]
    assert approvals[0].command.setting.amplitude_ma == 0 and approvals[1].command.enabled == frozenset()
    for a in approvals:
        send(interlock, a)
    assert interlock.session_tick() == []
    with pytest.raises(Refusal) as exc:
        interlock.approve_outputs({1})
    assert exc.value.rule == "session.expired"


def test_increase_refused_after_session_end(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(30 * 60 + 1)
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 0.5))
    assert exc.value.rule == "session.expired"


def test_stop_latches_until_a_person_clears_it(interlock, clock, record):
    start_channel(interlock, clock)
    clock.advance(1.0)
    pending = interlock.approve_set_channel(setting(1, 0.5))
    interlock.stop("test stop")
    assert interlock.tripped == "test stop" and interlock.applied(1) == (setting(1, 0.0), False)
    with pytest.raises(InterlockStateError):
        pending.consume()                                # void after a stop
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    with pytest.raises(InterlockStateError):
        interlock.approve_outputs({1})
    with pytest.raises(Refusal) as exc:
        interlock.approve_clear_faults("  ")
    assert exc.value.rule == "clear.operator"
    clear = interlock.approve_clear_faults("J.D.")
    assert clear.command == ClearFaults("J.D.")
    assert interlock.tripped                             # only the ACK clears it
    send(interlock, clear)
    assert interlock.tripped is None
    with pytest.raises(InterlockStateError):
        interlock.approve_clear_faults("JD")            # nothing to clear
    assert "stop" in record.kinds() and "cleared" in record.kinds()


def test_clear_needs_outputs_off(interlock, clock):
    interlock.stop("x")
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    interlock._channels[1].enabled = True                # device still reports the output on
    with pytest.raises(InterlockStateError):
        interlock.approve_clear_faults("JD")


def test_nak_leaves_the_applied_view_unchanged(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    a = interlock.approve_set_channel(setting(1, 0.5))
    a.consume()
    interlock.note_rejected(a, "SLEW_TOO_FAST")
    assert interlock.applied(1)[0].amplitude_ma == 0
    interlock.approve_set_channel(setting(1, 0.5))      # no longer in flight


def test_ack_needs_a_consumed_approval_and_late_acks_are_ignored(interlock, clock):
    a = interlock.approve_set_channel(setting(1, 0.0))
    with pytest.raises(InterlockStateError):
        interlock.note_acknowledged(a)
    a.consume()
    interlock.stop("x")
    interlock.note_acknowledged(a)                       # sent before the stop: ignored
    assert interlock.applied(1) == (None, False)


def test_sim_reboot_trips(interlock):
    send(interlock, interlock.approve_sim_control(SIM_REBOOT, 0, 0))
    assert interlock.tripped == "simulated device rebooted"
    send(interlock, interlock.approve_sim_control(1, 1, 500))   # SET_LOAD: approved, recorded


def test_applied_doses_fold_repeated_states(interlock, clock):
    start_channel(interlock, clock)
    for _ in range(50):  # dense-disperse style: two states again and again
        for pw in (200.0, 300.0):
            clock.advance(1.0)
            send(interlock, interlock.approve_set_channel(setting(1, 1.0, pulse_width_us=pw)))
    doses = [d for d in interlock.applied_doses() if d.channel == 1 and d.enabled and d.setting.amplitude_ma == 1.0]
    assert sorted(d.setting.pulse_width_us for d in doses) == [200.0, 300.0]
    assert sum(d.seconds for d in doses) == pytest.approx(99.0)  # the first 1 mA step began at t=1
    assert len(interlock._history._recent[1]) < 10  # noqa: SLF001 - only the last seconds are kept


def test_shannon_warning_travels_with_the_approval(interlock, clock, record):
    start_channel(interlock, clock, pulse_width_us=500.0)
    for amp in (1.0, 2.0, 3.0, 3.9):                     # 3.9 mA x 500 µs = 1.95 µC: k = 1.51
        clock.advance(1.0)
        a = interlock.approve_set_channel(setting(1, amp, pulse_width_us=500.0))
        send(interlock, a)
    assert len(a.warnings) == 1 and "k=1.51" in a.warnings[0]
    assert record.kinds().count("warning") == 1


def test_increase_counts_from_the_lowest_level_in_flight(interlock, clock):
    """2 mA -> 0.1 mA -> 2 mA, both still in flight: delivered in order, the second is a
    1.9 mA jump, so it must pass the step and ramp rules although 2 mA was applied."""
    start_channel(interlock, clock)
    for level in (1.0, 2.0):
        clock.advance(1.0)
        send(interlock, interlock.approve_set_channel(setting(1, level)))
    clock.advance(1.0)
    interlock.approve_set_channel(setting(1, 0.1))          # approved, not yet delivered
    with pytest.raises((Refusal, InterlockStateError)):
        interlock.approve_set_channel(setting(1, 2.0))


def test_gentle_ramp_down_steps_at_the_ramp_rate(interlock, clock):
    start_channel(interlock, clock)
    for level in (1.0, 2.0):
        clock.advance(1.0)
        send(interlock, interlock.approve_set_channel(setting(1, level)))
    assert interlock.ramp_plan(1, 0.0) == [(0.0, 0.0)]
    plan = interlock.ramp_plan(1, 0.0, gentle_down=True)
    levels = [amp for _, amp in plan]
    assert levels == sorted(levels, reverse=True) and levels[-1] == 0.0 and levels[0] < 2.0
    rate = interlock.limits(1).ramp_ma_per_s
    steps = [a - b for a, b in zip([2.0] + levels, levels)]
    for (wait, _), step in zip(plan[1:], steps[1:]):
        assert wait == pytest.approx(step / rate)


# --- an increase is an increase, whatever field carries it --------------------------------

WIDE_RX = Prescription(max_amplitude_ma=10.0, frequency_hz=(1.0, 200.0), pulse_width_us=(50.0, 1000.0),
                       sensitivity="hyposensitive")
BIG_NEEDLES = {1: Needle(0.3, 30.0), 2: Needle(0.3, 30.0)}


def raised_to(il, clock, level_ma, **waveform):
    """Enable channel 1 on `waveform` and ramp it to `level_ma` at the ramp rate."""
    start_channel(il, clock, **waveform)
    level = 0.0
    while level < level_ma:
        clock.advance(1.0)
        level = min(level_ma, level + 1.0)
        send(il, il.approve_set_channel(setting(1, level, **waveform)))


def test_a_wider_phase_at_the_same_current_is_an_increase_in_threshold_multiples(clock):
    """Issue 19: 10 mA at 50 µs could jump to 10 mA at 200 µs in one frame, below a session-wide
    charge ceiling set on another waveform: 1.43 -> 4.0 x rheobase by the Weiss model. Judged in
    strength it is a 6.4 mA rise at 200 µs: refused, with the amplitude the wider phase may start at."""
    il = Interlock(make_setup(WIDE_RX, needles=BIG_NEEDLES), clock=clock)
    raised_to(il, clock, 3.0, frequency_hz=2.0, pulse_width_us=960.0)   # a high charge ceiling first
    send(il, il.approve_set_channel(setting(1, 0.0, frequency_hz=2.0, pulse_width_us=50.0)))
    raised_to(il, clock, 10.0, frequency_hz=2.0, pulse_width_us=50.0)
    clock.advance(10.0)
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 10.0, frequency_hz=2.0, pulse_width_us=200.0))
    assert exc.value.rule == "dynamic.intensity_step" and exc.value.detail == "strength"
    assert "strength" in str(exc.value) and "start this waveform at" in str(exc.value)
    highest = il.highest_amplitude_now(setting(1, 10.0, frequency_hz=2.0, pulse_width_us=200.0))
    assert 6.7 <= highest <= 6.72       # the strength already delivered (2.29, 5.71 mA at 200 µs) plus one 1 mA step
    send(il, il.approve_set_channel(setting(1, highest, frequency_hz=2.0, pulse_width_us=200.0)))


def test_a_waveform_change_that_raises_charge_or_rms_is_an_increase(clock):
    """At 3 mA, 2 Hz / 50 µs -> 200 Hz / 960 µs (19x the charge per phase, 44x the r.m.s.)
    was accepted in one step. It is an increase like ~3 mA: refused, with the way to ramp it."""
    il = Interlock(make_setup(WIDE_RX, needles=BIG_NEEDLES), clock=clock)
    raised_to(il, clock, 3.0, frequency_hz=2.0, pulse_width_us=50.0)
    clock.advance(10.0)
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 3.0, frequency_hz=200.0, pulse_width_us=960.0))
    assert exc.value.rule == "dynamic.intensity_step" and exc.value.detail in ("strength", "rms_current")
    assert "start this waveform at" in str(exc.value) and "ramp" in str(exc.value)
    highest = il.highest_amplitude_now(setting(1, 3.0, frequency_hz=200.0, pulse_width_us=960.0))
    assert 0 < highest < 1.1
    send(il, il.approve_set_channel(setting(1, highest, frequency_hz=200.0, pulse_width_us=960.0)))
    with pytest.raises(Refusal) as exc:   # and from there it ramps like any amplitude
        il.approve_set_channel(setting(1, highest + 0.5, frequency_hz=200.0, pulse_width_us=960.0))
    assert exc.value.rule in ("device.ramp_rate", "prescription.ramp_rate", "dynamic.intensity_ramp")


def test_dense_disperse_alternation_needs_no_ramp_once_both_were_delivered(clock):
    """Alternating between states the patient has already received at that level stays free."""
    il = Interlock(make_setup(WIDE_RX, needles=BIG_NEEDLES), clock=clock)
    disperse, dense = dict(frequency_hz=2.0, pulse_width_us=600.0), dict(frequency_hz=100.0, pulse_width_us=200.0)
    raised_to(il, clock, 2.0, **disperse)
    clock.advance(3.0)
    level = il.highest_amplitude_now(setting(1, 2.0, **dense))
    while level < 2.0:  # the first time, dense is ramped up to the level
        send(il, il.approve_set_channel(setting(1, level, **dense)))
        clock.advance(0.1)
        level = min(2.0, il.highest_amplitude_now(setting(1, 2.0, **dense)))
    send(il, il.approve_set_channel(setting(1, 2.0, **dense)))
    for _ in range(10):  # from then on, back and forth at once
        send(il, il.approve_set_channel(setting(1, 2.0, **disperse)))
        send(il, il.approve_set_channel(setting(1, 2.0, **dense)))


def test_the_jitter_allowance_does_not_accumulate(clock):
    """Steps every 3 ms each got 5 ms of jitter allowance: 8/3 of the prescribed rate. The
    allowance is now granted once, so the total rise stays within rate x (time + one allowance)."""
    il = Interlock(make_setup(), clock=clock)
    start_channel(il, clock)
    started, level_ua = clock(), 0
    rate = il.limits(1).ramp_ma_per_s
    step_ua = int(rate * (0.003 + JITTER_S) * 1000)  # what the old rule allowed every 3 ms
    for _ in range(200):
        clock.advance(0.003)
        try:
            send(il, il.approve_set_channel(setting(1, (level_ua + step_ua) / 1000)))
            level_ua += step_ua
        except Refusal:
            pass
    assert level_ua > 0
    assert level_ua / 1000 <= rate * (clock() - started + JITTER_S) + 1e-6


def test_zero_start_holds_while_a_disable_is_still_in_flight(interlock, clock):
    """Disable (not yet ACKed), then enable: the channel may be off when the enable arrives,
    so it is a re-enable and must start from 0 mA (it was approved at 1 mA)."""
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    disable = interlock.approve_outputs(set())
    disable.consume()                                     # on the wire, no ACK yet
    with pytest.raises(Refusal) as exc:
        interlock.approve_outputs({1})
    assert exc.value.rule == "dynamic.zero_start"


def test_approvals_reach_the_device_in_the_order_they_were_given(interlock, clock):
    """Found by the property test: an approval that was no increase when given (1 mA again)
    became a 0 -> 1 mA jump when sent after a later decrease to 0 had been applied. An
    approval given before one already sent is void."""
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    again = interlock.approve_set_channel(setting(1, 1.0))        # no increase: approved
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))  # a later decrease, applied first
    with pytest.raises(InterlockStateError, match="void"):
        again.consume()
    assert interlock.applied(1)[0].amplitude_ma == 0.0
