"""End-to-end tests of `estim` subcommands, run as a subprocess against the simulator process
on a pseudo-terminal; exit codes, printed output, records and the device's own trace."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import SimProcess, child_env, spawn_sim
from firmware_host.waveforms import Needle, Program, Site, preset_program
from safety.thresholds import load as load_thresholds
from support import DECLARED, REPO, peak_ua, wait_for, write_thresholds

pytestmark = pytest.mark.timeout(40)

SITES = ["--sites", "left:forearm,left:forearm", "--inserted", "10"]
FOREARM = Needle(diameter_mm=0.25, length_mm=15, inserted_mm=10, site_a=Site(region="forearm", side="left"),
                 site_b=Site(region="forearm", side="left"))


def preset_thresholds(path: Path, preset: str) -> Path:
    """Thresholds measured now on channel 1 at SITES, on the preset's waveform."""
    return write_thresholds(path, preset_program(preset, {1: FOREARM}, "typical"))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


def estim(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)


def spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "firmware_host", *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def records(path: Path) -> list[dict]:
    """Every entry, telemetry readings expanded from their blocks (the record's own reader)."""
    from safety import read_entries

    return list(read_entries(path))


def run_args(sim: SimProcess, record: Path, *extra: str, seconds: str = "1") -> list[str]:
    return ["run", "--device", sim.url, "--channel", "1", "--frequency", "2", "--pulse-width", "200",
            "--amplitude", "1", "--ramp", "2", "--seconds", seconds, *SITES, *DECLARED, "--record", str(record), *extra]


def holding(record: Path) -> bool:
    """The run has ramped up and is holding: telemetry shows the full 1 mA on channel 1."""
    return record.exists() and any(r["kind"] == "telemetry" and r["data"]["amplitude_ua"] == 1000
                                   for r in records(record))


# --- help -----------------------------------------------------------------------------


def test_help_lists_every_command_and_each_has_examples() -> None:
    top = estim("--help")
    assert top.returncode == 0
    for name in ("run", "devices", "titrate", "console", "record", "check"):
        assert name in top.stdout
        sub = estim(name, "--help")
        assert sub.returncode == 0 and "examples:" in sub.stdout, name


def test_devices_lists_the_simulator() -> None:
    table = estim("devices")
    assert table.returncode == 0 and "sim://" in table.stdout
    listed = json.loads(estim("devices", "--json").stdout)
    assert any(d["url"] == "sim://" for d in listed)


# --- run ------------------------------------------------------------------------------


def test_run_completes_and_record_verifies_and_shows(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "session.jsonl"
    done = estim(*run_args(sim, record, "--verbose"))
    assert done.returncode == 0, done.stderr
    assert "session complete" in done.stdout
    assert "send lateness p50" in done.stdout and "output at the needle" in done.stdout   # asked for with --verbose

    verify = estim("record", "verify", str(record))
    assert verify.returncode == 0 and "intact and closed" in verify.stdout

    png = tmp_path / "plot.png"
    show = estim("record", "show", str(record), "--plot", str(png))
    assert show.returncode == 0, show.stderr
    assert "SIM-0001" in show.stdout and "output as delivered" in show.stdout
    assert re.search(r"commands: +\d+ settings, \d+ output switchings", show.stdout)  # in words, not class names
    assert re.search(r"prescription: cap channel 1 \d+ mA; ramp [\d.]+ mA/s; 2 Hz; 200 µs", show.stdout)
    assert not re.search(r"[{}\[\]]|SetChannel", show.stdout.split("output as delivered")[0]), show.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(estim("record", "show", str(record), "--json").stdout)
    assert summary["output"][0]["channel"] == 1 and summary["output"][0]["peak_ma"] == pytest.approx(1.0)
    assert summary["faults"] == [] and summary["refusals"] == []

    # tampering with one line (a copy, checked by its signatures alone): exit 6, naming the line
    lines = record.read_text().splitlines()
    lines[5] = lines[5].replace(",", ", ", 1)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    bad = estim("record", "verify", str(tampered), "--no-store")
    assert bad.returncode == 6 and "ALTERED" in bad.stdout
    first = json.loads(estim("record", "verify", str(tampered), "--no-store", "--json").stdout)["first_bad_line"]
    assert first <= 6 and (f"line {first}" in bad.stdout or f"lines {first}-" in bad.stdout)   # the signed span
    assert estim("record", "verify", str(tampered)).returncode == 6          # with the store: a copy, too

    # the end cut off (to what looks like a killed writer's partial line): the visit store saw the close
    lines = record.read_text().splitlines()
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])
    cut = estim("record", "verify", str(truncated))
    assert cut.returncode == 6 and "visit store saw" in cut.stdout


