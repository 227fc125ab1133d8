"""The benchmark entry point runs and reports; figures are never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_quick_cli_benchmark_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "cli", "--only", "cpu", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
    assert "name" in proc.stdout and "cli_help_startup" in proc.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "quick", "results", "ratios"}
    assert {"cpu_count", "python", "platform", "date"} <= set(report["machine"])
    assert {"cli_help_startup", "cpu_encode_write_set_channel", "wire_set_channel_115200"} <= set(report["results"])
    for figure in report["results"].values():
        assert set(figure) == {"value", "unit", "target", "ok"}
    assert "wire_over_cpu_set_channel" in report["ratios"]


@pytest.mark.timeout(60)
def test_the_record_benchmark_doses_every_shipped_program_and_preset_and_records_one(tmp_path: Path) -> None:
    """The record-size figures cover every preset and shipped program on 4 channels: each must
    still dose and stream through the interlock as the product changes (the full run takes minutes)."""
    from bench.record_bench import CHANNELS, programs, write
    from firmware_host.programs import shipped
    from firmware_host.waveforms import PRESETS
    from safety import verify_record
    from safety.record_keys import create_key, load_key

    dosed = dict(programs(0.1))
    assert set(dosed) == {f"preset_{name}" for name in PRESETS} | {f"program_{name}" for name in shipped()} and \
        len(dosed) == 10
    assert all(sorted(program.needles) == list(CHANNELS) for program in dosed.values())
    key = create_key("bench", tmp_path / "keys")
    path = tmp_path / "one.jsonl"
    assert write(dosed["program_dense_disperse_2_100hz"], path, key) > 0
    assert verify_record(path, keys=lambda key_id: load_key(key_id, tmp_path / "keys")).closed
