"""A whole visit on the simulated device (sim://, a fresh device inside each `estim`), scripted
with `estim` commands as a clinician would run them:
screening -> titration on the preset's waveform -> the preset's dose from the stored
thresholds -> treatment -> outcomes -> plan; then a second visit that starts from the first.
The default SQLite store; the same commands on PostgreSQL by one URL setting are checked at
the end (the store itself is tested on both in test_store.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from firmware_host.visits import VisitStore
from support import titrate_with_keys

pytestmark = pytest.mark.timeout(120)

PRESET = ["--preset", "segmental_inhibition", "--channel", "1", "--sites", "left:forearm,left:hand:LI4",
          "--inserted", "10"]


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `estim` here uses the default store: a SQLite file in the test's data directory."""
    monkeypatch.delenv("ESTIM_STORE_URL", raising=False)


def estim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout, stdin=subprocess.DEVNULL)


def titrate(record: Path, marks_ua: tuple[int, int, int]) -> subprocess.CompletedProcess[str]:
    """Titrate channel 1 on the preset's waveform, pressing s, m and t as the current passes each level."""
    argv = [sys.executable, "-m", "firmware_host", "titrate", "--patient", "P001", *PRESET, "--ramp", "2"]
    return titrate_with_keys(argv, record, list(zip("smt", marks_ua)))


def dose_line(stdout: str) -> float:
    return float(re.search(r"dose: channel 1: ([\d.]+) mA", stdout).group(1))


def test_a_visit_then_a_second_that_starts_from_it(store_env: None, tmp_path: Path) -> None:
    assert estim("patient", "add", "P001").returncode == 0

    # --- visit 1 ------------------------------------------------------------------------
    start = estim("visit", "start", "P001", "--yes", "bleeding_risk", "--no", "rest", "--operator", "JD")
    assert start.returncode == 0, start.stderr
    assert "press each site" in start.stdout                    # the precaution, in plain words

    first = titrate(tmp_path / "titration-1.jsonl", (500, 1100, 1700))
    assert first.returncode == 0, first.stderr
    assert "100 Hz, 200 µs" in first.stderr                     # on the preset's waveform
    with VisitStore() as store:
        [measured] = store.open_visit("P001").thresholds
    assert measured.waveform.frequency_hz == 100 and measured.placement.b.point == "LI4"

    treat = estim("run", "--patient", "P001", *PRESET, "--minutes", "0.05",
                  "--record", str(tmp_path / "treat-1.jsonl"))
    assert treat.returncode == 0, treat.stdout + treat.stderr
    assert "Segmental (spinal gating) inhibition" in treat.stdout and "sources:" in treat.stdout
    expected = min(round(2.0 * measured.sensory_ma, 3), int(900 * measured.motor_ma) / 1000)
    assert dose_line(treat.stdout) == pytest.approx(expected)   # 2 x sensory, never above 0.9 x motor
    assert "caution: bleeding risk" in treat.stderr

    outcome = estim("visit", "outcome", "P001", "--pain-before", "6", "--pain-after", "4", "--felt", "buzzing",
                    "--soreness", "--ppt-local", "250,300")
    assert outcome.returncode == 0, outcome.stderr
    assert estim("visit", "end", "P001").returncode == 2          # the plan is asked for, never skipped
    end = estim("visit", "end", "P001", "--plan", "loading,breathing", "--text", "step-downs 3x10")
    assert end.returncode == 0, end.stderr

    # --- visit 2 starts from visit 1 -----------------------------------------------------------
    assert estim("visit", "start", "P001", "--no", "all").returncode == 0
    refused = estim("run", "--patient", "P001", "--last-dose")
    assert refused.returncode == 2 and "titrate" in refused.stderr   # yesterday's thresholds never dose today
    second = titrate(tmp_path / "titration-2.jsonl", (700, 1300, 2000))
    assert second.returncode == 0, second.stderr
    assert "last time" in second.stderr and "since last time: sensory" in second.stderr

    again = estim("run", "--patient", "P001", "--last-dose", "--minutes", "0.05",
                  "--record", str(tmp_path / "treat-2.jsonl"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "last dose: Segmental" in again.stdout
    with VisitStore() as store:
        today = store.open_visit("P001")
        [visit_2, visit_1] = store.visits("P001")
    assert today.id == visit_2.id and len(visit_2.doses) == 1 and visit_2.doses[0].completed
    t2 = visit_2.thresholds[0]
    assert dose_line(again.stdout) == pytest.approx(min(round(2.0 * t2.sensory_ma, 3), int(900 * t2.motor_ma) / 1000))
    assert {r[0] for r in visit_1.records} == {"titration-1", "treat-1"}
    assert visit_1.plan.kinds == ("loading", "breathing") and visit_1.outcome.pain_after == 4

    estim("visit", "outcome", "P001", "--pain-before", "5", "--pain-after", "3")
    estim("visit", "end", "P001", "--plan", "motor_control")
    shown = estim("patient", "show", "P001")
    assert shown.returncode == 0
    assert shown.stdout.count("visit ") >= 2 and "pain 6 -> 4" in shown.stdout and "bleeding risk" in shown.stdout
    plot = tmp_path / "trend.png"
    assert estim("patient", "trend", "P001", "--out", str(plot)).returncode == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_commands_on_postgresql_by_one_url(postgres_url_template: str, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from postgres_server import new_database

    url = new_database(postgres_url_template)
    assert estim("patient", "add", "P9", "--store", url).returncode == 0
    monkeypatch.setenv("ESTIM_STORE_URL", url)
    assert estim("visit", "start", "P9", "--no", "all").returncode == 0
    shown = estim("patient", "show", "P9")
    assert shown.returncode == 0 and "nothing raised" in shown.stdout and "[open]" in shown.stdout
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "estim" / "visits.sqlite3").exists()   # nothing went to SQLite
    with VisitStore(url) as store:
        assert store.open_visit("P9") is not None
