"""The whole visit, as a test: every command in docs/clinician.md, run in order as written, on the
simulated device (sim://, a fresh device inside each `estim`), then the visit store checked: the
walkthrough a clinician follows must work. Two things a script cannot do as a person does are
supplied: the titration keys (pressed as the current passes set levels) and a short session
length for the treatment commands (`--minutes 0.05`, appended). The commands run from a folder
with nothing in it: the shipped programs are found by name. A visit takes seven commands, with the
needles typed once (counted below)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from support import REPO, titrate_with_keys

pytestmark = pytest.mark.timeout(150)

DOC = REPO / "docs" / "clinician.md"
KEY_LEVELS_UA = (("s", 500), ("m", 1100), ("t", 1700))


def doc_commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("estim ")]


def test_the_walkthrough_covers_a_whole_visit() -> None:
    names = [" ".join(c[1:3]) for c in doc_commands()]
    for step in ("patient add", "visit start", "visit outcome", "visit end", "patient show", "patient trend",
                 "presets show"):
        assert step in names, step
    assert any(c[1] == "titrate" and "--preset" in c for c in doc_commands())
    assert any(c[1] == "titrate" and "--last-dose" in c for c in doc_commands())


def test_a_visit_is_seven_commands_and_the_needles_are_typed_once() -> None:
    """Issue 21: the review counted 15 commands for a visit, and typed the needles three times.
    The visit itself (register, screen, titrate, the pain score before, treat, outcomes, plan) is
    seven (the pain score before is its own command so that it carries the time it was asked:
    issue 20); only the titration names the sites, and the next visit names them nowhere."""
    commands = doc_commands()
    first = commands[:next(i for i, c in enumerate(commands) if c[1:3] == ["record", "verify"])]
    needed = [c for c in first if c[1] not in ("presets", "check", "preview", "console")]
    assert [" ".join(c[1:3]) if c[1] in ("patient", "visit") else c[1] for c in needed] == [
        "patient add", "visit start", "titrate", "visit outcome", "run", "visit outcome", "visit end"]
    with_sites = [c for c in commands if "--pair" in c or "--sites" in c]
    assert [c[1] for c in with_sites] == ["titrate"]


def dose_ma(stdout: str) -> float:
    return float(re.search(r"dose: channel 1: ([\d.]+) mA", stdout).group(1))


def expected_dose_ma(thresholds) -> float:  # noqa: ANN001 - ChannelThresholds
    """The segmental preset for a typical patient: 2 x sensory, never above 0.9 x motor."""
    return min(round(2.0 * thresholds.sensory_ma, 3), int(900 * thresholds.motor_ma) / 1000)


def test_every_command_in_the_clinician_doc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walkthrough, run as written: a whole visit (screening, titration on the preset's
    waveform, the dose from the stored thresholds, treatment, outcomes, plan) and a second
    visit that starts from the first."""
    from firmware_host.visits import VisitStore

    monkeypatch.delenv("ESTIM_STORE_URL", raising=False)

    def estim(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=child_env(), timeout=60,
                              stdin=subprocess.DEVNULL)

    ran: list[tuple[list[str], subprocess.CompletedProcess[str]]] = []
    for n, command in enumerate(doc_commands()):
        argv = [sys.executable, "-m", "firmware_host", *command[1:]]
        if command[1] == "titrate":
            done = titrate_with_keys([*argv, "--ramp", "2"], tmp_path / f"titration-{n}.jsonl", KEY_LEVELS_UA,
                                     cwd=tmp_path)
        else:
            done = estim(argv + (["--minutes", "0.05"] if command[1] == "run" else []))
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
        ran.append((command, done))
        if command[1:3] == ["visit", "start"] and len([c for c, _ in ran if c[1:3] == ["visit", "start"]]) == 2:
            stale = estim([sys.executable, "-m", "firmware_host", "run", "--patient", "P001", "--last-dose"])
            assert stale.returncode == 2 and "titrate" in stale.stderr   # last visit's thresholds never dose today
            assert "reusing channel 1: left forearm / left hand (LI4), needles 0.25x15 mm, in 10 mm" in stale.stdout

    runs = [done for c, done in ran if c[1] == "run"]
    titrations = [done for c, done in ran if c[1] == "titrate" and "--patient" in c]
    with VisitStore() as store:
        second, first = store.visits("P001")
    assert first.screening.answers and first.thresholds[0].waveform.frequency_hz == 100   # the preset's waveform
    assert first.thresholds[0].placement.b.point == "LI4"
    assert dose_ma(runs[0].stdout) == pytest.approx(expected_dose_ma(first.thresholds[0]))
    assert "sources:" in runs[0].stdout and "caution: bleeding risk" in runs[0].stderr
    assert first.doses[0].completed and "visit-1.jsonl" in {Path(path).name for _, path in first.records}
    assert (tmp_path / "visit-1.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "visit-1.json").exists()
    assert first.outcome.pain_before == 6 and first.plan.kinds == ("loading", "breathing") and first.ended_at
    assert first.outcome.pain_before_at < first.doses[0].recorded_at              # stamped when it was asked
    assert "last time" in titrations[1].stderr and "since last time: sensory" in titrations[1].stderr
    assert "last dose: Segmental" in titrations[1].stdout
    assert "2 x sensory" in runs[0].stdout and "real peak" in runs[0].stdout   # the arithmetic, before current
    assert dose_ma(runs[1].stdout) == pytest.approx(expected_dose_ma(second.thresholds[0]))
    assert second.plan.kinds == ("loading",) and second.doses[0].request["preset"] == "segmental_inhibition"
    shown = next(done for c, done in ran if c[1:3] == ["patient", "show"]).stdout
    assert "pain 6 -> 4" in shown and "bleeding risk" in shown
    assert (tmp_path / "P001-trend.png").read_bytes()[:4] == b"\x89PNG"
