"""Presets: one per clinical target, honest about evidence, scaled by sensitivity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_host.waveforms import (
    PRESETS, PROFILES, Confidence, Mechanism, Needle, Program, ProgramError, Sensitivity, Site, preset_program,
)

NEEDLES = {
    ch: Needle(diameter_mm=0.25, length_mm=40.0, site_a=Site(region="lower_leg", side=side, point="ST36"), site_b=Site(region="lower_leg", side=side, point="SP6"))
    for ch, side in ((1, "left"), (2, "right"))
}
ORDER = (Sensitivity.HYPERSENSITIVE, Sensitivity.TYPICAL, Sensitivity.HYPOSENSITIVE)
PROMISES = re.compile(r"\b(will (cure|fix|heal|relieve|remove|eliminate|stop)|guarantee|cures?|proven)\b", re.I)


def test_every_clinical_target_has_a_preset() -> None:
    assert set(PRESETS) == set(Mechanism)


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_presets_carry_sources_confidence_and_a_plain_rationale(mechanism: Mechanism) -> None:
    preset = PRESETS[mechanism]
    assert preset.sources and all(len(s) > 20 for s in preset.sources)
    assert isinstance(preset.confidence, Confidence) and preset.confidence_note
    assert "\n" not in preset.rationale and preset.rationale.endswith(".")
    assert not PROMISES.search(preset.rationale), preset.rationale


def test_frequency_specific_presets_cite_han_2003() -> None:
    for mechanism in (Mechanism.SEGMENTAL_INHIBITION, Mechanism.DESCENDING_INHIBITION):
        assert any("Han JS" in s and "2003" in s for s in PRESETS[mechanism].sources)


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_sensitivity_lowers_multiples_caps_and_ramp_speed(mechanism: Mechanism) -> None:
    programs = [preset_program(mechanism, NEEDLES, s) for s in ORDER]
    multiples = [p.segments[0].channels[1].intensity.multiple for p in programs]
    caps = [p.prescription.max_amplitude_ma[1] for p in programs]
    rates = [p.prescription.ramp_rate_ma_per_s for p in programs]
    ramp_in = [p.segments[0].channels[1].ramp.in_s for p in programs]
    assert multiples == sorted(multiples) and multiples[0] < multiples[2]
    assert caps == sorted(caps) and caps[0] < caps[2]
    assert rates == sorted(rates) and rates[0] < rates[2]
    assert ramp_in == sorted(ramp_in, reverse=True)


@pytest.mark.parametrize("mechanism", list(Mechanism))
@pytest.mark.parametrize("sensitivity", ORDER)
def test_preset_programs_need_their_threshold_then_run(mechanism: Mechanism, sensitivity: Sensitivity, tmp_path: Path) -> None:
    preset = PRESETS[mechanism]
    program = preset.program(NEEDLES, sensitivity)
    assert program.mechanism is mechanism and program.prescription.sensitivity is sensitivity
    assert {kind for _, kind in program.needed_thresholds} == {preset.threshold}
    assert program.duration_s <= PROFILES[sensitivity].max_minutes * 60
    with pytest.raises(ProgramError, match=preset.threshold.value):
        next(program.settings(1.0))
    program.save(tmp_path / "p.toml")
    assert Program.load(tmp_path / "p.toml") == program
    threshold = PROFILES[Sensitivity.HYPERSENSITIVE].cap_ma / 2  # low enough for every cap
    resolved = program.resolve({ch: {preset.threshold: threshold} for ch in NEEDLES})
    seg = resolved.to_arrays(1.0)
    assert seg.amplitude_ma.max() <= PROFILES[sensitivity].cap_ma
    assert seg.amplitude_ma[seg.t_s == 0.0].tolist() == [0.0, 0.0]  # ramps in from zero


def test_a_high_threshold_is_refused_rather_than_clipped() -> None:
    program = preset_program("neuromuscular_reeducation", NEEDLES, "hypersensitive")
    with pytest.raises(ProgramError, match="exceeds prescription.max_amplitude_ma"):
        program.resolve({1: {"motor": 9.0}, 2: {"motor": 3.0}})


def test_hypersensitive_profile_drops_stepwise_escalation() -> None:
    dnic = Mechanism.DESCENDING_INHIBITION
    assert preset_program(dnic, NEEDLES, "typical").segments[0].channels[1].step is not None
    assert preset_program(dnic, NEEDLES, "hypersensitive").segments[0].channels[1].step is None


def test_session_length_is_capped_by_the_profile() -> None:
    program = preset_program(Mechanism.SEGMENTAL_INHIBITION, NEEDLES, "hypersensitive", minutes=60)
    assert program.duration_s == PROFILES[Sensitivity.HYPERSENSITIVE].max_minutes * 60
