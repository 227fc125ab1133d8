"""preview() draws a shipped program to a real PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_host.waveforms import Program

pytest.importorskip("matplotlib")
from firmware_host.waveforms.preview import preview  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_preview_writes_a_png(tmp_path: Path) -> None:
    program = Program.load(ROOT / "programs" / "dense_disperse_2_100hz.toml").resolve({ch: {"tolerance": 5.0} for ch in (1, 2, 3, 4)})
    out = preview(program, tmp_path / "dd.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
