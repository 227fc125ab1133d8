"""Property tests: arbitrary call sequences never yield an unsafe approval.

A small device model applies approved commands in the order they are sent, as the ICD
describes, and checks zero start, step and ramp at every ACK.
"""

from hypothesis import given, settings, strategies as st

from safety import (JITTER_S, InterlockStateError, Interlock, Prescription, Refusal, SetChannel,
                    SetOutputs, Sensitivity, check_setting)

from .conftest import FakeClock, ListRecord, make_setup, setting

CHANNELS = (1, 2)
ops = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(CHANNELS),
              st.one_of(st.sampled_from([0, 0, 0, 100, 1000, 3000, 12_000]), st.integers(0, 12_000)),
              st.sampled_from([200.0, 200.0, 600.0]), st.sampled_from([2.0, 50.0, 150.0]), st.sampled_from([1, 3])),
    st.tuples(st.just("bump"), st.sampled_from(CHANNELS), st.integers(-2_000, 1_500)),
    st.tuples(st.just("ramp"), st.sampled_from(CHANNELS), st.integers(0, 9_000)),
    st.tuples(st.just("outputs"), st.sets(st.sampled_from(CHANNELS))),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.001, 0.05, 0.3, 1.0, 2.5, 700.0])),
    st.tuples(st.just("deliver"), st.booleans()),
    st.tuples(st.just("start"), st.sampled_from(CHANNELS)),
    st.tuples(st.just("stop")),
    st.tuples(st.just("clear")),
)


class Device:
    """Applies commands like the ICD's device and checks the dynamic rules on each ACK."""

    def __init__(self, il: Interlock, clock: FakeClock) -> None:
        self.il, self.clock = il, clock
        self.amp = {ch: 0 for ch in CHANNELS}
        self.enabled = {ch: False for ch in CHANNELS}
        self.last_inc = {ch: 0.0 for ch in CHANNELS}

    def apply(self, command) -> None:
        now = self.clock()
        if isinstance(command, SetChannel):
            s = command.setting
            ch, before = s.channel, self.amp[s.channel]
            if s.amplitude_ua > before:
                lim = self.il.limits(ch)
                delta = (s.amplitude_ua - before) / 1000
                assert self.enabled[ch], "increase on a disabled channel"
                assert delta <= lim.max_step_ma + 1e-9
                assert delta <= lim.ramp_ma_per_s * (now - self.last_inc[ch] + JITTER_S) + 1e-9
                self.last_inc[ch] = now
            self.amp[ch] = s.amplitude_ua
        elif isinstance(command, SetOutputs):
            for ch in CHANNELS:
                if ch in command.enabled and not self.enabled[ch]:
                    assert self.amp[ch] == 0, "enabled above zero"
                    self.last_inc[ch] = now
                self.enabled[ch] = ch in command.enabled

    def estop(self) -> None:
        for ch in CHANNELS:
            self.amp[ch], self.enabled[ch] = 0, False


def check_approval(il: Interlock, approved) -> None:
    cmd = approved.command
    if isinstance(cmd, SetChannel):
        lim = il.limits(cmd.setting.channel)
        assert check_setting(cmd.setting, lim).ok
        assert cmd.setting.amplitude_ma <= lim.max_amplitude_ma + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, min_size=30, max_size=80), st.sampled_from(list(Sensitivity)))
