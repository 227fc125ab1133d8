"""The safety case, end to end: each hole the adversarial review found (issue 12), closed and
proved over a real byte path (the simulator as its own process on a pseudo-terminal, or
the in-process `sim://`). Unit-level proofs live beside the rules they test:
tests/safety/test_interlock.py (increases by any field, jitter, zero start in flight),
test_supervisor.py (stale repeats, the poisoned clock offset, whole waveform, charge
counter), test_rules.py (densest second, interphase), test_settings.py (exact types,
numbers beyond the wire), test_limits.py (needle sizes, ramp bound).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import firmware_host as fh
from firmware_host import icd, units
from firmware_host.drivers import Transport, open_transport
from firmware_host.drivers.faulty import FaultyTransport
from firmware_host.link import Link
from firmware_host.sim.process import SimProcess, child_env, output_off, spawn_sim
from firmware_host.stimulator import Notice, Stimulator
from safety import (ChannelSetting, DeviceLimits, Interlock, InterlockStateError, Needle, Prescription, Refusal,
                    SessionSetup, Shape, TreatmentRecord)

from support import BENCH, DECLARED, REPO, forearm_sites, prescription

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


def eventually(predicate, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    """True once `predicate()` is (the wire goes first; the session's own state follows)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(predicate())


def stimulating(url: str, record: TreatmentRecord | None = None, level_ma: float = 2.0, **link: object) -> Stimulator:
    stim = fh.open(url, prescription=prescription(), placements=forearm_sites(1, 2), record=record, envelope=BENCH)
    stim.configure(1, frequency_hz=50, pulse_width_us=200)
    stim.enable(1)
    stim.ramp(1, level_ma)
    return stim


# --- 1. stopping never depends on anything but the wire -----------------------------------

def test_a_record_that_can_no_longer_be_written_stops_the_session_and_never_the_stop(
        sim: SimProcess, tmp_path: Path) -> None:
    """Disk full mid-session: ESTOP reaches the device, the user is told in plain words, the
    operator's own estop() and the way out of the `with` block still work."""
    record = TreatmentRecord(tmp_path / "session.jsonl")
    notices: list[str] = []
    with stimulating(sim.url, record) as stim:
        stim.subscribe(lambda e: notices.append(e.text) if isinstance(e, Notice) else None)
        sim.trace.mark()
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, record._fd)  # noqa: SLF001 - every later write fails with ENOSPC
        os.close(full)
        sim.wait_event(output_off("estop"), timeout=3.0)
        assert eventually(lambda: stim.tripped is not None) and "can no longer be written" in stim.tripped
        assert stim.estop("operator") is True   # an operator's stop still reaches the device
    assert not stim._link.alive  # noqa: SLF001 - __exit__ reached close()
    assert eventually(lambda: bool(notices))
    assert any("stimulation stopped" in n and "can no longer be written" in n for n in notices)


def test_a_full_disk_under_estim_run_stops_stimulation(sim: SimProcess, tmp_path: Path) -> None:
    """The same with the operating system's file-size limit (RLIMIT_FSIZE) on `estim run`:
    exit 3, a plain message, and the device e-stopped (not left to its watchdog)."""
    record = tmp_path / "session.jsonl"

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_500, 5_500))   # reached a few seconds into the session

    sim.trace.mark()
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_host", "run", "--device", sim.url, "--channel", "1", "--frequency", "50",
         "--pulse-width", "200", "--amplitude", "1", "--seconds", "30", "--sites", "left:forearm,left:forearm",
         "--inserted", "10", *DECLARED, "--record", str(record)],
        capture_output=True, text=True, timeout=40, env=child_env(), cwd=REPO, preexec_fn=small_files)
    assert proc.returncode == 3, proc.stderr
    assert "can no longer be written" in proc.stderr and "Traceback" not in proc.stderr
    sim.wait_event(output_off("estop"), timeout=1.0)


# --- 2 and 10. an approval is valid only on its own session's link ---------------------------

