"""Programs: example files, round trips, threshold resolution and located schema errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from safety import ThresholdError
from support import envelope_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.waveforms import Program, ProgramError, Segments

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = sorted((ROOT / "firmware_host" / "programs").glob("*.toml"))
DENSE_DISPERSE = ROOT / "firmware_host" / "programs" / "dense_disperse_2_100hz.toml"


def minimal(channel: dict | None = None, **top: object) -> dict:
    """A valid one-channel program as plain data."""
    spec = channel if channel is not None else {
        "pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 300.0, "intensity": 2.0,
    }
    return {
        "name": "test",
        "mechanism": "peripheral_analgesia",
        "prescription": {"max_amplitude_ma": {"1": 8.0}, "max_minutes": 30.0, "ramp_rate_ma_per_s": 0.1, "sensitivity": "typical"},
        "needles": {"1": {
            "diameter_mm": 0.25, "length_mm": 40.0, "inserted_mm": 25.0,
            "site_a": {"region": "lumbosacral", "side": "left", "point": "L4"}, "site_b": {"region": "lumbosacral", "side": "left", "point": "L5"},
        }},
        "segments": [{"duration_s": 600.0, "channels": {"1": spec}}],
        **top,
    }


def line_of(text: str, needle: str, occurrence: int = 0) -> int:
    """1-based line of the n-th line containing `needle` (an independent locator for tests)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence]


def test_example_programs_load() -> None:
    names = {p.name for p in PROGRAMS}
    assert {"low_rate_2hz.toml", "high_rate_100hz.toml", "dense_disperse_2_100hz.toml"} <= names
    for path in PROGRAMS:
        program = Program.load(path)
        assert program.duration_s <= program.prescription.max_minutes * 60


def dosed(program: Program, values: dict) -> Program:
    return program.dose(envelope_for(program, values))[0]


def test_dense_disperse_example_runs_once_resolved() -> None:
    program = dosed(Program.load(DENSE_DISPERSE), {"tolerance": 6.0})
    seg = program.to_arrays(0.1)
    assert isinstance(seg, Segments) and set(seg.channel.tolist()) == {1, 2, 3, 4}
    ch1 = seg.channel == 1
    switches = seg.t_s[ch1][1:][np.diff(seg.frequency_hz[ch1]) != 0]
    np.testing.assert_allclose(switches, np.arange(3.0, 1800.0, 3.0), atol=1e-9)
    plateau = seg.amplitude_ma[ch1][(seg.t_s[ch1] > 60.0) & (seg.t_s[ch1] < 1780.0)]
    # 0.75 × 6 mA, +0.2 mA every 10 min, capped at 0.9 × 6 mA
    assert sorted(set(np.round(plateau, 9))) == [4.5, 4.7, 4.9]
    assert list(program.settings(0.1)) == list(seg.rows())


def test_relative_program_refuses_to_produce_settings_until_resolved() -> None:
    program = Program.load(ROOT / "firmware_host" / "programs" / "low_rate_2hz.toml")
    with pytest.raises(ProgramError, match=r"dose\(envelope\).*sensory on channel 1"):
        next(program.settings(0.1))
    with pytest.raises(ProgramError, match="sensory"):
        program.to_arrays(0.1)


def test_resolve_names_each_missing_threshold() -> None:
    program = Program.load(ROOT / "firmware_host" / "programs" / "low_rate_2hz.toml")
    with pytest.raises(ProgramError) as err:
        dosed(program, {1: {"sensory": 2.0, "motor": 3.0}, 2: {"motor": 5.0}})
    assert "segments[0].channels.2.intensity" in str(err.value)
    assert "channel 2 has no sensory threshold measured on 2 Hz, 300 µs" in str(err.value)
    assert "channels.1" not in str(err.value)


def test_resolve_multiplies_the_measured_threshold() -> None:
    program = Program.from_data(minimal(channel={
        "pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 300.0,
        "intensity": {"multiple": 1.5, "of": "sensory"},
        "step": {"step_ma": 0.5, "every_s": 60.0, "cap": {"multiple": 2.0, "of": "motor"}},
    }))
    assert program.needed_thresholds == {(1, "sensory"), (1, "motor")}
    resolved, envelope, notes = program.dose(envelope_for(program, {"sensory": 2.0, "motor": 3.5, "tolerance": 8.0}))
    spec = resolved.segments[0].channels[1]
    # a channel dosed at a sensory level stays below 0.9 x motor = 3.15 everywhere, the step's cap too
    assert (spec.intensity, spec.step.cap) == (3.0, 3.15)
    assert envelope.sensory_level == {1} and any("held at 3.15 mA" in n for n in notes)
    assert resolved.needed_thresholds == set()
    assert next(resolved.settings(1.0)).amplitude_ma == 3.0


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 0.0, float("inf")])
def test_resolve_refuses_invalid_thresholds(bad: float) -> None:
    program = Program.from_data(minimal(channel={
        "pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 300.0, "intensity": {"multiple": 1.5, "of": "sensory"},
    }))
    with pytest.raises(ThresholdError, match=r"sensory threshold on channel 1 .*must be above 0 mA"):
        dosed(program, {"sensory": bad})


