"""CI runs the very HIL acceptance suite engineers run against hardware: here against the
simulator process, as `pytest hil_tests` runs it with no --device (and checks that it leaves
its test record and report behind); against the independently written peer device (ICD v1 and
v2) and the simulator through a labgrid place, in tests/test_labgrid_rig.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def hil(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "hil_tests", "-q", "-p", "no:cacheprovider", "--hil-record", str(tmp_path),
         *args], cwd=REPO, capture_output=True, text=True, timeout=150)


@pytest.mark.timeout(180)
def test_hil_suite_passes_against_the_simulator(tmp_path: Path) -> None:
    result = hil(tmp_path, "--junitxml", str(tmp_path / "junit.xml"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    records = list(tmp_path.glob("hil-record-*.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    assert record["outcome"] == "PASS"
    assert record["device"]["serial"] and record["host"]["host_version"]
    measurements = [m for t in record["tests"] for m in t["measurements"]]
    names = {m["name"] for m in measurements}
    assert {"charge_error", "estop_device_p99", "watchdog_latency_after_kill", "timeline_mismatches"} <= names
    assert all(m["outcome"] == "PASS" for m in measurements)
    report = records[0].with_suffix(".md").read_text()
    assert report.startswith("# HIL acceptance report: PASS") and "charge_error" in report
    assert (tmp_path / "junit.xml").exists()
