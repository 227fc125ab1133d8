"""Presets: one per clinical target, honest about evidence, dosed from thresholds with
physiological ceilings, sensitivity applied once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.waveforms import (
    PRESETS, PROFILES, Confidence, Mechanism, Needle, Program, ProgramError, Sensitivity, Site, preset_program,
)
from firmware_host.waveforms.check import check
from firmware_host.waveforms.presets import CAP_MA
from safety.envelope import SENSORY_CEILING, TOLERANCE_CEILING
from safety import SENSITIVITY_FACTORS, effective_limits

from firmware_host.sim import SimConfig
from safety import ThresholdError
from support import envelope_for
from firmware_host.units import device_limits

SIM_DEVICE = device_limits(SimConfig().identity())

NEEDLES = {
    ch: Needle(diameter_mm=0.25, length_mm=40.0, inserted_mm=25.0,
               site_a=Site(region="lower_leg", side=side, point="ST36"),
               site_b=Site(region="lower_leg", side=side, point="GB34"))
    for ch, side in ((1, "left"), (2, "right"))
}
ORDER = (Sensitivity.HYPERSENSITIVE, Sensitivity.TYPICAL, Sensitivity.HYPOSENSITIVE)
PROMISES = re.compile(r"\b(will (cure|fix|heal|relieve|remove|eliminate|stop)|guarantee|cures?|proven|"
                      r"so it can be|retrained)\b", re.I)
THRESHOLDS = {"sensory": 1.5, "motor": 2.5, "tolerance": 4.0}


def dosed(program: Program, values: dict = THRESHOLDS):
    """(program in mA, its envelope, notes) for thresholds `values` on every channel and waveform."""
    return program.dose(envelope_for(program, values))


def test_every_clinical_target_has_a_preset() -> None:
    assert set(PRESETS) == set(Mechanism)


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_presets_carry_full_sources_confidence_and_plain_words(mechanism: Mechanism) -> None:
    preset = PRESETS[mechanism]
    assert preset.sources and all(s.authors and s.year and s.journal and s.title for s in preset.sources)
    assert all(s.doi is None or s.doi.startswith("10.") for s in preset.sources)
    assert isinstance(preset.confidence, Confidence) and preset.confidence_note
    for text in (preset.rationale, preset.mechanism_note):
        assert "\n" not in text and not PROMISES.search(text), text
    shown = preset.describe()
    assert preset.title in shown and "sources:" in shown and preset.rationale in shown
    assert "_" not in shown.split("\n", 1)[1].split("sources:")[0]   # no identifiers in the words


def test_descending_preset_is_named_for_what_2_100_hz_does() -> None:
    preset = PRESETS[Mechanism.DESCENDING_MODULATION]
    assert "DNIC" not in preset.title and "opioid" in preset.title
    assert "not conditioned pain modulation" in preset.confidence_note
    assert any("Han JS" == s.authors and s.year == 2003 for s in preset.sources)


def test_sensitivity_is_applied_once_by_the_safety_layer() -> None:
    programs = {s: preset_program(Mechanism.SEGMENTAL_INHIBITION, NEEDLES, s) for s in ORDER}
    assert {p.prescription.max_amplitude_ma[1] for p in programs.values()} == {CAP_MA}
    assert len({p.prescription.ramp_rate_ma_per_s for p in programs.values()}) == 1
    for s, program in programs.items():
        limits = effective_limits(SIM_DEVICE, program.session_setup(SIM_DEVICE).prescription, 1)
        assert limits.max_amplitude_ma == pytest.approx(CAP_MA * SENSITIVITY_FACTORS[s].amplitude)
    multiples = [p.segments[0].channels[1].intensity.multiple for p in programs.values()]
    ramp_in = [p.segments[0].channels[1].ramp.in_s for p in programs.values()]
    assert multiples == sorted(multiples) and ramp_in == sorted(ramp_in, reverse=True)


@pytest.mark.parametrize("mechanism", list(Mechanism))
@pytest.mark.parametrize("sensitivity", ORDER)
def test_preset_programs_need_their_threshold_then_pass_check(mechanism: Mechanism, sensitivity: Sensitivity,
                                                              tmp_path: Path) -> None:
    preset = PRESETS[mechanism]
    program = preset.program(NEEDLES, sensitivity)
    assert program.mechanism is mechanism and program.prescription.sensitivity is sensitivity
    assert {kind for _, kind in program.needed_thresholds} == {preset.threshold}
    assert program.duration_s <= PROFILES[sensitivity].max_minutes * 60
    with pytest.raises(ProgramError, match=preset.threshold.value):
        next(program.settings(1.0))
    program.save(tmp_path / "p.toml")
    assert Program.load(tmp_path / "p.toml") == program
    resolved, envelope, _ = dosed(program)
    seg = resolved.to_arrays(0.1)
    assert seg.amplitude_ma[seg.t_s == 0.0].tolist() == [0.0, 0.0]  # ramps in from zero
    verdict = check(resolved, SIM_DEVICE, envelope)
    assert verdict.ok, verdict.table()       # delivered as written: no rate-limited rises either


def test_sensory_level_doses_stay_below_the_motor_threshold() -> None:
    """The issue's example: segmental, hyposensitive, 1.5 / 2.5 / 4 mA would be 3.75 mA at 100 Hz."""
    program = preset_program(Mechanism.SEGMENTAL_INHIBITION, NEEDLES, "hyposensitive")
    resolved, _, notes = dosed(program)
    assert resolved.segments[0].channels[1].intensity == pytest.approx(SENSORY_CEILING * 2.5)
    assert notes and "held at 2.25 mA" in notes[0] and "below a twitch" in notes[0]