def test_no_sequence_yields_an_unsafe_approval(sequence, sensitivity):
    clock, record = FakeClock(), ListRecord()
    rx = Prescription(max_amplitude_ma={1: 8.0, 2: 5.0}, frequency_hz=(1.0, 100.0),
                      pulse_width_us=(50.0, 500.0), sensitivity=sensitivity, max_session_minutes=20)
    il = Interlock(make_setup(rx), clock=clock, record=record)
    device, queue = Device(il, clock), []

    def attempt(call):
        approved_before = record.kinds().count("approved")
        try:
            result = call()
        except (Refusal, InterlockStateError):
            assert record.kinds().count("approved") == approved_before, "refusal produced an approval"
            assert record.kinds()[-1] in ("refusal", "state_error")
            return None
        return result

    for op in sequence:
        kind = op[0]
        if kind == "set":
            _, ch, amp_ua, pw, freq, asym = op
            a = attempt(lambda: il.approve_set_channel(setting(ch, amp_ua / 1000, pulse_width_us=pw,
                                                               frequency_hz=freq, asym_ratio=asym)))
            queue += [a] if a else []
        elif kind == "bump":
            current = il.applied(op[1])[0] or setting(op[1])
            new_ua = max(0, current.amplitude_ua + op[2])
            a = attempt(lambda: il.approve_set_channel(current.with_amplitude(new_ua / 1000)))
            queue += [a] if a else []
        elif kind == "ramp":
            plan = attempt(lambda: il.ramp_plan(op[1], op[2] / 1000))
            for delay, amp in plan or []:
                clock.advance(delay)
                current = il.applied(op[1])[0]
                a = attempt(lambda: il.approve_set_channel(current.with_amplitude(amp)))
                if a is None:
                    break
                device.apply(a.consume())
                il.note_acknowledged(a)
        elif kind == "start":                 # configure at 0 mA and enable, delivered at once
            for call in (lambda: il.approve_set_channel(setting(op[1], 0.0)),
                         lambda: il.approve_outputs({op[1]} | {c for c in CHANNELS if il.applied(c)[1]})):
                a = attempt(call)
                if a is None:
                    break
                device.apply(a.consume())
                il.note_acknowledged(a)
        elif kind == "outputs":
            a = attempt(lambda: il.approve_outputs(op[1]))
            queue += [a] if a else []
        elif kind == "advance":
            clock.advance(op[1])
            for a in il.session_tick():
                queue.append(a)
        elif kind == "deliver" and queue:
            a = queue.pop(0)
            try:
                command = a.consume()
            except (Refusal, InterlockStateError):
                continue
            if op[1]:
                device.apply(command)
                il.note_acknowledged(a)
            else:
                il.note_rejected(a, "NAK")
        elif kind == "stop":
            il.stop("property test")
            device.estop()
        elif kind == "clear" and il.tripped:
            a = attempt(lambda: il.approve_clear_faults("QA"))
            if a:
                a.consume()
                il.note_acknowledged(a)
        for a in queue:
            check_approval(il, a)
        for ch in CHANNELS:
            setting_now, enabled = il.applied(ch)
            assert (setting_now.amplitude_ua if setting_now else 0) == device.amp[ch]
            assert enabled == device.enabled[ch]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8_000), st.sampled_from([0.2, 1.0, 2.0]), st.sampled_from([1, 2, 5]))
def test_ramp_plans_respect_the_rate_and_step(target_ua, ramp, asym):
    clock = FakeClock()
    rx = Prescription(max_amplitude_ma=10.0, ramp_ma_per_s=ramp, frequency_hz=(1.0, 100.0),
                      pulse_width_us=(50.0, 500.0), sensitivity=Sensitivity.HYPOSENSITIVE)
    il = Interlock(make_setup(rx), clock=clock)
    target = max(asym, target_ua // asym * asym) / 1000
    a = il.approve_set_channel(setting(1, 0.0, asym_ratio=asym, pulse_width_us=100.0))
    a.consume(), il.note_acknowledged(a)
    a = il.approve_outputs({1})
    a.consume(), il.note_acknowledged(a)
    rate = il.limits(1).ramp_ma_per_s
    level = 0.0
    for delay, amp in il.ramp_plan(1, target):
        assert amp > level and amp - level <= min(1.0, max(rate * 0.1, asym / 1000)) + 1e-9
        assert delay >= (amp - level) / rate - 1e-9
        clock.advance(delay)
        a = il.approve_set_channel(setting(1, amp, asym_ratio=asym, pulse_width_us=100.0))
        a.consume(), il.note_acknowledged(a)
        level = amp
    assert level == target
