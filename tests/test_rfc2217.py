"""A device over the network: `rfc2217://` through a real ser2net in front of the simulator's
pty (configured as labgrid's exporter runs it). `estim` treats over it as over a cable; a
second controller on this computer is refused; a link that drops (ser2net killed) or stalls
(ser2net frozen) ends with the device's watchdog switching the output off and a plain
message (exit 3). What ser2net itself lets through from elsewhere is shown as it is: at
labgrid's 10 connections a second controller's HELLO stops the first session safe (it
cannot drive alongside); at 1 connection it is refused."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import SimProcess, child_env, output_off, spawn_sim
from hil_tests.ser2net import Ser2net, ser2net_binary

from support import DIRECT_SESSION, REPO, estim_on

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


def stimulating(proc: subprocess.Popen[str]) -> None:
    """Returns once `estim run` reports channel 1 on (its progress lines)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ch1 on:"):
            return
    raise AssertionError(f"estim never stimulated: exit {proc.wait()}: {proc.stderr.read() if proc.stderr else ''}")


def finished(proc: subprocess.Popen[str], timeout: float = 40) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_a_session_over_rfc2217_and_a_second_controller_on_this_computer_refused(sim: SimProcess) -> None:
    with Ser2net(sim.url) as ser2net:
        first = estim(ser2net.url, "--seconds", "3")
        stimulating(first)
        second = estim(ser2net.url.replace("127.0.0.1", "localhost"), "--seconds", "3")
        code, err = finished(second)
        assert code == 4 and "in use" in err and "Traceback" not in err, err
        code, err = finished(first)
        assert code == 0, err
    stops = [e for e in sim.events() if output_off("estop")(e) or output_off("watchdog")(e)]
    assert not stops, f"the session was disturbed: {stops}"


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


@pytest.mark.parametrize("max_connections", [10, 1])
def test_what_ser2net_lets_through_from_elsewhere(sim: SimProcess, max_connections: int) -> None:
    """Another computer (127.0.0.2 here) that ignores the reservation is not held back by this
    computer's lock: with labgrid's 10 connections it reaches the device, whose v2 HELLO switches
    the outputs off, so the first session stops safe; with 1 it is refused as in use."""
    with Ser2net(sim.url, host="0.0.0.0", max_connections=max_connections) as ser2net:
        first = estim(ser2net.url.replace("0.0.0.0", "127.0.0.1"), "--seconds", "4")
        stimulating(first)
        second = estim(ser2net.url.replace("0.0.0.0", "127.0.0.2"), "--seconds", "1")
        second_code, second_err = finished(second)
        first_code, first_err = finished(first)
    if max_connections == 1:
        assert second_code == 4 and "in use" in second_err, second_err
        assert first_code == 0, first_err
    else:
        assert first_code == 3 and "stopped:" in first_err, first_err
        assert any(output_off("hello")(e) for e in sim.events()), "the second HELLO did not switch the output off"
