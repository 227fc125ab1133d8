"""The reliable link against the simulator *process*, over a real pseudo-terminal and TCP.

Some tests play a faulty host (`unguarded`) to exercise the device's own rules; product
code cannot do that (see test_stimulator.py, test_the_link_sends_only_interlock_approvals).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from firmware_host import errors, icd
from firmware_host.drivers import open_transport
from firmware_host.drivers.faulty import FaultPlan, FaultyTransport
from firmware_host.drivers.socket_pair import SocketTransport
from firmware_host.link import Link, LinkLost
from firmware_host.sim.process import SimProcess, child_env, spawn_sim

from hil_tests.harness import ShortSetChannel, UnknownCommand, ask, unguarded, wave

pytestmark = pytest.mark.timeout(30)


def opened(url: str, **link_options) -> Link:
    link = Link(open_transport(url), **link_options)
    link.open()
    return link


def test_handshake_reports_identity(sim_process: SimProcess) -> None:
    link = opened(sim_process.url)
    try:
        ident = link.identity
        assert ident is not None and ident.protocol_version == 2
        assert (ident.channels, ident.watchdog_ms, ident.telemetry_hz) == (4, 300, 10)
        assert ident.serial == "SIM-0001"
    finally:
        link.close()


def test_overridden_device_limits_arrive_in_identity(tmp_path) -> None:
    with spawn_sim("pty", trace_path=tmp_path / "t.jsonl",
                   settings=("channels=2", "watchdog_ms=500", "max_step_ua=500")) as sim:
        link = opened(sim.url)
        assert (link.identity.channels, link.identity.watchdog_ms, link.identity.max_step_ua) == (2, 500, 500)
        link.close()


def test_every_nak_becomes_its_typed_exception(sim_process: SimProcess) -> None:
    link = opened(sim_process.url)
    try:
        with pytest.raises(errors.UnknownType):
            ask(link, UnknownCommand())
        with pytest.raises(errors.BadLength):
            ask(link, ShortSetChannel())
        with pytest.raises(errors.OutOfRange, match="OUT_OF_RANGE"):
            ask(link, wave(phase_us=5000))
        assert isinstance(ask(link, wave(amplitude_ua=500)), icd.Ack)  # disabled: allowed, not enabled
        with pytest.raises(errors.NotZeroStart):
            ask(link, icd.Output(0b1))
        ask(link, wave(amplitude_ua=0))
        ask(link, icd.Output(0b1))
        with pytest.raises(errors.StepTooLarge):
            ask(link, wave(amplitude_ua=5000))
        with pytest.raises(errors.SlewTooFast):
            ask(link, wave(amplitude_ua=1000))  # 1 mA at once, right after enabling
        with pytest.raises(errors.BadState):
            ask(link, icd.ClearFault())  # an output is enabled
        with pytest.raises(errors.Unsupported):
            ask(link, icd.SimControl(99, 0, 0))
        assert link.estop()
        with pytest.raises(errors.FaultLatched):
            ask(link, icd.Output(0b1))
        ask(link, icd.ClearFault())
        status = ask(link, icd.GetStatus())
        assert isinstance(status, icd.Status) and status.latched_faults == 0 and status.output_mask == 0
    finally:
        link.close()


def test_no_session_after_reboot_is_detected_as_a_reboot(sim_process: SimProcess) -> None:
    link = opened(sim_process.url)
    lost: list[LinkLost] = []
    link.subscribe(lambda event: lost.append(event) if isinstance(event, LinkLost) else None)
    try:
        ask(link, icd.SimControl(icd.SimOp.REBOOT, 0, 0))
        deadline = time.monotonic() + 2
        while not lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lost and isinstance(lost[0].reason, errors.DeviceRebooted)
        with pytest.raises(errors.DeviceRebooted):
            unguarded(link, icd.GetStatus())
        sim_process.wait_event(lambda e: e["kind"] == "reboot")
    finally:
        link.close()


def _faulty(url: str, to_device: FaultPlan | None = None, from_device: FaultPlan | None = None) -> Link:
    link = Link(FaultyTransport(open_transport(url), to_device, from_device), reply_timeout=0.05)
    link.open()
    return link


@pytest.mark.parametrize("direction", ["dropped command", "corrupted command", "corrupted reply"])
def test_retransmission_recovers_a_lost_frame_and_executes_once(sim_process: SimProcess, direction: str) -> None:
    # frame 0 is HELLO; frame 2 is the second SET_CHANNEL (or its reply)
    plan = {
        "dropped command": (FaultPlan(drop_frames=frozenset({2})), None),
        "corrupted command": (FaultPlan(corrupt_frames=frozenset({2})), None),
        "corrupted reply": (None, FaultPlan(corrupt_frames=frozenset({2}))),
    }[direction]
    link = _faulty(sim_process.url, *plan)
    try:
        futures = [unguarded(link, wave(channel=ch, phase_us=100 + ch)) for ch in range(4)]
        assert all(isinstance(link.wait(f, "SET_CHANNEL"), icd.Ack) for f in futures)
        assert link.stats.retransmissions >= 1
        status = ask(link, icd.GetStatus())
        assert status.rx_bad_frames == (1 if direction == "corrupted command" else 0)
    finally:
        link.close()


def test_go_back_n_survives_random_loss(sim_process: SimProcess) -> None:
    link = _faulty(sim_process.url, FaultPlan(drop=0.05, corrupt=0.05), FaultPlan(drop=0.05, corrupt=0.05))
    try:
        futures = [unguarded(link, wave(channel=i % 4, phase_us=100 + i)) for i in range(200)]
        assert all(isinstance(link.wait(f, "SET_CHANNEL", 10), icd.Ack) for f in futures)
        status = ask(link, icd.GetStatus())
        # each command executed exactly once: every frame the device took in order advanced it
        assert status.rx_frames >= 200
        assert link.stats.retransmissions > 0
    finally:
        link.close()


def test_estop_overtakes_a_full_window(sim_process: SimProcess) -> None:
    link = opened(sim_process.url, reply_timeout=1.0)
    try:
        ask(link, wave(amplitude_ua=0))
        ask(link, icd.Output(0b1))
        sim_process.pause()  # the device stops reading: the window fills up
        futures = [unguarded(link, wave(phase_us=100 + i)) for i in range(20)]
        assert len(link._inflight) == link.window == 8  # noqa: SLF001
        frames_before = link.stats.frames_sent
        stopper = threading.Thread(target=link.estop, kwargs={"timeout": 2.0})
        stopper.start()
        time.sleep(0.05)
        # the ESTOP frame left at once although 8 commands are unanswered and 12 queued
        assert link.stats.estops_sent >= 1 and link.stats.frames_sent > frames_before
        sim_process.resume()
        stopper.join(5)
        queued = futures[8:]
        assert all(isinstance(f.exception(2), errors.LinkError) for f in queued)  # never sent after the stop
        status = ask(link, icd.GetStatus())
        assert status.output_mask == 0 and status.latched_faults & (1 << icd.FaultCode.ESTOP)
        sim_process.wait_event(lambda e: e["kind"] == "output_off" and e.get("reason") == "estop")
    finally:
        sim_process.resume()
        link.close()


HOST_SCRIPT = textwrap.dedent("""
    import sys, time
    from firmware_host.drivers import open_transport
    from firmware_host.link import Link
    from firmware_host import icd
    from hil_tests.harness import ask, wave
    link = Link(open_transport(sys.argv[1])); link.open()
    ask(link, wave(0)); ask(link, icd.Output(1))
    time.sleep(0.3); ask(link, wave(0, amplitude_ua=1000))
    print("stimulating", flush=True)
    time.sleep(60)