def test_an_approval_from_another_interlock_is_refused_at_the_link() -> None:
    """A second interlock with made-up device limits and a fake clock approved a continuous
    20 mA, 200 Hz setting; the session's link must refuse it and send nothing."""
    made_up = DeviceLimits(4, 100.0, 1000, 0.5, 400.0, 100.0, 100.0, 1000.0, 500.0)
    rogue_rx = Prescription(max_amplitude_ma=50.0, ramp_ma_per_s=2.0, frequency_hz=(1, 400),
                            pulse_width_us=(50, 1000), sensitivity="hyposensitive")
    fake_now = [1000.0]
    rogue = Interlock(SessionSetup(made_up, rogue_rx, forearm_sites(1), needles={1: Needle(0.6, 150.0)}),
                      clock=lambda: fake_now[0])
    for approve in (lambda: rogue.approve_set_channel(ChannelSetting(1, Shape.BIPHASIC, 200.0, 200.0, 0.0)),
                    lambda: rogue.approve_outputs({1})):
        approval = approve()
        approval.consume()
        rogue.note_acknowledged(approval)
    with stimulating("sim://", level_ma=1.0) as stim:
        for _ in range(20):
            fake_now[0] += 1.0
            current = rogue.applied(1)[0]
            step = rogue.approve_set_channel(current.with_amplitude(min(20.0, current.amplitude_ma + 1.0)))
            step.consume()
            rogue.note_acknowledged(step)
        foreign = rogue.approve_set_channel(ChannelSetting(1, Shape.BIPHASIC, 200.0, 200.0, 20.0))
        sent_before = stim.link_stats.frames_sent
        with pytest.raises(InterlockStateError, match="not issued by this session's interlock"):
            stim._link.send(foreign)  # noqa: SLF001 - the attack goes straight for the link
        assert stim.link_stats.frames_sent == sent_before
        time.sleep(0.25)
        assert stim.readings[1].amplitude_ma == 1.0 and stim.tripped is None


def test_a_session_must_guard_the_limits_the_device_reports() -> None:
    """A Stimulator built with made-up device limits approved a 0 -> 20 mA jump; the link
    binds only an interlock whose limits are the connected device's IDENTITY, and only one."""
    link = fh.connect("sim://")
    try:
        made_up = DeviceLimits(4, 100.0, 1000, 0.5, 400.0, 100.0, 100.0, 1000.0, 500.0)
        with pytest.raises(Refusal) as exc:
            Stimulator(link, SessionSetup(made_up, prescription(), forearm_sites(1), envelope=BENCH))
        assert exc.value.rule == "session.device_limits"
        real = SessionSetup(units.device_limits(link.identity), prescription(), forearm_sites(1), envelope=BENCH)
        first = Stimulator(link, real)
        with pytest.raises(InterlockStateError):
            Stimulator(link, real)
        first.close()
    finally:
        link.close()


# --- 3. the wire carries exactly what was checked ------------------------------------------

def test_a_number_that_lies_about_itself_goes_out_as_checked() -> None:
    class Doubling(float):
        def __mul__(self, other: object) -> float:
            return 2 * float(self) * other  # type: ignore[operator]

        __rmul__ = __mul__

        def __round__(self, ndigits: int | None = None) -> float:
            return round(2 * float(self), ndigits)

    with stimulating("sim://", level_ma=0.5) as stim:
        time.sleep(1.0)  # ramp credit for the next step
        stim.set_amplitude(1, Doubling(0.9))
        assert eventually(lambda: stim.readings[1].amplitude_ma == 0.9) and stim.tripped is None


# --- 4 and 11. a frame the host did not approve is caught ----------------------------------

def inject(stim: Stimulator, message: icd.Message) -> None:
    """A frame that reaches the device behind the host's back, in sequence (test-only access
    to the link's private transport, which the product never exposes)."""
    link = stim._link  # noqa: SLF001
    with link._lock:  # noqa: SLF001
        seq = link._next_seq  # noqa: SLF001
        link._next_seq = (seq + 1) & 0xFF  # noqa: SLF001
        link._transport.write(icd.encode_frame(seq, message))  # noqa: SLF001


@pytest.mark.parametrize("version", [2, 1])
def test_a_waveform_nobody_commanded_is_stopped(version: int) -> None:
    """The device starts bursting-free at 5x the pulses (v2: telemetry shows the waveform; v1:
    only the charge counter can tell) and the session stops it."""
    with fh.open(f"sim://?protocol_version={version}", prescription=prescription(),
                 placements=forearm_sites(1)) as stim:
        stim.configure(1, frequency_hz=100, pulse_width_us=200, burst_pulses=5, burst_rate_hz=4)
        stim.enable(1)
        stim.ramp(1, 2.0)
        time.sleep(0.3)
        assert stim.tripped is None
        inject(stim, units.setting_to_wire(ChannelSetting(1, Shape.BIPHASIC, 100.0, 200.0, 2.0)))
        assert eventually(lambda: stim.tripped is not None, timeout=5.0)
        expected = "waveform" if version == 2 else "not delivering what was commanded"
        assert stim.tripped is not None and expected in stim.tripped


