"""check(): every rule over a whole program, located by time, channel and rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_host.waveforms import Program
from firmware_host.waveforms.check import check, check_per_pulse
from waveforms.waveform_programs import SIM_DEVICE, dense_disperse_spec, program
from safety import Envelope, Patient
from support import envelope_for, measured

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "firmware_host" / "programs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_programs_pass(path: Path) -> None:
    loaded = Program.load(path)
    resolved, envelope, _ = loaded.dose(envelope_for(loaded, {"sensory": 2.0, "motor": 3.0, "tolerance": 5.0}))
    assert check(resolved, SIM_DEVICE, envelope).ok


def found(result, rule: str) -> list[tuple[int | None, float | None]]:
    return [(f.channel, f.t_s) for f in result.violations if f.rule == rule]


def test_frequency_above_the_prescription_is_found_in_every_dense_phase_of_its_channel() -> None:
    result = check(program(1.0, {1: dense_disperse_spec(), 2: dense_disperse_spec(dense_hz=150.0)}), SIM_DEVICE)
    hits = found(result, "prescription.frequency_max")
    assert hits == [(2, t) for t in (3.0, 9.0, 15.0, 21.0, 27.0, 33.0, 39.0, 45.0, 51.0, 57.0)]
    first = next(f for f in result.violations if f.rule == "prescription.frequency_max")
    assert (first.t_end_s, first.value, first.limit) == (6.0, 150.0, 100.0)


def test_a_step_past_the_sensitivity_cap_is_found_when_it_happens() -> None:
    # typical sensitivity: 0.85 x 10 mA = 8.5 mA; 8 mA steps to 9 mA at 60 s
    spec = dense_disperse_spec(8.0, step={"step_ma": 1.0, "every_s": 60.0, "cap": 9.0})
    result = check(program(2.0, {1: spec}, sensitivity="typical"), SIM_DEVICE)
    assert found(result, "prescription.amplitude_max") == [(1, 60.0)]


def test_monophasic_breaks_the_dc_and_balance_rules_from_the_start() -> None:
    result = check(program(1.0, {3: dense_disperse_spec(shape="monophasic")}), SIM_DEVICE)
    assert found(result, "standard.no_dc") == [(3, 0.0)] and found(result, "needle.charge_balanced") == [(3, 0.0)]


def test_session_longer_than_the_standard_and_placement_and_contraindication() -> None:
    long = program(70.0, {1: dense_disperse_spec()}, max_minutes=90.0)
    assert found(check(long, SIM_DEVICE), "session.length") == [(None, 3600.0)]
    neck = program(1.0, {1: dense_disperse_spec()}, sites={1: ("neck_front", "upper_back", "midline")})
    result = check(neck, SIM_DEVICE, Envelope.undeclared(Patient(implanted_device=True)))
    assert found(result, "placement.implanted_device") == [(None, None)]
    assert found(result, "placement.head_neck") == [(1, None)]


def test_a_rise_steeper_than_the_ramp_rule_is_refused_not_delivered_late() -> None:
    result = check(program(1.0, {1: dense_disperse_spec(4.0)}), SIM_DEVICE)
    assert not result.ok and result.warnings == ()
    assert [(w.rule, w.channel, w.t_s, w.value) for w in result.violations] == [("dynamic.ramp_rate", 1, 0.0, 4.0)]
    assert "lengthen the ramp" in result.violations[0].message


def test_vectorised_and_per_pulse_checks_agree() -> None:
    cases = [
        program(0.25, {1: dense_disperse_spec(), 2: dense_disperse_spec(dense_hz=150.0)}),
        program(1.1, {1: dense_disperse_spec(8.0, step={"step_ma": 1.0, "every_s": 60.0, "cap": 9.0}, phase_s=30.0,
                                             dense={"frequency_hz": 5, "pulse_width_us": 200})}, sensitivity="typical"),
        program(0.1, {3: dense_disperse_spec(shape="monophasic")}),
        program(0.2, {4: dense_disperse_spec(6.0, phase_s=2.0)}),
    ]
    for case in cases:
        fast, slow = check(case, SIM_DEVICE), check_per_pulse(case, SIM_DEVICE)
        static = {key: t for key, t in fast.first_times().items() if key[1] != "dynamic.ramp_rate"}
        assert static == slow.first_times()   # the per-pulse loop judges settings, not ramps


def test_result_renders_as_table_and_json() -> None:
    result = check(program(0.5, {2: dense_disperse_spec(dense_hz=150.0)}), SIM_DEVICE)
    table = result.table()
    assert table.startswith("program refused: 2 rule(s) broken, 6 times in all") and "frequency 150 Hz" in table
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["REFUSED", "REFUSED"]  # one line per rule
    assert "5 times, 00:03.0 to 00:30.0" in table   # the dense phase of each cycle, said once with its span
    assert "prescription." not in table and "dynamic." not in table   # plain words, no rule ids
    data = json.loads(result.to_json())
    assert data["ok"] is False and data["violations"][0] == {
        "rule": "prescription.frequency_max", "channel": 2, "t_s": 3.0, "t_end_s": 6.0, "value": 150.0,
        "limit": 100.0, "message": data["violations"][0]["message"],
    }


def test_the_patients_envelope_is_checked_over_the_whole_program() -> None:
    """A program in mA meets the same envelope as the interlock: above the ceiling of today's
    thresholds (0.9 x tolerance 4 mA = 3.6 mA) from the step that crosses it, and on a waveform
    nobody titrated (the dense phase here) from its first frame."""
    stepping = program(2.0, {1: dense_disperse_spec(3.0, step={"step_ma": 1.0, "every_s": 60.0, "cap": 4.0})})
    only_disperse = [t for t in measured(stepping, {"sensory": 1.0, "motor": 2.0, "tolerance": 4.0})
                     if t.waveform.frequency_hz == 2]
    result = check(stepping, SIM_DEVICE, Envelope.undeclared(thresholds=only_disperse, who="P001"))
    assert found(result, "envelope.no_threshold")[0] == (1, 3.0)          # the first dense phase
    assert (1, 60.0) in found(result, "envelope.ceiling")                  # 4 mA > 3.6 mA from the step on
    assert (1, 0.0) not in found(result, "envelope.ceiling")
    both = check(stepping, SIM_DEVICE, envelope_for(stepping, {"sensory": 1.0, "motor": 2.0, "tolerance": 4.0}))
    assert found(both, "envelope.no_threshold") == [] and found(both, "envelope.ceiling")[0] == (1, 60.0)