""")


def test_watchdog_fires_when_the_host_process_is_killed(sim_process: SimProcess) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, sim_process.url], stdout=subprocess.PIPE,
                            text=True, env=child_env())
    try:
        assert host.stdout.readline().strip() == "stimulating"
        time.sleep(0.5)  # heartbeats keep the session alive meanwhile
        assert not [e for e in sim_process.events() if e["kind"] == "output_off"]
        host.send_signal(signal.SIGKILL)
        host.wait(5)
        event = sim_process.wait_event(lambda e: e["kind"] == "output_off" and e.get("reason") == "watchdog")
        assert event["kind"] == "output_off"
    finally:
        host.kill()
    link = opened(sim_process.url)  # the next host sees the latched WATCHDOG
    try:
        assert link.identity.latched_faults & (1 << icd.FaultCode.WATCHDOG)
    finally:
        link.close()


def test_second_controller_cannot_open_the_same_device(sim_process: SimProcess) -> None:
    """Refused on this computer before it connects: the pty by its inode, the TCP endpoint by
    its address (a device that closes a second client at once is test_cli_contract's)."""
    link = opened(sim_process.url)
    try:
        with pytest.raises(errors.DeviceBusy, match="in use"):
            open_transport(sim_process.url)
        assert isinstance(ask(link, icd.GetStatus()), icd.Status)
    finally:
        link.close()


def test_duplicated_frames_execute_once(sim_process: SimProcess) -> None:
    link = _faulty(sim_process.url, FaultPlan(duplicate=1.0), FaultPlan(duplicate=1.0))
    try:
        futures = [unguarded(link, wave(channel=i % 4, phase_us=100 + i)) for i in range(20)]
        assert all(isinstance(link.wait(f, "SET_CHANNEL"), icd.Ack) for f in futures)
        status = ask(link, icd.GetStatus())
        # every duplicate reached the device as a retransmission: answered from its store, not run again
        assert status.rx_out_of_order >= 20
        assert link.stats.duplicate_replies >= 20
    finally:
        link.close()


def test_idle_link_sends_heartbeats_and_keeps_the_session(sim_process: SimProcess) -> None:
    link = opened(sim_process.url)
    try:
        time.sleep(1.0)  # more than three watchdog periods of silence from the caller
        assert link.stats.heartbeats >= 8  # every watchdog_ms / 4 = 75 ms
        status = ask(link, icd.GetStatus())
        assert not status.latched_faults & (1 << icd.FaultCode.WATCHDOG)
    finally:
        link.close()


def test_lost_events_are_counted_from_the_device_counter() -> None:
    host_end, device_end = socket.socketpair()
    identity = icd.Identity(1, 1, 0, 4, "X", 30000, 1000, 500, 200000, 20000, 1000, 4000, 60000, 300, 10, 0)

    def device() -> None:
        decoder = icd.FrameDecoder()
        raw = decoder.feed(device_end.recv(4096))[0]
        device_end.sendall(icd.encode_frame(raw.seq, identity))
        for counter in (10, 11, 12, 15, 16, 255, 0, 1):  # 13, 14 and 2..254 minus 16 never arrive
            device_end.sendall(icd.encode_frame(counter, icd.Fault(0, icd.FaultCode.OPEN_CIRCUIT, 0)))

    threading.Thread(target=device, daemon=True).start()
    link = Link(SocketTransport("peer://events", host_end))
    seen: list[object] = []
    link.subscribe(seen.append)
    try:
        link.open()
        deadline = time.monotonic() + 2
        while len(seen) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) == 8
        assert link.stats.events_lost == 2 + (255 - 16 - 1)
    finally:
        link.close()
