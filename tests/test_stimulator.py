"""The host API end to end: sessions over sim://, a pty and TCP to the simulator process,
the supervisor's dynamic rules, and the door the interlock keeps."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import firmware_host as fh
from firmware_host import icd, units
from firmware_host.drivers import open_transport
from firmware_host.drivers.socket_pair import SocketTransport
from firmware_host.link import Link, LinkLost
from firmware_host.stimulator import DeviceFault, Notice, Stimulator
from safety import (Approved, InterlockStateError, Refusal, SessionSetup, TreatmentRecord, read_entries,
                    verify_record)

from firmware_host.sim.process import SimProcess, child_env, spawn_sim
from support import BENCH, forearm_sites, prescription

pytestmark = pytest.mark.timeout(40)


def wait_for(predicate: Callable[[], object], timeout: float = 3.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture(params=["sim", "pty", "tcp"])
def device_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sim":
        yield "sim://"
    else:
        yield request.getfixturevalue(f"sim_{request.param}").url


@pytest.fixture
def sim_pty(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "trace.jsonl") as sim:
        yield sim


@pytest.fixture
def sim_tcp(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("tcp:127.0.0.1:0", trace_path=tmp_path / "trace.jsonl") as sim:
        yield sim


def session(url: str, record: TreatmentRecord | None = None, **rx) -> Stimulator:
    return fh.open(url, prescription=prescription(**rx), placements=forearm_sites(1, 2), record=record, envelope=BENCH)


def start(stim: Stimulator, channel: int = 1, amplitude_ma: float = 1.0) -> None:
    stim.configure(channel, frequency_hz=100, pulse_width_us=200)
    stim.enable(channel)
    stim.ramp(channel, amplitude_ma)


def test_session_ramps_and_leaves_the_device_safe(device_url: str, tmp_path: Path) -> None:
    record = TreatmentRecord(tmp_path / "session.jsonl")
    with session(device_url, record) as stim:
        start(stim, 1, 1.0)
        reading = wait_for(lambda: (r := stim.readings.get(1)) and r.amplitude_ma == 1.0 and r)
        assert reading.enabled and reading.frequency_hz == 100 and reading.pulse_width_us == 200
        assert stim.status().enabled == {1}
        wait_for(lambda: stim.readings[1].charge_total_uc > 0)
    record.close()
    verdict = verify_record(tmp_path / "session.jsonl")
    assert verdict.ok and not verdict.truncated_tail
    kinds = {e["kind"] for e in read_entries(tmp_path / "session.jsonl")}
    assert {"approved", "telemetry"} <= kinds
    if device_url != "sim://":  # the device itself says every output is off and at zero
        link = Link(open_transport(device_url))
        try:
            link.open()
            status = link.wait(link.query(icd.GetStatus()), "GET_STATUS")
            assert status.output_mask == 0
        finally:
            link.close()


def test_an_exception_in_the_session_is_an_estop(sim_pty: SimProcess) -> None:
    with pytest.raises(RuntimeError, match="clinician's script failed"):
        with session(sim_pty.url) as stim:
            start(stim, 1, 0.5)
            raise RuntimeError("clinician's script failed")
    sim_pty.wait_event(lambda e: e["kind"] == "output_off" and e.get("reason") == "estop")


def test_refused_request_sends_nothing() -> None:
    with session("sim://") as stim:
        start(stim, 1, 0.5)
        sent = stim.link_stats.frames_sent
        with pytest.raises(Refusal) as refusal:
            stim.configure(2, frequency_hz=100, pulse_width_us=5000)
        assert refusal.value.channel == 2 and "5000" in str(refusal.value)
        with pytest.raises(Refusal):
            stim.set_amplitude(1, 4.0)  # a jump far beyond the ramp rate
        assert stim.link_stats.frames_sent - sent <= 1  # at most a heartbeat went out meanwhile
        assert stim.setting(1).amplitude_ma == 0.5


def test_the_link_sends_only_interlock_approvals() -> None:
    with session("sim://") as stim:
        link = stim._link  # noqa: SLF001 - probing the door itself
        with pytest.raises(TypeError, match="approvals"):
            link.send(icd.SetChannel(0, 0, 1, 0, 100_000, 0, 200, 0, 5000))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="interlock approval"):
            link.query(icd.Output(0b1))  # type: ignore[arg-type]
        with pytest.raises(InterlockStateError):
            Approved(object(), None, 1, 0.0, 0, stim.interlock)  # type: ignore[arg-type]
        approved = stim.interlock.approve_set_channel(
            stim.setting(1).with_amplitude(0) if stim.setting(1) else _zero_setting(1))
        link.wait(link.send(approved), "SET_CHANNEL")
        stim.interlock.note_acknowledged(approved)
        with pytest.raises(InterlockStateError):
            link.send(approved)  # single use


def _zero_setting(channel: int):
    from safety import ChannelSetting, Shape

    return ChannelSetting(channel, Shape.BIPHASIC, 100, 200, 0)


def test_open_circuit_zeroes_the_channel_and_tells_the_clinician(sim_pty: SimProcess) -> None:
    events: list[object] = []
    with session(sim_pty.url) as stim:
        stim.subscribe(events.append)
        start(stim, 1, 0.5)
        stim.sim_control(icd.SimOp.SET_LOAD, 1, icd.OPEN_CIRCUIT_OHM)
        wait_for(lambda: any(isinstance(e, DeviceFault) and e.code == "OPEN_CIRCUIT" for e in events))
        wait_for(lambda: any(isinstance(e, Notice) and "open" in e.text for e in events))
        assert 1 not in stim.enabled() and stim.tripped is None  # a channel event, not a stop


def test_needles_touching_zeroes_the_channel(sim_pty: SimProcess) -> None:
    events: list[object] = []
    with session(sim_pty.url) as stim:
        stim.subscribe(events.append)
        start(stim, 1, 0.5)
        stim.sim_control(icd.SimOp.SET_LOAD, 1, 50)
        notice = wait_for(lambda: next((e for e in events if isinstance(e, Notice) and "touching" in e.text), None))
        assert notice.channel == 1
        wait_for(lambda: 1 not in stim.enabled() and stim.setting(1).amplitude_ua == 0)
        with pytest.raises(Refusal):
            stim.set_amplitude(1, 0.1)  # held at zero until restarted from 0 mA


def test_device_wide_fault_stops_until_a_person_clears_it(sim_pty: SimProcess) -> None:
    with session(sim_pty.url) as stim:
        start(stim, 1, 0.5)
        stim.sim_control(icd.SimOp.INJECT_FAULT, 0, icd.FaultCode.HARDWARE)
        wait_for(lambda: stim.tripped)
        assert "HARDWARE" in stim.tripped
        with pytest.raises((Refusal, InterlockStateError)):
            stim.enable(2)
        with pytest.raises(Refusal):
            stim.clear_faults("")  # a person's name is required
        with pytest.raises(Refusal) as exc:   # not in a session that treats: checked first, then cleared alone
            stim.clear_faults("JD", frozenset({"HARDWARE"}))
        assert exc.value.rule == "clear.needs_review" and "estim clear-faults" in str(exc.value)
        assert stim.status().latched_faults == frozenset({"HARDWARE"})
    link = fh.connect(sim_pty.url)   # a session that treats nobody (no channels): clearing only
    with Stimulator(link, SessionSetup(units.device_limits(link.identity), prescription(), {})) as clearing:
        with pytest.raises(Refusal) as exc:
            clearing.clear_faults("JD")       # each fault beyond a stop is named by the person who checked
        assert exc.value.rule == "clear.unnamed_fault" and "--fault hardware" in str(exc.value)
        clearing.clear_faults("JD", frozenset({"HARDWARE"}))
        assert clearing.status().latched_faults == frozenset()
    with session(sim_pty.url) as stim:
        assert stim.tripped is None


def test_stale_telemetry_stops_everything(sim_pty: SimProcess) -> None:
    # a link more patient than the default (6 x 0.1 s), so the device can stay silent well past
    # the staleness limit (0.5 s) plus a reading period and a supervisor period before the link
    # would give up: the supervisor, not the link, must be what notices
    link = Link(open_transport(sim_pty.url), max_attempts=25)
    link.open()
    with Stimulator(link, SessionSetup(units.device_limits(link.identity), prescription(),
                                       forearm_sites(1, 2), envelope=BENCH)) as stim:
        start(stim, 1, 0.5)
        sim_pty.pause()
        time.sleep(0.9)
        sim_pty.resume()
        wait_for(lambda: stim.tripped)
        assert "telemetry" in stim.tripped
        # the paused device wakes with its own watchdog overdue; either way its output is off
        sim_pty.wait_event(lambda e: e["kind"] == "output_off" and e.get("reason") in ("estop", "watchdog"))
        assert stim.status().enabled == frozenset()


def test_device_reboot_mid_session_is_detected(sim_pty: SimProcess) -> None:
    events: list[object] = []
    with session(sim_pty.url) as stim:
        stim.subscribe(events.append)
        start(stim, 1, 0.5)
        reboot = icd.SimControl(icd.SimOp.REBOOT, 0, 0)
        stim._link._enqueue(reboot)  # noqa: SLF001 - the device reboots behind the host's back
        lost = wait_for(lambda: next((e for e in events if isinstance(e, LinkLost)), None))
        assert isinstance(lost.reason, fh.DeviceRebooted)
        assert stim.tripped and "rebooted" in stim.tripped


class _SilentPeer:
    """A device that reads and never answers, or answers HELLO with a chosen IDENTITY."""

    def __init__(self, identity: icd.Identity | None = None, before_identity: bytes = b"") -> None:
        self.host_end, self._peer = socket.socketpair()
        self.received: list[icd.RawPacket] = []
        self._identity = identity
        self._before_identity = before_identity  # bytes sent between HELLO and its IDENTITY
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        decoder = icd.FrameDecoder()
        while data := self._peer.recv(4096):
            for raw in decoder.feed(data):
                self.received.append(raw)
                if self._identity is not None and raw.type == icd.MsgType.HELLO:
                    self._peer.sendall(self._before_identity + icd.encode_frame(raw.seq, self._identity))


def _identity(version: int) -> icd.Identity:
    return icd.Identity(version, 1, 0, 4, "X", 30000, 1000, 500, 200000, 20000, 1000, 4000, 60000, 300, 10, 0)


def test_nothing_but_hello_before_the_handshake() -> None:
    peer = _SilentPeer()
    link = Link(SocketTransport("peer://silent", peer.host_end), reply_timeout=0.02)
    with pytest.raises(fh.HandshakeFailed):
        link.open(timeout=0.5)
    assert peer.received and all(raw.type == icd.MsgType.HELLO for raw in peer.received)
    with pytest.raises(fh.LinkError):
        Stimulator(link, SessionSetup(units.device_limits(_identity(1)), prescription(), forearm_sites(1), envelope=BENCH))


@pytest.mark.parametrize("version", [0, 3])
def test_unknown_protocol_version_is_refused(version: int) -> None:
    """ICD: a v2 host refuses a device whose version is 0 or above the highest it knows."""
    peer = _SilentPeer(_identity(version))
    link = Link(SocketTransport(f"peer://v{version}", peer.host_end))
    with pytest.raises(fh.ProtocolMismatch, match=f"version {version}"):
        link.open(timeout=1.0)
    time.sleep(0.1)
    assert all(raw.type == icd.MsgType.HELLO for raw in peer.received)
    assert all(raw.body == bytes([icd.PROTOCOL_VERSION]) for raw in peer.received)


@pytest.mark.parametrize("field", ["channels", "watchdog_ms", "telemetry_hz"])
def test_a_device_without_channels_watchdog_or_telemetry_is_not_driven(field: str) -> None:
    """A watchdog of 0 ms cannot be kept fed, and no telemetry leaves nothing to supervise with
    (it crashed the supervisor's set-up): the handshake refuses such a device, saying why."""
    peer = _SilentPeer(dataclasses.replace(_identity(2), **{field: 0}))
    link = Link(SocketTransport("peer://zero", peer.host_end))
    with pytest.raises(fh.HandshakeFailed, match="cannot otherwise keep the patient safe"):
        link.open(timeout=1.0)
    time.sleep(0.1)
    assert all(raw.type == icd.MsgType.HELLO for raw in peer.received)


HOST_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path[:0] = sys.argv[3:]
    import firmware_host as fh
    from safety import TreatmentRecord
    from support import BENCH, forearm_sites, prescription
    stim = fh.open(sys.argv[1], prescription=prescription(), placements=forearm_sites(1),
                   record=TreatmentRecord(sys.argv[2]), envelope=BENCH)
    stim.configure(1, frequency_hz=100, pulse_width_us=200); stim.enable(1); stim.ramp(1, 0.6)
    print("stimulating", flush=True)
    time.sleep(60)
""")


def test_record_survives_sigkill_of_the_host(sim_pty: SimProcess, tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    tests_dir = str(Path(__file__).parent)
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, sim_pty.url, str(path), tests_dir],
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert host.stdout.readline().strip() == "stimulating"
        time.sleep(0.3)
        host.send_signal(signal.SIGKILL)
        host.wait(5)
    finally:
        host.kill()
    verdict = verify_record(path)
    assert verdict.ok, verdict.reason
    from safety.record import seal_record

    seal_record(path)                               # this computer wrote it: it signs what the killed host wrote
    entries = list(read_entries(path))
    kinds = [e["kind"] for e in entries]
    # every command sent before the kill is on record with its approval (acknowledgements and
    # readings may miss the last second)
    sent = {e["data"]["serial"] for e in entries if e["kind"] == "consumed"}
    assert len(sent) >= 5 and sent <= {e["data"]["serial"] for e in entries if e["kind"] == "approved"}
    assert kinds.count("ack") >= len(sent) - 10 and "telemetry" in kinds
    assert verify_record(path).ok
    sim_pty.wait_event(lambda e: e["kind"] == "output_off" and e.get("reason") == "watchdog")


def test_clear_right_after_estop_is_not_undone_by_the_estop_fault() -> None:
    with session("sim://") as stim:
        for _ in range(5):  # at machine speed: stop, clear, start again
            start(stim, 1, 0.2)
            assert stim.estop()
            stim.clear_faults("JD")
            assert stim.tripped is None
        time.sleep(0.3)  # the FAULT that followed each ESTOP has been supervised by now
        assert stim.tripped is None


@pytest.mark.parametrize("version", [1, 2])
def test_a_reading_from_the_last_session_before_identity_is_not_a_protocol_error(version: int) -> None:
    """A device still streaming the previous session's readings (36 bytes) when HELLO arrives: the
    session's version is only known from IDENTITY, so what came before it is not held against it."""
    stale = icd.encode_frame(9, icd.Telemetry(5, 0, 0, 0, 0, 0, 0, 1000, 0, 0, 1, 0, 0, 0))
    peer = _SilentPeer(_identity(version), before_identity=stale)
    link = Link(SocketTransport(f"peer://stale-v{version}", peer.host_end))
    try:
        assert link.open(timeout=1.0).protocol_version == version
        assert link.alive
    finally:
        link.close()