def test_run_refuses_monophasic_on_needles_before_sending(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "refused.jsonl"
    done = estim(*run_args(sim, record, "--shape", "monophasic"))
    assert done.returncode == 2
    assert "refused" in done.stderr and "nothing was sent" in done.stderr
    assert not any(r["kind"] in ("approved", "consumed") for r in records(record))
    assert sim.events() == []


def test_run_refuses_amplitude_above_the_cap(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "capped.jsonl"
    done = estim(*run_args(sim, record, "--max-amplitude", "0.5"))
    assert done.returncode == 2
    assert "refused" in done.stderr and "mA" in done.stderr
    assert not any(r["kind"] == "consumed" for r in records(record))
    assert sim.events() == []


def test_run_exits_3_when_the_device_stops_answering(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "fault.jsonl"
    proc = spawn(*run_args(sim, record, seconds="20"))
    wait_for(lambda: holding(record))
    sim.pause()  # no telemetry: the supervisor stops the session
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        sim.resume()
    assert proc.returncode == 3, err
    assert "stopped:" in err and ("telemetry" in err or "link to the device lost" in err)


def test_a_device_that_vanishes_is_not_claimed_off(tmp_path: Path) -> None:
    """The device's process dies mid-session: exit 3, and no claim that its outputs are off
    (nothing can confirm it over a dead link); what the device's watchdog guarantees instead."""
    record = tmp_path / "vanished.jsonl"
    with spawn_sim("pty", trace_path=tmp_path / "trace.jsonl") as sim:
        proc = spawn(*run_args(sim, record, seconds="20"))
        wait_for(lambda: holding(record))
        sim.proc.kill()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 3, err
    assert "link to the device lost" in err and "the connection closed" in err
    assert "every output is off" not in err and "watchdog switches its outputs off within 300 ms" in err
    assert "Traceback" not in err and "readiness to read" not in err


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_run_signal_during_hold_estops(sim: SimProcess, tmp_path: Path, sig: int, code: int, word: str) -> None:
    record = tmp_path / "signal.jsonl"
    proc = spawn(*run_args(sim, record, seconds="20"))
    wait_for(lambda: holding(record))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == code
    assert word in err and "e-stop" in err
    off = sim.wait_event(lambda e: e["kind"] == "output_off")
    assert off["reason"] == "estop" and off["mask"] == 1


# --- titrate --------------------------------------------------------------------------


def titrate_args(sim: SimProcess, record: Path, *extra: str) -> list[str]:
    return ["titrate", "--device", sim.url, "--channel", "1", "--frequency", "2", "--pulse-width", "200",
            "--ramp", "2", *SITES, *DECLARED, "--record", str(record), *extra]


def test_titrate_with_fed_keys_writes_thresholds(sim: SimProcess, tmp_path: Path) -> None:
    record, out = tmp_path / "titration.jsonl", tmp_path / "thresholds.json"
    proc = spawn(*titrate_args(sim, record, "--out", str(out), "--json"), stdin=subprocess.PIPE)
    assert proc.stdin is not None
    wait_for(lambda: record.exists() and any(r["kind"] == "ack" for r in records(record)))
    for key, pause in (("s", 0.4), ("m", 0.4), ("t", 0.4)):
        time.sleep(pause)
        proc.stdin.write(key + "\n")
        proc.stdin.flush()
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    [bound] = load_thresholds(out)
    marks = {"sensory": bound.sensory_ma, "motor": bound.motor_ma, "tolerance": bound.tolerance_ma}
    assert 0 < marks["sensory"] < marks["motor"] < marks["tolerance"] <= 10
    assert (bound.channel, str(bound.placement.a), bound.waveform.frequency_hz, bound.waveform.pulse_width_us) == (
        1, "left forearm", 2.0, 200.0)
    printed = json.loads(stdout.strip().splitlines()[-1])
    assert printed["channel"] == 1 and printed["without_top_mark"] == []
    assert {k: printed["thresholds"][0][k] for k in marks} == marks and printed["thresholds"][0]["patient"] == "P001"
    kept = [r["data"] for r in records(record) if r["kind"] == "thresholds"]
    assert kept and kept[-1]["tolerance"] == marks["tolerance"]
    assert estim("record", "verify", str(record)).returncode == 0
    assert "thresholds: channel 1" in estim("record", "show", str(record)).stdout
    assert not [e for e in sim.events() if e["kind"] == "output_off" and e["reason"] != "command"]


def test_titrate_ignores_a_stray_key_and_space_is_the_stop(sim: SimProcess, tmp_path: Path) -> None:
    """Issue 21: any stray key used to e-stop a titration. Now it is ignored (the keys are said
    again) and the ramp goes on; space is the STOP, as in every session command."""
    record = tmp_path / "stopped.jsonl"
    proc = spawn(*titrate_args(sim, record), stdin=subprocess.PIPE)
    assert proc.stdin is not None
    wait_for(lambda: record.exists() and any(r["kind"] == "telemetry" and r["data"]["amplitude_ua"] > 0
                                             for r in records(record)))
    proc.stdin.write("x\n")
    proc.stdin.flush()
    level = peak_ua(record)
    wait_for(lambda: peak_ua(record) > level + 200)   # still rising after the stray key
    assert proc.poll() is None
    proc.stdin.write(" ")
    proc.stdin.flush()
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 3 and "that key does nothing here" in stderr and "STOP" in stderr
    assert sim.wait_event(lambda e: e["kind"] == "output_off")["reason"] == "estop"


# --- check ----------------------------------------------------------------------------


@pytest.mark.parametrize("program", sorted((REPO / "firmware_host" / "programs").glob("*.toml")), ids=lambda p: p.stem)
def test_check_passes_shipped_programs(program: Path, tmp_path: Path) -> None:
    loaded = Program.load(program)
    given = ["--thresholds", str(write_thresholds(tmp_path / "th.json", loaded))] if loaded.needed_thresholds else []
    done = estim("check", str(program), *given)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "program passes every rule" in done.stdout
    assert "lengthen the ramp" not in done.stdout   # delivered as written: no rate-limited rises


def test_shipped_programs_cover_every_mechanism() -> None:
    from firmware_host.waveforms import Mechanism

    assert {Program.load(p).mechanism for p in (REPO / "firmware_host" / "programs").glob("*.toml")} == set(Mechanism)


BAD_PROGRAM = """
name = "too dense for a thin needle"
mechanism = "peripheral_analgesia"

[prescription]
max_minutes = 10
ramp_rate_ma_per_s = 0.5
sensitivity = "typical"

[prescription.max_amplitude_ma]
1 = 9.0

[needles.1]
diameter_mm = 0.16
length_mm = 5
inserted_mm = 5
site_a = { region = "forearm", side = "left" }
site_b = { region = "forearm", side = "left" }

[[segments]]
duration_s = 60

[segments.channels.1]
pattern = "continuous"
frequency_hz = 2
pulse_width_us = 800
intensity = 9.0
"""


def test_check_refuses_a_bad_program_naming_rule_channel_value(tmp_path: Path) -> None:
    program = tmp_path / "bad.toml"
    program.write_text(BAD_PROGRAM)
    done = estim("check", str(program))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "program refused" in done.stdout
    assert "charge density" in done.stdout and "insert the needle deeper" in done.stdout
    assert "shannon_k" not in done.stdout      # plain words for the clinician; the id is in --json
    verdict = json.loads(estim("check", str(program), "--json").stdout)
    assert verdict["ok"] is False
    finding = next(v for v in verdict["violations"] if "shannon_k" in v["rule"])
    assert finding["channel"] == 1 and finding["value"] > 1.85


def test_check_without_needed_thresholds_says_what_to_do() -> None:
    done = estim("check", str(REPO / "firmware_host" / "programs" / "low_rate_2hz.toml"))
    assert done.returncode == 2
    assert "--thresholds" in done.stderr and "Traceback" not in done.stderr


def test_bad_input_is_a_calm_message(tmp_path: Path) -> None:
    missing = estim("record", "verify", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 7 and "no such record" in missing.stderr
    sites = estim("titrate", "--channel", "1", "--frequency", "2", "--pulse-width", "200",
                  "--sites", "left:elbowish", "--record", str(tmp_path / "r.jsonl"))
    assert sites.returncode == 2 and "Traceback" not in sites.stderr


def test_run_preset_streams_the_program_and_ends_safe(sim: SimProcess, tmp_path: Path) -> None:
    thresholds = preset_thresholds(tmp_path / "thresholds.json", "segmental_inhibition")
    record = tmp_path / "preset.jsonl"
    done = estim("run", "--device", sim.url, "--preset", "segmental_inhibition", "--channel", "1", *SITES, *DECLARED,
                 "--thresholds", str(thresholds), "--minutes", "0.1", "--record", str(record), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session complete: every output off" in done.stdout
    assert "send lateness" not in done.stdout + done.stderr   # engineering figures: the log, or --verbose
    assert estim("record", "verify", str(record)).returncode == 0
    delivered = [r["data"]["amplitude_ua"] for r in records(record) if r["kind"] == "telemetry"]
    assert max(delivered) > 0 and delivered[-1] == 0


def test_run_program_that_breaks_a_rule_sends_nothing(sim: SimProcess, tmp_path: Path) -> None:
    program = tmp_path / "bad.toml"
    program.write_text(BAD_PROGRAM)
    record = tmp_path / "bad.jsonl"
    done = estim("run", "--device", sim.url, "--program", str(program), *DECLARED, "--record", str(record))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "charge density" in done.stderr and "Traceback" not in done.stderr
    kinds = {r["kind"] for r in records(record)}
    assert "approved" not in kinds and "consumed" not in kinds
    assert not [e for e in sim.events() if e["kind"] == "output_off" and e.get("reason") != "hello"]


def test_preview_draws_a_program_and_a_preset(tmp_path: Path) -> None:
    dd = REPO / "firmware_host" / "programs" / "dense_disperse_2_100hz.toml"
    for args, thresholds, out in (
            ([str(dd)], write_thresholds(tmp_path / "dd.json", Program.load(dd)), tmp_path / "dd.png"),
            (["--preset", "descending_modulation", *SITES],
             preset_thresholds(tmp_path / "dm.json", "descending_modulation"), tmp_path / "dm.png")):
        done = estim("preview", *args, "--thresholds", str(thresholds), "--out", str(out), timeout=60)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    refused = estim("preview", "--preset", "segmental_inhibition", *SITES, "--out", str(tmp_path / "x.png"))
    assert refused.returncode == 2 and "--thresholds" in refused.stderr and "Traceback" not in refused.stderr


def test_preset_names_on_the_command_line_are_the_mechanisms() -> None:
    from firmware_host.cli.options import PRESET_NAMES
    from firmware_host.waveforms.program import Mechanism

    assert PRESET_NAMES == tuple(m.value for m in Mechanism)


def test_session_plan_is_in_the_record(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "plan.jsonl"
    done = estim(*run_args(sim, record, "--mechanism", "segmental_inhibition", "--sensitivity", "hyper",
                           "--plan", "graded knee extension, 3x10", "--operator", "JD"))
    assert done.returncode == 0, done.stderr
    plan = next(r["data"] for r in records(record) if r["kind"] == "session_plan")
    assert plan["mechanism"] == "segmental_inhibition" and plan["sensitivity"] == "hypersensitive"
    assert plan["integration_plan"] == "graded knee extension, 3x10" and plan["operator"] == "JD"
    shown = estim("record", "show", str(record)).stdout
    assert "segmental_inhibition" in shown and "graded knee extension" in shown
