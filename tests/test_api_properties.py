"""Property: whatever a caller does through the host API, every frame that reaches the
transport decodes to settings inside every active limit, and a refused request sends nothing."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firmware_host as fh
from firmware_host import icd, units
from firmware_host.drivers import open_transport
from firmware_host.drivers.base import Transport
from firmware_host.link import Link
from firmware_host.stimulator import Stimulator
from safety import InterlockStateError, Refusal, SafetyError, SessionSetup, check_setting

from support import forearm_sites, prescription

pytestmark = pytest.mark.timeout(240)

OUTPUT_CHANGING = {icd.MsgType.SET_CHANNEL, icd.MsgType.OUTPUT, icd.MsgType.CLEAR_FAULT, icd.MsgType.SIM_CONTROL}


class SpyTransport(Transport):
    """Records every frame written, with the time it was written."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.frames: list[tuple[float, icd.Message]] = []
        self._decoder = icd.FrameDecoder()

    def write(self, data: bytes) -> None:
        now = time.monotonic()
        self.frames += [(now, raw.message()) for raw in self._decoder.feed(data)]
        self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        return self.inner.read(timeout)

    def discard_input(self) -> None:
        self.inner.discard_input()

    def _close(self) -> None:
        self.inner.close()

    def output_changing(self) -> int:
        return sum(1 for _, m in self.frames if m.TYPE in OUTPUT_CHANGING)


channel = st.sampled_from([1, 2, 3])  # 3 has no declared needles in this session
amplitude = st.one_of(st.integers(0, 12_000).map(lambda ua: ua / 1000), st.sampled_from([math.nan, math.inf, -1.0]))
calls = st.one_of(
    st.tuples(st.just("configure"), channel, st.sampled_from([0.2, 2, 100, 150, 250, 450, math.nan]),
              st.sampled_from([20, 50, 200, 600, 900, 5000, -1])),
    st.tuples(st.just("enable"), channel),
    st.tuples(st.just("disable"), channel),
    st.tuples(st.just("amplitude"), channel, amplitude),
    st.tuples(st.just("ramp"), channel, st.integers(0, 400).map(lambda ua: ua / 1000)),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.05, 0.2])),
    st.tuples(st.just("estop")),
    st.tuples(st.just("clear")),
)


def _call(stim: Stimulator, op: tuple) -> None:
    kind = op[0]
    if kind == "configure":
        stim.configure(op[1], frequency_hz=op[2], pulse_width_us=op[3])
    elif kind == "enable":
        stim.enable(op[1])
    elif kind == "disable":
        stim.disable(op[1])
    elif kind == "amplitude":
        stim.set_amplitude(op[1], op[2])
    elif kind == "ramp":
        stim.ramp(op[1], op[2])
    elif kind == "pause":
        time.sleep(op[1])
    elif kind == "estop":
        stim.estop()
    elif kind == "clear":
        stim.clear_faults("JD")


def _check_wire(stim: Stimulator, frames: list[tuple[float, icd.Message]]) -> None:
    """Replay the wire as the device would see it and check every rule on every frame."""
    amp_ua = {ch: 0 for ch in range(8)}
    enabled: set[int] = set()
    last_rise = {ch: 0.0 for ch in range(8)}
    for t, message in frames:
        if isinstance(message, icd.SetChannel):
            setting = units.setting_from_wire(message)
            limits = stim.interlock.limits(setting.channel)  # an undeclared channel raises here
            assert check_setting(setting, limits).ok, setting
            ch, delta_ma = message.channel, (message.amplitude_ua - amp_ua[message.channel]) / 1000
            if delta_ma > 0:
                assert message.channel in enabled, "increase on a disabled channel"
                assert delta_ma <= limits.max_step_ma + 1e-9
                assert delta_ma <= limits.ramp_ma_per_s * (t - last_rise[ch] + 0.01) + 1e-9
                last_rise[ch] = t
            amp_ua[ch] = message.amplitude_ua
        elif isinstance(message, icd.Output):
            for ch in units.channels_from_mask(message.enable_mask):
                if ch - 1 not in enabled:
                    assert amp_ua[ch - 1] == 0, "enabled above zero"
                    last_rise[ch - 1] = t
            enabled = {ch - 1 for ch in units.channels_from_mask(message.enable_mask)}
        elif isinstance(message, icd.Estop):
            amp_ua = {ch: 0 for ch in range(8)}
            enabled = set()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls, min_size=1, max_size=14))
def test_every_frame_on_the_wire_is_inside_every_limit(ops: list[tuple]) -> None:
    spy = SpyTransport(open_transport("sim://"))
    link = Link(spy)
    identity = link.open()
    setup = SessionSetup(units.device_limits(identity), prescription(max_ma=2.0), forearm_sites(1, 2))
    with Stimulator(link, setup) as stim:
        for op in ops:
            before = spy.output_changing()
            try:
                _call(stim, op)
            except (Refusal, InterlockStateError):
                assert spy.output_changing() == before, f"{op} was refused but sent something"
            except (SafetyError, fh.EstimError):
                pass  # e.g. a device NAK after a stop: the device's own layer held
    _check_wire(stim, spy.frames)
