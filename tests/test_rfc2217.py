"""A device over the network: `rfc2217://` through a real ser2net in front of the simulator's
pty (configured as labgrid's exporter runs it). `estim` treats over it as over a cable; a
second controller on this computer is refused before it connects; a link that drops
(ser2net killed) or stalls (ser2net frozen) ends with the device's watchdog switching the
output off and a plain message (exit 3). What ser2net lets through from another computer is
shown as it is: at labgrid's 10 connections a controller ignoring the reservation stops the
running session safe (it cannot drive alongside); at 1 connection it is refused."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host import icd
from firmware_host.drivers import open_transport
from firmware_host.link import Link
from firmware_host.sim.process import SimProcess, child_env, output_off, spawn_sim
from hil_tests.harness import ask, open_session
from hil_tests.ser2net import Ser2net, ser2net_binary

from support import DIRECT_SESSION, REPO, estim_on, stimulating, wait_for

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(ser2net_binary() is None, reason="ser2net is not installed (Debian: apt-get install ser2net)"),
]

MARGIN_S = 0.2  # scheduling slack past watchdog_ms on a busy 2-core machine


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


def estim(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(estim_on(url, "run", *DIRECT_SESSION, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)


def finished(proc: subprocess.Popen[str], timeout: float = 40) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_a_session_over_rfc2217(sim: SimProcess) -> None:
    with Ser2net(sim.url) as ser2net:
        code, err = finished(estim(ser2net.url, "--seconds", "1"))
    assert code == 0, err
    stops = [e for e in sim.events() if output_off("estop")(e) or output_off("watchdog")(e)]
    assert not stops, f"the session was disturbed: {stops}"


def test_a_second_controller_on_this_computer_is_refused_before_it_connects(sim: SimProcess) -> None:
    with Ser2net(sim.url) as ser2net:
        held = Link(open_transport(ser2net.url))
        held.open()
        try:
            code, err = finished(estim(ser2net.url.replace("127.0.0.1", "localhost"), "--seconds", "1"))
            assert code == 4 and "in use" in err and "Traceback" not in err, err
            assert isinstance(ask(held, icd.GetStatus()), icd.Status) and held.stats.bad_frames == 0
        finally:
            held.close()


@pytest.mark.parametrize("failure", ["dropped", "stalled"])
def test_a_link_lost_over_tcp_ends_safe_with_a_plain_message(sim: SimProcess, failure: str) -> None:
    with Ser2net(sim.url) as ser2net:
        session = estim(ser2net.url, "--seconds", "30")
        stimulating(session)
        sim.trace.mark()
        lost = time.monotonic()
        ser2net.kill() if failure == "dropped" else ser2net.pause()
        off = sim.wait_event(output_off("watchdog"), timeout=5)
        code, err = finished(session)
    watchdog_s = 0.3  # the simulator's default watchdog_ms
    assert off["t"] - lost <= watchdog_s + MARGIN_S
    assert code == 3, err
    assert "stopped:" in err and "watchdog switches its outputs off" in err and "Traceback" not in err


def test_a_controller_elsewhere_that_ignores_the_reservation_stops_the_session_safe(sim: SimProcess) -> None:
    """Another computer (127.0.0.2 here) is not held back by this computer's lock, and ser2net
    as labgrid runs it takes 10 clients: it reaches the device, whose v2 HELLO switches the
    outputs off, and the session it interrupts stops (it cannot drive alongside)."""
    with Ser2net(sim.url, host="0.0.0.0", max_connections=10) as ser2net:
        stim = open_session(ser2net.url.replace("0.0.0.0", "127.0.0.1"), (1,))
        try:
            stim.configure(1, frequency_hz=20, pulse_width_us=200)
            stim.enable(1)
            stim.ramp(1, 1.0)
            intruder = Link(open_transport(ser2net.url.replace("0.0.0.0", "127.0.0.2")))
            intruder.open()
            intruder.close()
            wait_for(lambda: stim.tripped is not None, timeout=5)
        finally:
            stim.close()
    assert any(output_off("hello")(e) for e in sim.events()), "the second HELLO did not switch the output off"


def test_ser2net_at_one_connection_refuses_a_controller_from_elsewhere(sim: SimProcess) -> None:
    with Ser2net(sim.url, host="0.0.0.0", max_connections=1) as ser2net:
        held = Link(open_transport(ser2net.url.replace("0.0.0.0", "127.0.0.1")))
        held.open()
        try:
            code, err = finished(estim(ser2net.url.replace("0.0.0.0", "127.0.0.2"), "--seconds", "1"))
            assert code == 4 and "in use" in err and "Traceback" not in err, err
            assert isinstance(ask(held, icd.GetStatus()), icd.Status)
        finally:
            held.close()