def test_resolve_refuses_an_intensity_above_the_prescription_cap() -> None:
    program = Program.from_data(minimal(channel={
        "pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 300.0, "intensity": {"multiple": 2.0, "of": "motor"},
    }))
    with pytest.raises(ProgramError, match=r"channels\.1\.intensity = 10\.0: exceeds prescription\.max_amplitude_ma"):
        dosed(program, {"motor": 5.0, "tolerance": 12.0})


intensities = st.one_of(
    st.floats(0.0, 8.0, allow_nan=False),
    st.fixed_dictionaries({"multiple": st.floats(0.1, 3.0), "of": st.sampled_from(["sensory", "motor", "tolerance"])}),
)
channel_specs = st.one_of(
    st.fixed_dictionaries({
        "pattern": st.just("continuous"), "frequency_hz": st.floats(0.5, 200.0),
        "pulse_width_us": st.floats(10.0, 1000.0), "intensity": intensities,
    }),
    st.fixed_dictionaries({
        "pattern": st.just("burst"), "frequency_hz": st.floats(50.0, 200.0), "pulse_width_us": st.floats(10.0, 1000.0),
        "burst_pulses": st.integers(2, 20), "burst_rate_hz": st.floats(0.5, 4.0), "intensity": intensities,
        "shape": st.sampled_from(["biphasic", "biphasic_alternating", "monophasic"]), "asym_ratio": st.integers(1, 8),
    }),
    st.fixed_dictionaries(
        {
            "pattern": st.just("dense_disperse"), "intensity": intensities,
            "disperse": st.fixed_dictionaries({"frequency_hz": st.floats(0.5, 10.0), "pulse_width_us": st.floats(10.0, 1000.0)}),
            "dense": st.fixed_dictionaries({"frequency_hz": st.floats(50.0, 200.0), "pulse_width_us": st.floats(10.0, 500.0)}),
        },
        optional={
            "ramp": st.fixed_dictionaries({"in_s": st.floats(0.0, 60.0), "out_s": st.floats(0.0, 60.0)}),
            "modulation": st.fixed_dictionaries({"period_s": st.floats(1.0, 60.0), "depth": st.floats(0.01, 1.0), "waveform": st.sampled_from(["sine", "triangle"])}),
            "intermittent": st.fixed_dictionaries({"on_s": st.floats(0.5, 60.0), "off_s": st.floats(0.5, 60.0)}),
            "sweep": st.fixed_dictionaries({"low_hz": st.floats(1.0, 10.0), "high_hz": st.floats(20.0, 100.0), "period_s": st.floats(5.0, 60.0)}),
            "step": st.fixed_dictionaries({"step_ma": st.floats(0.1, 1.0), "every_s": st.floats(60.0, 600.0), "cap": intensities}),
        },
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=channel_specs, name=st.text(min_size=1, max_size=30), suffix=st.sampled_from([".toml", ".json"]))
def test_save_load_round_trip(tmp_path: Path, spec: dict, name: str, suffix: str) -> None:
    program = Program.from_data(minimal(channel=spec, name=name))
    path = tmp_path / f"p{suffix}"
    program.save(path)
    assert Program.load(path) == program


def test_example_files_round_trip_through_both_formats(tmp_path: Path) -> None:
    for source in PROGRAMS:
        program = Program.load(source)
        for suffix in (".toml", ".json"):
            program.save(tmp_path / f"x{suffix}")
            assert Program.load(tmp_path / f"x{suffix}") == program


# --- Broken files --------------------------------------------------------------------

SOURCE = DENSE_DISPERSE.read_text()


def broken(tmp_path: Path, old: str, new: str, count: int = 1, suffix: str = ".toml") -> tuple[Path, str]:
    assert old in SOURCE
    text = SOURCE.replace(old, new, count)
    path = tmp_path / f"broken{suffix}"
    path.write_text(text)
    return path, text


def error_of(path: Path) -> str:
    with pytest.raises(ProgramError) as err:
        Program.load(path)
    message = str(err.value)
    assert "pydantic" not in message and "Traceback" not in message and "errors.pydantic.dev" not in message
    return message


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path, text = broken(tmp_path, 'mechanism = "descending_modulation"', 'mechanism = "descending_modulation')
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, 'mechanism =')}: ")
    assert "invalid TOML" in message


