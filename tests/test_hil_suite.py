"""CI runs the very HIL acceptance suite engineers run against hardware: against the
simulator process (and checks that it leaves its test record and report behind), and against
the independently written peer device speaking ICD v1, one long-running device across every
test of the suite, as a device in a clinic would be."""

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


@pytest.mark.timeout(180)
def test_hil_suite_passes_against_an_independent_icd_v1_device(tmp_path: Path) -> None:
    from tests.peer_device.process import spawn_peer

    with spawn_peer("pty", protocol_version=1) as peer:
        result = hil(tmp_path, "--device", peer.url)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    record = json.loads(next(tmp_path.glob("hil-record-*.json")).read_text())
    assert record["outcome"] == "PASS" and record["device"]["protocol_version"] == 1
    assert not record["device"]["simulated"]  # the suite treated it as any device: no simulator trace