def test_raw_writes_are_not_part_of_the_public_surface() -> None:
    assert not hasattr(Link, "transport")
    link = fh.connect("sim://")
    try:
        assert not hasattr(link, "transport") and not hasattr(link, "write")
    finally:
        link.close()


def test_the_host_estops_when_its_link_is_broken_by_garbage(sim: SimProcess) -> None:
    """Everything the device says turns to garbage: the host stops (stale telemetry, a link
    that no longer answers) and its ESTOP still reaches the device, before the watchdog."""
    proxies: list[FaultyTransport] = []

    def wrap(transport: Transport) -> FaultyTransport:
        proxies.append(FaultyTransport(transport))
        return proxies[0]

    # the link gives up (two go-backs of 50 ms) before telemetry counts as stale, so the stop
    # must come from the lost link itself, not from supervision
    link = Link(wrap(open_transport(sim.url)), reply_timeout=0.05, max_attempts=2)
    identity = link.open(2.0)
    with Stimulator(link, SessionSetup(units.device_limits(identity), prescription(), forearm_sites(1), envelope=BENCH)) as stim:
        stim.configure(1, frequency_hz=50, pulse_width_us=200)
        stim.enable(1)
        stim.ramp(1, 1.0)
        sim.trace.mark()
        proxies[0]._rx.plan.corrupt = 1.0  # noqa: SLF001 - every frame from the device damaged
        event = sim.wait_event(lambda e: e["kind"] == "output_off", timeout=3.0)
        assert event["reason"] == "estop"  # not "watchdog": the host's own ESTOP got there first
        assert eventually(lambda: stim.tripped is not None) and "link to the device lost" in stim.tripped


# --- 6. supervision runs on its own ------------------------------------------------------

def test_a_stalled_subscriber_never_holds_up_supervision(sim: SimProcess) -> None:
    """A callback sleeping 5 s blocked the supervisor: a 50 Ω short went unhandled for 3 s."""
    release = threading.Event()
    with stimulating(sim.url) as stim:
        stim.subscribe(lambda event: release.wait(5.0))
        sim.trace.mark()
        stim.sim_control(icd.SimOp.SET_LOAD, 1, 50)
        sim.wait_event(output_off("command"), timeout=2.0)   # zeroed and disabled, callback still asleep
        assert not release.is_set() and 1 not in stim.enabled()
        sim.pause()                                          # and lost telemetry still trips
        try:
            assert eventually(lambda: stim.tripped is not None) and "telemetry" in stim.tripped
        finally:
            sim.resume()
            release.set()


def test_a_stuck_supervisor_lets_the_device_watchdog_make_it_safe(sim: SimProcess) -> None:
    """Heartbeats come from the supervisor's lease: when it sticks, they stop, the device's
    watchdog switches the output off, and commands from other threads are refused."""
    stuck = threading.Event()
    with stimulating(sim.url, level_ma=1.0) as stim:
        stim.supervisor.on_reading = lambda *args: stuck.wait(10.0)  # type: ignore[method-assign]
        sim.trace.mark()
        sim.wait_event(output_off("watchdog"), timeout=5.0)
        time.sleep(stim._unsupervised_s)  # noqa: SLF001 - how long the session waits before it gives up on it
        with pytest.raises(fh.LinkError, match="supervision"):
            stim.set_amplitude(1, 0.5)
        stuck.set()


# --- 12 and 13. numbers a needle or the wire cannot take --------------------------------------

@pytest.mark.parametrize("change", [dict(interphase_us=1001.0), dict(interphase_us=70_000.0),
                                    dict(frequency_hz=1e306), dict(burst_rate_hz=10 ** 400)])
def test_impossible_numbers_are_refused_and_nothing_is_sent(change: dict) -> None:
    with fh.open("sim://", prescription=prescription(), placements=forearm_sites(1)) as stim:
        sent = stim.link_stats.frames_sent
        with pytest.raises(Refusal):
            stim.configure(1, **{"frequency_hz": 50, "pulse_width_us": 200, **change})
        assert stim.link_stats.frames_sent - sent <= 1  # at most a heartbeat
        assert stim.setting(1) is None and not stim.interlock._in_flight  # noqa: SLF001 - no phantom


def test_a_needle_size_typed_wrong_is_refused_before_anything_is_sent() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_host", "run", "--channel", "1", "--frequency", "2", "--pulse-width", "200",
         "--amplitude", "2", "--seconds", "5", "--sites", "left:forearm,left:forearm", "--needle", "0.25x1e200",
         "--inserted", "10"],
        capture_output=True, text=True, timeout=30, env=child_env(), cwd=REPO)
    assert proc.returncode == 2 and "needle" in proc.stderr and "Traceback" not in proc.stderr
