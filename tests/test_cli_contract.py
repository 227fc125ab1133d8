"""A command line that never guesses: every flag used or refused, the documented exit codes,
files checked before any device is opened, errors a person can read, a closed stdout that
does not stop a session, a device in use called so, and faults cleared by name."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safety import read_entries

from firmware_host.sim.process import SimProcess, child_env, output_off, spawn_sim

from support import DECLARED, REPO

pytestmark = pytest.mark.timeout(60)

SITES = ["--sites", "left:forearm,left:forearm", "--inserted", "10"]
DIRECT = ["--channel", "1", "--frequency", "20", "--pulse-width", "200", "--amplitude", "1", *SITES, *DECLARED]


def estim(*args: str, timeout: float = 40, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(), cwd=REPO, **kw)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


def test_bare_estim_prints_help_and_exits_2() -> None:
    done = estim()
    assert done.returncode == 2 and "usage: estim" in done.stderr and "exit codes" in done.stderr


@pytest.mark.parametrize("extra,flag", [
    (["--preset", "segmental_inhibition", "--frequency", "3"], "--frequency"),
    (["--preset", "segmental_inhibition", "--amplitude", "3"], "--amplitude"),
    (["--program", "programs/low_rate_2hz.toml", "--seconds", "5"], "--seconds"),
    (["--program", "programs/low_rate_2hz.toml", "--sensitivity", "hyper"], "--sensitivity"),
    (["--thresholds", "th.json"], "--thresholds"),
])
def test_a_flag_that_would_go_unused_is_refused_naming_it(extra: list[str], flag: str) -> None:
    base = ["--channel", "1", *SITES] if "--program" not in extra else []
    direct = [] if ("--preset" in extra or "--program" in extra) else DIRECT[2:8] + ["--seconds", "5"]
    done = estim("run", *base, *direct, *extra)
    assert done.returncode == 2, done.stderr
    assert flag in done.stderr and "cannot be used with" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [
    ["run", *DIRECT[:6], "--amp", "1", *SITES, "--seconds", "1"],
    ["titrate", "--channel", "1", *SITES, "--rep", "2"],
    ["clear-faults", "--device", "sim://", "--operator", "J. Doe", "--rec", "x.jsonl"],
    ["record", "verify", "x.jsonl", "--stor", "sqlite:///x"],
])
def test_an_abbreviated_flag_is_refused_not_guessed(command: list[str]) -> None:
    done = estim(*command)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr, done.stderr
    assert "device:" not in done.stdout


@pytest.mark.parametrize("length", [["--minutes", "61"], ["--seconds", "100000"]])
def test_a_session_longer_than_an_hour_is_refused_before_anything_is_sent(sim: SimProcess,
                                                                         length: list[str]) -> None:
    done = estim("run", "--device", sim.url, *DIRECT, *length)
    assert done.returncode == 2 and "60 minutes" in done.stderr and "nothing was sent" in done.stderr
    assert "device:" not in done.stdout  # refused before the device was opened
    assert not [e for e in sim.events() if e["kind"] == "output_off"]


def test_json_refusals_are_json_on_stdout() -> None:
    done = estim("run", *DIRECT, "--minutes", "61", "--json")
    assert done.returncode == 2
    refusal = json.loads(done.stdout.strip().splitlines()[-1])
    assert refusal["outcome"] == "refused" and refusal["rule"] == "session.too_long" and refusal["sent"] is False


@pytest.mark.parametrize("place", ["/sys/estim-session.jsonl", "/proc/self/estim/session.jsonl", "/dev/full"])
def test_a_record_that_cannot_be_written_is_refused_before_the_device_is_opened(sim: SimProcess,
                                                                               place: str) -> None:
    done = estim("run", "--device", sim.url, *DIRECT, "--seconds", "5", "--record", place)
    assert done.returncode == 2 and "record" in done.stderr and "Traceback" not in done.stderr
    assert "device:" not in done.stdout


def test_errors_name_the_limit_not_the_library() -> None:
    done = estim("run", *DIRECT[:2], "--frequency", "300", *DIRECT[4:], "--seconds", "5")
    assert done.returncode == 2
    assert "the device allows at most 200 Hz" in done.stderr and "pydantic" not in done.stderr
    done = estim("run", *DIRECT, "--seconds", "5", "--ramp", "3")
    assert done.returncode == 2 and "at most 2" in done.stderr and "errors.pydantic.dev" not in done.stderr


def test_a_closed_stdout_does_not_stop_a_session(sim: SimProcess) -> None:
    """`estim run ... | head -1`: the reader goes away, the session still ends as planned."""
    proc = subprocess.Popen([sys.executable, "-m", "firmware_host", "run", "--device", sim.url, *DIRECT,
                             "--seconds", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=40) == 0, proc.stderr.read()
    assert not [e for e in sim.events() if output_off("estop")(e) or output_off("watchdog")(e)]


def test_a_tcp_device_in_use_says_so(tmp_path: Path) -> None:
    with spawn_sim("tcp:127.0.0.1:0", trace_path=tmp_path / "trace.jsonl") as sim:
        host, port = sim.url.removeprefix("socket://").rsplit(":", 1)
        with socket.create_connection((host, int(port))):
            done = estim("run", "--device", sim.url, *DIRECT, "--seconds", "2")
    assert done.returncode == 4 and "in use" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_device_exits_4() -> None:
    done = estim("run", "--device", "/dev/ttyNOSUCH0", *DIRECT, "--seconds", "2")
    assert done.returncode == 4 and "Traceback" not in done.stderr


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("address,said", [
    ("foo://bar", "is not a device address"),
    ("socket://127.0.0.1:{port}", "nothing is listening"),
    ("tcp://127.0.0.1:{port}", "nothing is listening"),
])
def test_an_address_that_leads_nowhere_exits_4_in_plain_words(address: str, said: str) -> None:
    done = estim("run", "--device", address.format(port=_free_tcp_port()), *DIRECT, "--seconds", "2")
    assert done.returncode == 4 and said in done.stderr and "Traceback" not in done.stderr
    assert "Errno" not in done.stderr and "Could not open port" not in done.stderr


@pytest.mark.parametrize("answer", [b"", bytes(range(256))], ids=["silent", "garbage"])
def test_a_port_that_is_not_a_stimulator_is_said_in_plain_words(answer: bytes) -> None:
    """A silent port, or one that pours out bytes that are no frames: exit 4, one plain line on
    stderr, the link's details in estim.log (for an engineer), no traceback."""
    import os
    import pty
    import threading
    import tty

    controller, port = pty.openpty()
    tty.setraw(port)
    done_writing = threading.Event()

    def pour() -> None:
        while answer and not done_writing.wait(0.01):
            try:
                os.write(controller, answer)
            except OSError:
                return

    writer = threading.Thread(target=pour, daemon=True)
    writer.start()
    record = Path(child_env()["XDG_DATA_HOME"]) / "attempt.jsonl"
    try:
        done = estim("run", "--device", os.ttyname(port), *DIRECT, "--seconds", "1", "--record", str(record))
    finally:
        done_writing.set()
        writer.join()
        os.close(controller)
        os.close(port)
    assert done.returncode == 4, done.stderr
    assert "did not answer as a stimulator" in done.stderr and "switched on" in done.stderr
    assert "Traceback" not in done.stderr and "retransmission" not in done.stderr and "seq" not in done.stderr
    log = Path(child_env()["XDG_STATE_HOME"]) / "estim" / "estim.log"
    assert "lost" in log.read_text()
    assert estim("record", "verify", str(record)).returncode == 0  # the attempt is documented, and why it ended
    why = [e["data"] for e in read_entries(record) if e["kind"] == "not_started"]
    assert why and why[0]["outcome"] == "device not reachable" and "did not answer" in why[0]["why"]
    shown = estim("record", "show", str(record))
    assert "not started: device not reachable" in shown.stdout, shown.stdout


