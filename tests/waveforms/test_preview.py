"""preview() draws a shipped program to a real PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import envelope_for

from waveforms.waveform_programs import program as one_segment_program
from firmware_host.waveforms import Program

pytest.importorskip("matplotlib")
from firmware_host.waveforms.preview import preview  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_preview_writes_a_png(tmp_path: Path) -> None:
    loaded = Program.load(ROOT / "firmware_host" / "programs" / "dense_disperse_2_100hz.toml")
    program = loaded.dose(envelope_for(loaded, {"tolerance": 5.0}))[0]
    out = preview(program, tmp_path / "dd.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_preview_of_bursts_with_thresholds(tmp_path: Path) -> None:
    burst = {"pattern": "burst", "frequency_hz": 100, "pulse_width_us": 200, "burst_pulses": 7, "burst_rate_hz": 2,
             "intensity": 3.0, "intermittent": {"on_s": 10, "off_s": 10}}
    program = one_segment_program(2.0, {1: burst})
    out = preview(program, tmp_path / "bursts.png", thresholds={1: {"sensory": 1.0, "motor": 3.0}})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spells_are_named_only_when_short() -> None:
    from firmware_host.waveforms.preview import merge_span, spell_text

    spans: list[tuple[float, float]] = []
    for k in range(10):
        merge_span(spans, 6.0 * k, 6.0 * k + 3.0)
    merge_span(spans, 57.0, 58.0)                       # touches the last spell: joined
    assert len(spans) == 10 and spans[-1] == (54.0, 4.0)
    assert spell_text(spans, 1800.0) == "3 s at a time" and spell_text(spans, 60.0) == ""
