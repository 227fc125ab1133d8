"""The acceptance suite and `estim` on a labgrid lab, end to end on one machine with real
parts (tests/lab_rig.py): a coordinator on loopback, an exporter publishing three devices'
ptys through ser2net (our simulator, and the independent peer device as ICD v1 and v2),
places tagged with what each rig is. A job reserves a place by its tags, acquires it, runs
the suite through it and releases it; a second client waits for the place or is refused,
by labgrid, by `estim` and by the suite; an exporter that dies mid-session leaves the device
safe (its watchdog) and the run says so."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_host.sim.config import SimConfig
from firmware_host.sim.process import SimProcess, output_off, spawn_sim
from tests.peer_device.options import DeviceOptions
from tests.peer_device.process import PeerProcess, spawn_peer

from lab_rig import Lab, kill_group, token_of, unavailable
from support import stimulating

pytestmark = [pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""), pytest.mark.slow]

MARGIN_S = 0.25  # scheduling slack past watchdog_ms on a busy 2-core machine
HOLDING_TEST = "test_charge_counter_matches_host_estimate"  # a session that ramps a channel and holds it


@dataclass
class Rig:
    place: str
    tags: dict[str, str]
    watchdog_s: float


def tags(channels: int, fw_major: int, fw_minor: int, icd: int) -> dict[str, str]:
    """What a place says its rig is (firmware_host.lab.rig_tags reads the same from IDENTITY)."""
    return {"channels": str(channels), "firmware": f"{fw_major}.{fw_minor}", "icd": str(icd)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Rig]]]:
    """One coordinator and one exporter for the module, publishing the three devices."""
    workdir = tmp_path_factory.mktemp("lab")
    sim_config, peer = SimConfig(), DeviceOptions()
    devices: list[SimProcess | PeerProcess] = []
    lab = None
    try:
        devices.append(spawn_sim("pty", trace_path=workdir / "sim-trace.jsonl"))
        devices.append(spawn_peer("pty", protocol_version=1))
        devices.append(spawn_peer("pty", protocol_version=2))
        lab = Lab(workdir)
        lab.export("rig-host", {"sim": devices[0].url, "peer-v1": devices[1].url, "peer-v2": devices[2].url})
        rigs = [
            Rig("sim", tags(sim_config.channels, sim_config.fw_major, sim_config.fw_minor, 2),
                sim_config.watchdog_ms / 1000),
            Rig("peer-v1", tags(peer.channels, peer.fw_major, peer.fw_minor, 1), peer.watchdog_ms / 1000),
            Rig("peer-v2", tags(peer.channels, peer.fw_major, peer.fw_minor, 2), peer.watchdog_ms / 1000),
        ]
        for rig in rigs:
            lab.add_place(rig.place, f"rig-host/{rig.place}/NetworkSerialPort", rig.tags)
        yield lab, rigs
    finally:
        if lab is not None:
            lab.close()
        for device in devices:
            device.stop()


def record_of(directory: Path) -> dict:
    records = list(directory.glob("hil-record-*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


@pytest.mark.timeout(300)
def test_the_acceptance_suite_passes_through_reserved_places_three_jobs_at_once(
        lab: tuple[Lab, list[Rig]], tmp_path: Path) -> None:
    """The CI job of hil_tests/README.md, run by three CI machines at once, one per rig: each
    reserves a rig by its tags, acquires the place reserved (`+`), runs the suite through it,
    releases it and cancels the reservation."""
    lab_, rigs = lab
    holders, suites = [], []
    try:
        for rig in rigs:
            job = lab_.client(f"ci-{rig.place}")
            holder = job.holding(token_of(job.reserve(f"name={rig.place}", f"icd={rig.tags['icd']}")))
            holder.lg("-p", "+", "acquire")
            holders.append(holder)
            suites.append(holder.hil("+", tmp_path / rig.place))
        outs = [suite.communicate(timeout=240)[0] for suite in suites]
    finally:
        for suite in suites:
            if suite.poll() is None:
                suite.kill()
        for holder in holders:
            holder.lg("-p", "+", "release", check=False)
            holder.lg("cancel-reservation", holder.env["LG_TOKEN"], check=False)
    for rig, suite, out in zip(rigs, suites, outs):
        assert suite.returncode == 0, f"{rig.place}:\n" + out[-4000:]
        record = record_of(tmp_path / rig.place)
        assert record["outcome"] == "PASS"
        assert record["rig"]["place"] == rig.place and record["rig"]["tags"] == rig.tags
        assert record["rig"]["port"].startswith("rfc2217://127.0.0.1:")
        assert record["device"]["protocol_version"] == int(rig.tags["icd"])
        outcomes = {t["nodeid"].rsplit("::", 1)[-1]: t["outcome"] for t in record["tests"]}
        assert outcomes["test_the_device_is_what_its_place_says"] == "passed"
        junit = next((tmp_path / rig.place).glob("hil-junit-*.xml")).read_text()
        assert f'<property name="place" value="{rig.place}" />' in junit


@pytest.mark.timeout(180)
def test_a_second_client_waits_for_the_place_or_is_refused(lab: tuple[Lab, list[Rig]], tmp_path: Path) -> None:
    lab_, rigs = lab
    first, second = lab_.client("ci-1"), lab_.client("ci-2")
    unheld = second.estim("lg://sim", "--seconds", "1")
    _, err = unheld.communicate(timeout=60)
    assert unheld.returncode == 4 and "not acquired: acquire it first" in err, err
    first.lg("-p", "sim", "acquire")
    try:
        refused = second.lg("-p", "sim", "acquire", check=False)
        assert refused.returncode != 0 and "already acquired by" in refused.stderr and "ci-1" in refused.stderr
        busy = second.estim("lg://sim", "--seconds", "1")
        _, err = busy.communicate(timeout=60)
        assert busy.returncode == 4 and "in use" in err and "ci-1" in err and "Traceback" not in err, err
        suite = second.hil("sim", tmp_path / "refused", "-k", "test_handshake_and_identity")
        out, _ = suite.communicate(timeout=120)
        assert suite.returncode != 0 and "not acquired by your user, acquired by ci-1" in out, out[-2000:]
        waiting = second.reserve("name=sim")
        time.sleep(2.5)  # the coordinator schedules at once on release and the client polls every second
        assert waiting.poll() is None, "the reservation did not wait for the place held by ci-1"
    finally:
        first.lg("-p", "sim", "release")
    holder = second.holding(token_of(waiting))
    try:
        holder.lg("-p", "+", "acquire")
        taken = first.lg("-p", "sim", "acquire", check=False)
        assert taken.returncode != 0 and "already acquired by" in taken.stderr
        session = holder.estim("lg://+", "--seconds", "1", "--clear-faults", "--operator", "ci-2")  # as left
        _, err = session.communicate(timeout=60)
        assert session.returncode == 0, err
    finally:
        holder.lg("-p", "+", "release", check=False)
        holder.lg("cancel-reservation", holder.env["LG_TOKEN"], check=False)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("run", ["estim", "hil"])
def test_an_exporter_that_dies_leaves_the_device_safe_and_the_run_says_so(
        lab: tuple[Lab, list[Rig]], tmp_path: Path, run: str) -> None:
    """The rig host goes away (its exporter and ser2net killed) while a session stimulates."""
    lab_, _ = lab
    place = f"doomed-{run}"
    with spawn_sim("pty", trace_path=tmp_path / "trace.jsonl") as sim:
        exporter = lab_.export(place, {"stim": sim.url})
        lab_.add_place(place, f"{place}/stim/NetworkSerialPort", {})
        client = lab_.client("ci-1")
        client.lg("-p", place, "acquire")
        try:
            if run == "estim":
                proc = client.estim(f"lg://{place}", "--seconds", "30")
                stimulating(proc)
            else:
                proc = client.hil(place, tmp_path / "hil", "-k", HOLDING_TEST)
                running(tmp_path / "hil", HOLDING_TEST)
            sim.trace.mark()
            killed = time.monotonic()
            kill_group(exporter, signal.SIGKILL)
            off = sim.wait_event(output_off("watchdog"), timeout=5)
            out, err = proc.communicate(timeout=120)
            if run == "estim":  # and the next session is told the rig host is gone
                again = client.estim(f"lg://{place}", "--seconds", "1")
                _, gone = again.communicate(timeout=60)
                assert again.returncode == 4 and "stimulator port is not published" in gone, gone
        finally:
            client.lg("-p", place, "release", check=False)
    assert off["t"] - killed <= SimConfig().watchdog_ms / 1000 + MARGIN_S
    if run == "estim":
        assert proc.returncode == 3, err
        assert "link to the device lost" in err and "watchdog switches its outputs off" in err
        assert "Traceback" not in err
    else:
        assert proc.returncode != 0, out[-3000:]
        record = record_of(tmp_path / "hil")
        assert record["outcome"] == "FAIL"
        failed = [t for t in record["tests"] if t["outcome"] in ("failed", "error")]
        assert [t for t in failed if HOLDING_TEST in t["nodeid"]
                and "the link to the device was lost during the test" in t["detail"]], failed
        assert "## Failures" in next((tmp_path / "hil").glob("hil-record-*.md")).read_text()


def running(directory: Path, test: str, timeout: float = 60) -> None:
    """Returns 2.5 s after the run's record shows `test` started (its setup opens the device,
    then the test ramps and holds a channel for about 4 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in directory.glob("hil-record-*.json"):
            if any(test in t["nodeid"] and t["outcome"] == "running" for t in json.loads(path.read_text())["tests"]):
                time.sleep(2.5)
                return
        time.sleep(0.1)
    raise AssertionError(f"{test} did not start")
