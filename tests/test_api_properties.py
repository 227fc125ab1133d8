"""Property: whatever a caller does through the host API, interleaved with whatever goes
wrong around it (the record's disk filling up, a subscriber that stalls, telemetry that
stops arriving, faults the device raises), every frame that reaches the transport decodes
to settings inside every active limit, a refused request sends nothing, and after any stop
the device's outputs are off within one telemetry period."""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firmware_host as fh
from firmware_host import icd, units
from firmware_host.drivers.faulty import FaultyTransport
from firmware_host.drivers.socket_pair import SocketTransport
from firmware_host.link import Link
from firmware_host.sim import SimConfig, start_in_process
from firmware_host.stimulator import Stimulator
from firmware_host.waveforms import Mechanism, ProgramError
from safety import (ChannelThresholds, Envelope, InterlockStateError, Refusal, SafetyError, Screening, SessionSetup, Shape,
                    ThresholdError, TitrationWaveform, TreatmentRecord, check_setting)
from safety.screening import Question

from support import BENCH, SpyTransport, forearm_sites, prescription

pytestmark = pytest.mark.timeout(240)



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
MISHAPS = {"record_fails", "stall_subscriber", "telemetry_stall", "fault"}
mishaps = st.one_of(
    st.tuples(st.just("record_fails")),
    st.tuples(st.just("stall_subscriber"), st.sampled_from([0.3, 2.0])),
    st.tuples(st.just("telemetry_stall"), st.sampled_from([0.15, 0.6])),
    st.tuples(st.just("fault"), st.sampled_from([icd.FaultCode.OVERCURRENT, icd.FaultCode.OPEN_CIRCUIT]),
              st.sampled_from([1, 2])),
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


class Rig:
    """The in-process device (inspectable) behind the fault proxy and the spy."""

    def __init__(self, tmp: Path) -> None:
        sock, self.stop_device, self.device = start_in_process(SimConfig())
        self.device_offs: list[float] = []
        self.device.on_event = lambda kind, now, detail: self.device_offs.append(now) if kind == "output_off" else None
        self.faulty = FaultyTransport(SocketTransport("sim://", sock, on_close=self.stop_device))
        self.spy = SpyTransport(self.faulty)
        self.record = TreatmentRecord(tmp / "session.jsonl")
        self.release = threading.Event()

    def mishap(self, stim: Stimulator, op: tuple) -> None:
        kind = op[0]
        if kind == "record_fails":
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self.record._fd)  # noqa: SLF001 - the disk is full from now on
            os.close(full)
        elif kind == "stall_subscriber":
            stim.subscribe(lambda event: self.release.wait(op[1]))
        elif kind == "telemetry_stall":
            self.faulty._rx.plan.blackout = True  # noqa: SLF001 - nothing arrives from the device
            time.sleep(op[1])
            self.faulty._rx.plan.blackout = False  # noqa: SLF001
        elif kind == "fault":
            stim.sim_control(icd.SimOp.INJECT_FAULT, op[2], op[1])

    def assert_off_after_every_stop(self, stim: Stimulator) -> None:
        """Each ESTOP on the wire met outputs that were off, or turned off, within one period;
        a stopped session's device has every output off."""
        period = 1 / stim.identity.telemetry_hz
        for t, message in self.spy.frames:
            if isinstance(message, icd.Estop):
                assert any(t - period <= off <= t + period for off in self.device_offs) \
                    or self.device.output_mask == 0, f"ESTOP at {t} left outputs on"
        if stim.tripped is not None:
            deadline = time.monotonic() + period
            while self.device.output_mask and time.monotonic() < deadline:
                time.sleep(0.005)
            assert self.device.output_mask == 0, f"stopped ({stim.tripped}) but outputs on"


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


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(calls, mishaps), min_size=1, max_size=14))
def test_every_frame_on_the_wire_is_inside_every_limit(ops: list[tuple], tmp_path_factory: pytest.TempPathFactory) -> None:
    rig = Rig(tmp_path_factory.mktemp("rig"))
    link = Link(rig.spy)
    identity = link.open()
    setup = SessionSetup(units.device_limits(identity), prescription(max_ma=2.0), forearm_sites(1, 2), envelope=BENCH)
    try:
        with Stimulator(link, setup, record=rig.record) as stim:
            for op in ops:
                before = rig.spy.output_changing()
                try:
                    if op[0] in MISHAPS:
                        rig.mishap(stim, op)
                    else:
                        _call(stim, op)
                except (Refusal, InterlockStateError):
                    assert rig.spy.output_changing() == before, f"{op} was refused but sent something"
                except (SafetyError, fh.EstimError):
                    pass  # e.g. a device NAK after a stop: the device's own layer held
                rig.assert_off_after_every_stop(stim)
    finally:
        rig.release.set()
    _check_wire(stim, rig.spy.frames)


# --- a patient: every frame inside the envelope of a random visit ---------------------------------

WAVES = [TitrationWaveform(Shape.BIPHASIC, f, w) for f, w in          # the presets' own waveforms among them
         ((2.0, 300.0), (2.0, 600.0), (100.0, 200.0), (35.0, 250.0), (20.0, 200.0), (100.0, 800.0))]
