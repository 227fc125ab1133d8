"""History at a glance, driven as `estim` commands on the simulated device: `patient show`
lists every session's dose (direct runs, console sessions on a pseudo-terminal, presets and
programs), completed or not, with what stopped it, and the pressure-pain thresholds; `patient
trend` tells visits of one day apart."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from estim_terminal import Terminal
from firmware_host.sim.process import child_env

pytestmark = pytest.mark.timeout(120)

SITES = ["--channel", "1", "--sites", "left:forearm,left:forearm", "--inserted", "10"]
DIRECT = ["run", *SITES, "--frequency", "2", "--pulse-width", "200", "--amplitude", "0.5"]


def estim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=60, stdin=subprocess.DEVNULL)


def test_patient_show_lists_every_session_with_what_stopped_it_and_the_pressure_pain_thresholds() -> None:
    assert estim("patient", "add", "P6").returncode == 0
    assert estim("visit", "start", "P6", "--no", "all").returncode == 0
    assert estim(*DIRECT, "--patient", "P6", "--seconds", "0.2").returncode == 0
    with Terminal("console", "--patient", "P6", *SITES, "--frequency", "2", "--pulse-width", "200",
                  "--minutes", "1") as console:
        console.expect("STOP")
        console.type("\x03")                                  # Ctrl-C in the console: STOP, and leave
        assert console.finish() == 130, console.text
    killed = subprocess.Popen([sys.executable, "-m", "firmware_host", *DIRECT, "--patient", "P6", "--seconds", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                              stdin=subprocess.DEVNULL)
    assert killed.stdout is not None
    while "ch1 on" not in killed.stdout.readline():
        pass
    killed.send_signal(signal.SIGTERM)
    assert killed.wait(20) == 143
    assert estim("visit", "outcome", "P6", "--pain-before", "6", "--pain-after", "3", "--ppt-local", "250,310",
                 "--ppt-remote", "400,405").returncode == 0
    shown = estim("patient", "show", "P6").stdout
    doses = [line.strip() for line in shown.splitlines() if line.strip().startswith("dose ")]
    assert len(doses) == 3, shown
    assert "direct run (2 Hz, 200 µs, 0.5 mA), completed: ch1 0.5 mA" in doses[0]
    console_stop = re.search(r"console session \(2 Hz, 200 µs\), stopped: (.+?): ch1", doses[1])
    assert console_stop, doses[1]             # the STOP (or, on a loaded machine, the watchdog before it)
    assert "direct run (2 Hz, 200 µs, 0.5 mA), stopped: SIGTERM (e-stop): ch1 " in doses[2]
    assert "pressure-pain threshold: near the needles 250 -> 310 kPa; remote site 400 -> 405 kPa" in shown
    [visit] = json.loads(estim("patient", "show", "P6", "--json").stdout)
    assert [(d["program"], d["completed"], d["stopped_by"]) for d in visit["doses"]] == [
        ("direct", True, None), ("console", False, console_stop.group(1)), ("direct", False, "SIGTERM (e-stop)")]


def test_the_trend_tells_visits_of_one_day_apart(tmp_path: Path) -> None:
    assert estim("patient", "add", "P7").returncode == 0
    for before, after in ((6, 4), (5, 3)):
        assert estim("visit", "start", "P7", "--no", "all").returncode == 0
        assert estim("visit", "outcome", "P7", "--pain-before", str(before), "--pain-after", str(after)).returncode == 0
        assert estim("visit", "end", "P7", "--plan", "loading").returncode == 0
    out = tmp_path / "trend.png"
    done = estim("patient", "trend", "P7", "--out", str(out))
    assert done.returncode == 0, done.stderr
    labels = done.stdout.strip().split(": ", 1)[1].split("; ")          # the x-axis labels, as plotted
    assert [label.split(",")[0] for label in labels] == ["visit 1", "visit 2"] and len(set(labels)) == 2
    assert all(re.search(r", \d\d \w{3} \d\d:\d\d$", label) for label in labels)   # the time: the day has two
    assert out.read_bytes()[:4] == b"\x89PNG"
