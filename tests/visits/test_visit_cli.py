"""The visit's rules at the command line, each on the simulated device (sim://): titration's
top mark, STOP and --out; screening before any stimulation; the inserted depth."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from firmware_host.cli.options import parse_sites
from safety.thresholds import ChannelThresholds, TitrationWaveform, load, save
from safety import Shape
from support import titrate_with_keys

pytestmark = pytest.mark.timeout(60)

SITES = ["--channel", "1", "--sites", "left:forearm,left:forearm", "--inserted", "10"]
WAVE = ["--frequency", "2", "--pulse-width", "200", "--ramp", "2"]


def estim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=50, stdin=subprocess.DEVNULL)


def entries(record: Path) -> list[dict]:
    from safety import read_entries

    return list(read_entries(record)) if record.exists() else []


def titrate(record: Path, keys: list[tuple[str, int]], *extra: str) -> subprocess.CompletedProcess[str]:
    return titrate_with_keys([sys.executable, "-m", "firmware_host", "titrate", *SITES, *WAVE, "--subject", "P001", *extra],
                             record, keys)


def set_channel_ua(record: Path) -> list[tuple[str, int]]:
    """('mark' kind or 'set' , µA) in record order: each SetChannel sent and each mark."""
    out = []
    for r in entries(record):
        if r["kind"] == "threshold_mark":
            out.append((r["data"]["kind"], round(r["data"]["amplitude_ma"] * 1000)))
        elif r["kind"] == "approved" and r["data"].get("command", {}).get("type") == "SetChannel":
            out.append(("set", round(r["data"]["command"]["setting"]["amplitude_ma"] * 1000)))
    return out


def test_titration_top_mark_drops_the_current_at_once(tmp_path: Path) -> None:
    record = tmp_path / "t.jsonl"
    done = titrate(record, [("s", 400), ("m", 800), ("t", 1200)])
    assert done.returncode == 0, done.stderr
    events = set_channel_ua(record)
    after_top = events[[kind for kind, _ in events].index("tolerance") + 1:]
    assert after_top[0] == ("set", 0)          # the very next setting is 0 mA: no ramp down from the top


def test_titration_stop_key_ends_without_an_estop_and_keeps_no_thresholds(tmp_path: Path) -> None:
    record, out = tmp_path / "t.jsonl", tmp_path / "th.json"
    done = titrate(record, [("s", 400), ("q", 700)], "--out", str(out))
    assert done.returncode == 3, done.stderr
    assert "ended: q" in done.stderr and "(e-stop)" not in done.stderr
    kinds = {r["kind"] for r in entries(record)}
    assert "estop" not in kinds and not out.exists()
    assert set_channel_ua(record)[-1] == ("set", 0)


def test_an_aborted_titration_never_overwrites_a_good_thresholds_file(tmp_path: Path) -> None:
    out = tmp_path / "th.json"
    save(out, [ChannelThresholds(1, parse_sites("left:forearm,left:forearm"), TitrationWaveform(Shape.BIPHASIC, 2, 200),
                                 datetime.now(timezone.utc), 1.0, 2.0, 4.0)])
    good = out.read_bytes()
    estopped = titrate(tmp_path / "t2.jsonl", [("s", 300), (" ", 500)], "--out", str(out))   # space: STOP
    assert estopped.returncode == 3 and "(e-stop)" in estopped.stderr
    assert out.read_bytes() == good


def test_titration_out_is_validated_before_the_patient_is_touched(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    record = tmp_path / "t.jsonl"
    done = estim("titrate", *SITES, *WAVE, "--record", str(record), "--out", str(blocker / "th.json"))
    assert done.returncode == 2 and "cannot be written" in done.stderr
    assert not record.exists()                # no session was opened


def test_titration_repeats_and_averages_aiming_at_strong_but_comfortable(tmp_path: Path) -> None:
    record, out = tmp_path / "t.jsonl", tmp_path / "th.json"
    keys = [("s", 400), ("m", 800), ("t", 1200), ("s", 600), ("m", 1000), ("t", 1400)]
    done = titrate(record, keys, "--repeat", "2", "--aim", "comfortable", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "strong but comfortable" in done.stderr       # what `t` marked, and that doses stay below it
    marks = [(k, ua) for k, ua in set_channel_ua(record) if k != "set"]
    [kept] = load(out)
    for kind in ("sensory", "motor", "tolerance"):
        values = [ua / 1000 for k, ua in marks if k == kind]
        assert len(values) == 2 and kept.value(kind) == pytest.approx(sum(values) / 2, abs=1e-3)
    assert kept.repeats == 2


def test_no_stimulation_without_todays_screening() -> None:
    assert estim("patient", "add", "P7").returncode == 0
    done = estim("titrate", *SITES, *WAVE, "--patient", "P7")
    assert done.returncode == 2 and "estim visit start P7" in done.stderr


def test_screening_refuses_sites_before_anything_is_sent(tmp_path: Path) -> None:
    assert estim("patient", "add", "P8").returncode == 0
    assert estim("visit", "start", "P8", "--yes", "heart_disease", "--no", "rest").returncode == 0
    record = tmp_path / "r.jsonl"
    done = estim("run", "--patient", "P8", "--channel", "1", "--sites", "right:chest,right:chest", "--inserted", "5",
                 "--frequency", "2", "--pulse-width", "200", "--amplitude", "1", "--seconds", "1",
                 "--record", str(record))
    assert done.returncode == 2 and "away from the chest" in done.stderr
    assert not record.exists()


def test_a_screening_that_rules_out_stimulation_is_recorded_and_says_why() -> None:
    assert estim("patient", "add", "P9").returncode == 0
    done = estim("visit", "start", "P9", "--yes", "cannot_report", "--no", "rest")
    assert done.returncode == 2 and "cannot report" in done.stderr
    assert "screening: cannot report" in estim("patient", "show", "P9").stdout


def test_screening_must_be_answered_in_full() -> None:
    assert estim("patient", "add", "P10").returncode == 0
    done = estim("visit", "start", "P10", "--no", "pregnant")
    assert done.returncode == 2 and "still open" in done.stderr and "implanted_device" in done.stderr


def test_the_inserted_depth_is_required_and_fits_the_needle() -> None:
    base = ["run", "--channel", "1", "--sites", "left:forearm,left:forearm", "--frequency", "2",
            "--pulse-width", "200", "--amplitude", "1", "--seconds", "1"]
    missing = estim(*base)
    assert missing.returncode == 2 and "--inserted" in missing.stderr
    too_deep = estim(*base, "--needle", "0.25x15", "--inserted", "20")
    assert too_deep.returncode == 2 and "at most its length" in too_deep.stderr


def test_plain_words_for_the_clinician(tmp_path: Path) -> None:
    """What a clinician reads names no rule ids and dumps no library errors."""
    outputs = [estim("presets", "show", "descending_modulation"),
               estim("visit", "outcome", "NOPE", "--pain-before", "12"),
               estim("check", "--preset", "segmental_inhibition", *SITES[2:])]
    for done in outputs:
        text = done.stdout + done.stderr
        assert "Traceback" not in text and "validation error" not in text and "pydantic" not in text
        assert not any(word in text for word in ("screening.", "placement.", "needle.shannon", "dynamic."))


DIRECT = ["--channel", "1", "--frequency", "2", "--pulse-width", "200", "--amplitude", "0.5",
          "--sites", "left:forearm,left:forearm", "--inserted", "10"]


def test_every_session_for_a_patient_keeps_its_dose_even_when_killed(tmp_path: Path) -> None:
    """A direct run stores its dose (and --last-dose repeats it); a session killed mid-way leaves
    its dose stored as not completed."""
    import signal

    from firmware_host.visits import VisitStore

    assert estim("patient", "add", "P20").returncode == 0
    assert estim("visit", "start", "P20", "--no", "all").returncode == 0
    direct = estim("run", "--patient", "P20", *DIRECT, "--seconds", "0.2", "--record", str(tmp_path / "a.jsonl"))
    assert direct.returncode == 0, direct.stderr
    assert "(id " in direct.stdout                                       # the id `record verify --id` takes
    again = estim("run", "--patient", "P20", "--last-dose")
    assert again.returncode == 0 and "last dose: direct" in again.stdout, again.stderr
    killed = subprocess.Popen([sys.executable, "-m", "firmware_host", "run", "--patient", "P20", *DIRECT,
                               "--seconds", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env(), stdin=subprocess.DEVNULL)
    assert killed.stdout is not None
    while "ch1 on" not in killed.stdout.readline():
        pass
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    with VisitStore() as store:
        [visit] = store.visits("P20")
    assert [(d.program, d.completed, d.finished) for d in visit.doses] == [
        ("direct", True, True), ("direct", True, True), ("direct", False, False)]
    assert visit.doses[0].request["amplitude"] == 0.5 and visit.doses[0].delivered[0]["peak_ma"] == 0.5
    assert "not completed: the session never ended" in estim("patient", "show", "P20").stdout