@pytest.mark.parametrize(
    ("old", "new", "field", "value", "anchor"),
    [
        ("dense_s = 3", "dense_s = nan", "segments[0].channels.1.dense_s", "nan", "dense_s = nan"),
        ("max_minutes = 40", "max_minutes = inf", "prescription.max_minutes", "inf", "max_minutes = inf"),
        ("disperse_s = 3", "disperse_s = -3", "segments[0].channels.1.disperse_s", "-3", "disperse_s = -3"),
        ("diameter_mm = 0.30", "diameter_mm = -0.30", "needles.1.diameter_mm", "-0.3", "diameter_mm = -0.30"),
        (
            'disperse = { frequency_hz = 2, pulse_width_us = 600 }',
            'disperse = { frequency_hz = -inf, pulse_width_us = 600 }',
            "segments[0].channels.1.disperse.frequency_hz", "-inf", "frequency_hz = -inf",
        ),
        ('pattern = "dense_disperse"', 'pattern = "sawtooth"', "segments[0].channels.1.pattern", "'sawtooth'", "sawtooth"),
        ('of = "tolerance" }\nstep', 'of = "threshold" }\nstep', "segments[0].channels.1.intensity", "", "threshold"),
    ],
)
def test_invalid_values_name_file_line_field_and_value(
    tmp_path: Path, old: str, new: str, field: str, value: str, anchor: str
) -> None:
    path, text = broken(tmp_path, old, new)
    message = error_of(path)
    assert f"{path}:{line_of(text, anchor)}: {field}" in message
    assert f"= {value}" in message


@pytest.mark.parametrize("new,said", [
    ('intensity = { multiple = inf, of = "tolerance" }', "intensity.multiple = inf: Input should be a finite number"),
    ("intensity = -2", "intensity = -2: Input should be greater than or equal to 0"),
])
def test_a_bad_intensity_gets_one_error_in_the_kind_it_was_written_as(tmp_path: Path, new: str, said: str) -> None:
    path, text = broken(tmp_path, 'intensity = { multiple = 0.75, of = "tolerance" }', new)
    message = error_of(path)
    assert message.count(said) == 1, message
    assert "constrained-float" not in message and "Relative" not in message and len(message.splitlines()) == 1


def test_missing_field_points_at_its_table(tmp_path: Path) -> None:
    path, text = broken(tmp_path, "[needles.3]\ndiameter_mm = 0.25\n", "[needles.3]\n")
    message = error_of(path)
    assert message == f"{path}:{line_of(text, '[needles.3]')}: needles.3.diameter_mm = (missing): Field required"


def test_missing_pattern_and_unknown_key_are_named(tmp_path: Path) -> None:
    path, text = broken(tmp_path, 'pattern = "dense_disperse"\n', "")
    assert f"{path}:{line_of(text, '[segments.channels.1]')}: segments[0].channels.1.pattern = (missing)" in error_of(path)
    path, text = broken(tmp_path, "dense_s = 3\n", "dense_s = 3\ncolour = 'red'\n")
    assert f"{path}:{line_of(text, 'colour')}: segments[0].channels.1.colour = 'red'" in error_of(path)


def test_inconsistent_programs_are_refused_with_a_location(tmp_path: Path) -> None:
    path, text = broken(tmp_path, "[segments.channels.4]", "[segments.channels.5]")
    assert f"{path}:{line_of(text, '[[segments]]')}: segments[0].channels = [1, 2, 3, 5]" in error_of(path)
    path, text = broken(tmp_path, "duration_s = 1800", "duration_s = 18000")
    assert "more than prescription.max_minutes (40 min)" in error_of(path)
    path, text = broken(tmp_path, 'cap = { multiple = 0.9, of = "tolerance" }', "cap = 12.5")
    message = error_of(path)
    assert f"{path}:{line_of(text, 'cap = 12.5')}: segments[0].channels.1.step.cap = 12.5: exceeds" in message


def test_sweep_must_rise(tmp_path: Path) -> None:
    path, text = broken(tmp_path, "dense_s = 3\n", "dense_s = 3\nsweep = { low_hz = 50, high_hz = 10, period_s = 20 }\n")
    assert f"{path}:{line_of(text, 'sweep')}: segments[0].channels.1.sweep.high_hz = 10.0: must be above low_hz" in error_of(path)


def test_broken_json_names_file_line_and_field(tmp_path: Path) -> None:
    program = Program.load(ROOT / "firmware_host" / "programs" / "high_rate_100hz.toml")
    good = tmp_path / "good.json"
    program.save(good)
    text = good.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace('"pulse_width_us": 200.0', '"pulse_width_us": NaN'))
    message = error_of(bad)
    assert f"{bad}:{line_of(bad.read_text(), 'NaN')}: segments[0].channels.1.pulse_width_us = nan" in message
    bad.write_text(text[: len(text) // 2])
    assert re.match(rf"{re.escape(str(bad))}:\d+: \(file\) = .*invalid JSON", error_of(bad))


def test_unreadable_file_is_a_program_error(tmp_path: Path) -> None:
    assert "cannot read" in error_of(tmp_path / "absent.toml")