CAUTIONS = [Question.BLEEDING_RISK, Question.FAINTS_WITH_NEEDLING, Question.METAL_IN_PATH, Question.REDUCED_SENSATION]
visits = st.fixed_dictionaries({
    # (channel, waveform, sensory, motor / sensory, tolerance / motor); channel 2 is sometimes left unmeasured
    "measured": st.lists(st.tuples(st.sampled_from([1, 1, 2]), st.sampled_from(WAVES), st.floats(0.2, 1.0),
                                   st.floats(1.1, 2.0), st.floats(1.05, 2.0)), max_size=4),
    "profile": st.sampled_from(["hypersensitive", "typical"]),
    "yes": st.lists(st.sampled_from(CAUTIONS), unique=True, max_size=2),
    "sensory_level": st.lists(st.sampled_from([1, 2]), unique=True, max_size=2),
})
patient_calls = st.one_of(
    st.tuples(st.just("configure"), st.sampled_from([1, 2]), st.sampled_from(WAVES)),
    st.tuples(st.just("enable"), st.sampled_from([1, 2])),
    st.tuples(st.just("amplitude"), st.sampled_from([1, 2]), st.integers(0, 4_000).map(lambda ua: ua / 1000)),
    st.tuples(st.just("ramp"), st.sampled_from([1, 2]), st.integers(0, 4_000).map(lambda ua: ua / 1000)),
    st.tuples(st.just("preset"), st.sampled_from(list(Mechanism))),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.1])),
)


def _allowed_ma(visit: dict, channel: int, wave: TitrationWaveform) -> float | None:
    """The test's own reading of the envelope (not the product's code): the ceiling for `wave` on
    `channel` from the measured thresholds (a matching waveform, or the same but for a phase
    width within 4x, converted by Weiss with c = 300 µs), 0.9 x tolerance, and 0.9 x motor for a
    sensory-level channel; None when nothing was measured on the channel, -1 when nothing matches."""
    mine = [m for m in visit["measured"] if m[0] == channel]
    if not mine:
        return None
    for _, measured_on, sensory, motor_x, tolerance_x in reversed(mine):     # the newest first
        same = (measured_on.shape, measured_on.frequency_hz, measured_on.burst_pulses) == \
            (wave.shape, wave.frequency_hz, wave.burst_pulses)
        ratio = max(measured_on.pulse_width_us, wave.pulse_width_us) / min(measured_on.pulse_width_us,
                                                                          wave.pulse_width_us)
        if same and ratio <= 4:
            scale = (1 + 300 / wave.pulse_width_us) / (1 + 300 / measured_on.pulse_width_us)
            motor, tolerance = round(sensory * motor_x, 3), round(round(sensory * motor_x, 3) * tolerance_x, 3)
            ceiling = 0.9 * round(tolerance * scale, 3)
            if channel in visit["sensory_level"]:
                ceiling = min(ceiling, 0.9 * round(motor * scale, 3))
            return ceiling
    return -1.0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(visit=visits, ops=st.lists(patient_calls, min_size=1, max_size=10))
def test_every_frame_on_the_wire_is_inside_the_patients_envelope(visit: dict, ops: list[tuple],
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 19: random visits (thresholds on random waveforms, profiles, screening answers that
    only caution, sensory-level channels) and random paths (direct API calls, a preset dosed from
    the visit and streamed by the engine): no frame on the wire is on a waveform without a
    matching threshold, or above the ceiling, on a channel where thresholds were measured."""
    rig = Rig(tmp_path_factory.mktemp("rig"))
    link = Link(rig.spy)
    identity = link.open()
    start = datetime.now(timezone.utc) - timedelta(minutes=len(visit["measured"]) + 1)
    measured = []
    for i, (ch, wave, sensory, motor_x, tolerance_x) in enumerate(visit["measured"]):
        motor = round(sensory * motor_x, 3)
        measured.append(ChannelThresholds(ch, forearm_sites(ch)[ch], wave, start + timedelta(minutes=i),
                                          round(sensory, 3), motor, round(motor * tolerance_x, 3), "P9"))
    screening = Screening({q: q in visit["yes"] for q in Question})
    envelope = Envelope.for_visit("P9", "1", screening, visit["profile"], measured).dosing(visit["sensory_level"])
    setup = SessionSetup(units.device_limits(identity), prescription(max_ma=4.0), forearm_sites(1, 2),
                         envelope=envelope)
    try:
        with Stimulator(link, setup, record=rig.record) as stim:
            for op in ops:
                before = rig.spy.output_changing()
                try:
                    _patient_call(stim, op, envelope)
                except (Refusal, InterlockStateError, ProgramError, ThresholdError):
                    assert rig.spy.output_changing() == before or op[0] == "preset", f"{op} was refused but sent"
                except (SafetyError, fh.EstimError):
                    pass
    finally:
        rig.release.set()
    for _, message in rig.spy.frames:
        if isinstance(message, icd.SetChannel):
            setting = units.setting_from_wire(message)
            allowed = _allowed_ma(visit, setting.channel, TitrationWaveform.of(setting))
            assert allowed is None or allowed >= 0, f"{setting} sent on a waveform nobody titrated"
            assert allowed is None or setting.amplitude_ma <= allowed + 1e-3, f"{setting} above {allowed} mA"


def _patient_call(stim: Stimulator, op: tuple, envelope: Envelope) -> None:
    from firmware_host.waveforms import Needle, Site, preset_program
    from firmware_host.waveforms.engine import run_program

    kind = op[0]
    if kind == "configure":
        wave = op[2]
        stim.configure(op[1], frequency_hz=wave.frequency_hz, pulse_width_us=wave.pulse_width_us)
    elif kind == "preset":   # the path `estim run --preset` takes: dosed from the visit, streamed by the engine
        site = Site(region="forearm", side="left")
        needle = Needle(diameter_mm=0.25, length_mm=15, inserted_mm=15, site_a=site, site_b=site)
        program = preset_program(op[1], {1: needle}, "hypersensitive", minutes=0.02)
        dosed, _, _ = program.dose(envelope)
        run_program(stim, dosed)
    else:
        _call(stim, op)