def test_a_sensory_level_dose_held_below_the_patients_own_sensory_threshold_is_refused() -> None:
    """Issue 21: sensory 2.0 / motor 2.1 mA put a segmental dose at 0.9 x 2.1 = 1.89 mA, below what the
    patient feels at all: refused, saying why and what to do. A missing twitch mark is said."""
    program = preset_program(Mechanism.SEGMENTAL_INHIBITION, NEEDLES, "typical")
    with pytest.raises(ProgramError, match=r"held at 1\.89 mA .*below this patient's own sensory threshold of 2 mA"):
        dosed(program, {"sensory": 2.0, "motor": 2.1, "tolerance": 4.0})
    _, _, notes = dosed(program, {"sensory": 1.0, "tolerance": 4.0})
    assert any("no twitch was marked (m)" in note for note in notes)
    assert "channel 1: 2 x sensory 1 mA = 2 mA" in notes   # the arithmetic, said even when nothing holds it


def test_every_dose_stays_below_tolerance() -> None:
    program = preset_program(Mechanism.NEUROMUSCULAR_REEDUCATION, NEEDLES, "hyposensitive")
    close = {"sensory": 1.0, "motor": 3.0, "tolerance": 3.3}     # 1.25 x motor = 3.75 > tolerance
    resolved, _, notes = dosed(program, close)
    assert resolved.segments[0].channels[1].intensity == pytest.approx(TOLERANCE_CEILING * 3.3)
    assert "tolerance" in notes[0]


def test_a_dose_without_a_ceiling_measured_is_refused() -> None:
    program = preset_program(Mechanism.PERIPHERAL_ANALGESIA, NEEDLES, "typical")
    with pytest.raises(ProgramError, match="no motor threshold or tolerance measured"):
        dosed(program, {"sensory": 1.0})


@pytest.mark.parametrize("bad", [{"sensory": 0.0, "motor": 2.0, "tolerance": 4.0},
                                 {"sensory": 3.0, "motor": 2.0, "tolerance": 4.0},
                                 {"sensory": 1.0, "motor": 5.0, "tolerance": 4.0}])
def test_thresholds_out_of_order_or_zero_are_refused(bad: dict) -> None:
    program = preset_program(Mechanism.PERIPHERAL_ANALGESIA, NEEDLES, "typical")
    with pytest.raises(ThresholdError):
        dosed(program, {1: bad, 2: THRESHOLDS})


@settings(max_examples=60, deadline=None)
@given(st.floats(0.2, 5.0), st.floats(1.0, 3.0), st.floats(1.0, 3.0), st.sampled_from(list(Mechanism)),
       st.sampled_from(ORDER))
def test_resolved_doses_never_pass_the_ceilings(sensory, motor_ratio, tolerance_ratio, mechanism, sensitivity) -> None:
    measured = {"sensory": sensory, "motor": sensory * motor_ratio, "tolerance": sensory * motor_ratio * tolerance_ratio}
    preset = PRESETS[mechanism]
    try:
        resolved = dosed(preset.program(NEEDLES, sensitivity), measured)[0]
    except ProgramError as exc:          # above the preset's cap: refused, never clipped silently
        if "own sensory threshold" in str(exc):   # a sensory-level dose its ceilings hold below what is felt
            assert preset.threshold.value == "sensory"
            assert min(SENSORY_CEILING * measured["motor"], TOLERANCE_CEILING * measured["tolerance"]) < sensory
        else:
            assert "exceeds prescription.max_amplitude_ma" in str(exc)
        return
    peak = resolved.to_arrays(0.5).amplitude_ma.max()
    assert peak <= TOLERANCE_CEILING * measured["tolerance"] + 1e-6
    if preset.threshold.value == "sensory":
        assert peak <= SENSORY_CEILING * measured["motor"] + 1e-6


def test_neuromuscular_on_phases_reach_their_target() -> None:
    """Each contraction ramps up within the ramp rule and holds the target (not a 0.1 mA/s
    ramp restarting every on-phase), at re-education settings: 30-50 Hz, 1-2 s ramps, 1:3-1:5."""
    preset = PRESETS[Mechanism.NEUROMUSCULAR_REEDUCATION]
    spec = preset.program(NEEDLES, Sensitivity.TYPICAL).segments[0].channels[1]
    assert 30 <= spec.frequency_hz <= 50
    on = spec.intermittent
    assert 1 <= on.ramp_up_s <= 2 and 3 <= on.off_s / on.on_s <= 5
    resolved, envelope, _ = dosed(preset.program(NEEDLES, Sensitivity.TYPICAL))
    seg = resolved.to_arrays(0.1)
    mine = seg.channel == 1
    target = resolved.segments[0].channels[1].intensity
    cycle = on.on_s + on.off_s
    for k in (3, 10, 20):                        # contractions after the session's ramp-in
        t0 = k * cycle
        during = mine & (seg.t_s >= t0 + on.ramp_up_s) & (seg.t_s < t0 + on.on_s - on.ramp_down_s)
        assert np.all(seg.amplitude_ma[during] == pytest.approx(target, abs=1e-3))
    assert check(resolved, SIM_DEVICE, envelope).ok


def test_hypersensitive_profile_drops_stepwise_escalation() -> None:
    dm = Mechanism.DESCENDING_MODULATION
    assert preset_program(dm, NEEDLES, "typical").segments[0].channels[1].step is not None
    assert preset_program(dm, NEEDLES, "hypersensitive").segments[0].channels[1].step is None


def test_session_length_is_capped_by_the_profile() -> None:
    program = preset_program(Mechanism.SEGMENTAL_INHIBITION, NEEDLES, "hypersensitive", minutes=60)
    assert program.duration_s == PROFILES[Sensitivity.HYPERSENSITIVE].max_minutes * 60
