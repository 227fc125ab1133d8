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