def test_sessions_started_in_the_same_second_keep_separate_records(tmp_path: Path) -> None:
    """Two rooms (or one script) starting at once: each default record is its own file, both verify."""
    with spawn_sim("pty", trace_path=tmp_path / "a.jsonl") as one, \
            spawn_sim("tcp:127.0.0.1:0", trace_path=tmp_path / "b.jsonl") as two:
        runs = [subprocess.Popen([sys.executable, "-m", "firmware_host", "run", "--device", url, *DIRECT,
                                  "--seconds", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=child_env(), cwd=REPO)
                for url in (one.url, two.url.replace("socket://", "tcp://"))]
        outcomes = [(run.wait(timeout=40), run.stdout.read() + run.stderr.read())  # type: ignore[union-attr]
                    for run in runs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    records = [line.split("record: ", 1)[1].split(" (id ")[0] for _, said in outcomes for line in said.splitlines()
               if line.startswith("record: ")]
    assert len(set(records)) == 2, records
    assert all(said.count("research and investigational use only") == 1 for _, said in outcomes)
    assert all(estim("record", "verify", path).returncode == 0 for path in records)


def test_a_stop_is_cleared_by_name_and_the_next_session_runs(sim: SimProcess, tmp_path: Path) -> None:
    stopped = subprocess.Popen([sys.executable, "-m", "firmware_host", "run", "--device", sim.url, *DIRECT,
                                "--seconds", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=child_env(), cwd=REPO)
    assert stopped.stdout is not None
    while "ch1 on" not in stopped.stdout.readline():
        pass
    stopped.send_signal(2)  # Ctrl-C
    assert stopped.wait(timeout=20) == 130
    refused = estim("run", "--device", sim.url, *DIRECT, "--seconds", "1")
    assert refused.returncode == 3 and "estim clear-faults --device" in refused.stderr
    assert estim("clear-faults", "--device", sim.url, "--operator", "x").returncode == 2  # not a name
    record = tmp_path / "clear.jsonl"
    cleared = estim("clear-faults", "--device", sim.url, "--operator", "J. Doe", "--record", str(record), "--json")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) | {"outcome": "cleared", "latched": ["ESTOP"], "operator": "J. Doe"} == \
        json.loads(cleared.stdout)
    assert "someone stopped the stimulation" in cleared.stderr
    assert estim("record", "verify", str(record)).returncode == 0
    assert "J. Doe" in record.read_text()
    assert estim("run", "--device", sim.url, *DIRECT, "--seconds", "1").returncode == 0
    nothing = estim("clear-faults", "--device", sim.url, "--operator", "J. Doe")
    assert nothing.returncode == 0 and "nothing is latched" in nothing.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [
    ["run", "--channel", "1", "--frequency", "2", "--pulse-width", "200", "--amplitude", "1", "--seconds", "1",
     "--yes"],
    ["titrate", "--channel", "1", "--frequency", "2", "--pulse-width", "200", "--yes"],
    ["console", "--channel", "1", "--frequency", "2", "--pulse-width", "200", "--minutes", "1"],
])
def test_a_record_key_of_an_older_estim_is_refused_in_words_before_any_session(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A computer upgraded from an estim that signed with a shared secret: every session command
    says what to do, and none starts (no traceback, no record)."""
    keys = tmp_path / "config" / "estim" / "keys"
    keys.mkdir(parents=True)
    (keys / "k-0ld").with_suffix(".json").write_text(json.dumps(
        {"id": "k-0ld", "algorithm": "hmac-sha256", "secret": "00" * 32, "label": "old", "created": "2026-01-01"}))
    (keys / "default").write_text("k-0ld")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    record = tmp_path / "session.jsonl"
    done = estim(*command, "--sites", "left:forearm,left:forearm", "--inserted", "10", "--record", str(record),
                 input="")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no usable record key" in done.stderr and "run `estim keys init`" in done.stderr
    assert "Traceback" not in done.stderr and not record.exists()
