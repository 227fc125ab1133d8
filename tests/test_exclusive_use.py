"""One controller per device, however it is named (issue 19): a session holds a pty; a second
controller reaching it through a pyserial wrapper URL (spy://, alt://) or a symlink is refused
as "in use" (exit 4 for estim) before it touches the port; a TCP endpoint is claimed on this
computer by address, so two names for one server are one device; an RFC 2217 server that
hangs up at once is a device in use."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host import errors, icd
from firmware_host.drivers import open_transport
from firmware_host.link import Link
from firmware_host.sim.process import SimProcess, child_env, spawn_sim
from firmware_host.stimulator import Stimulator
from hil_tests.harness import ask, open_session

from support import DIRECT_SESSION, REPO, estim_on

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pty_sim(tmp_path: Path) -> Iterator[SimProcess]:
    """A 2 s watchdog: the holding session must survive a second controller's attempt, not a
    loaded CI machine starving its heartbeats while that controller's Python starts."""
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl", settings=["watchdog_ms=2000"]) as sim:
        yield sim


def other_name(kind: str, pty: str, tmp_path: Path) -> str:
    """The same pseudo-terminal by another name."""
    if kind == "symlink":
        link = tmp_path / "stimulator"
        link.symlink_to(pty)
        return str(link)
    return {"spy": f"spy://{pty}?file={tmp_path / 'spy.txt'}", "alt": f"alt://{pty}?class=PosixPollSerial"}[kind]


def still_answers(stim: Stimulator) -> bool:
    status = stim.status()
    return status.enabled == {1} and status.rx_bad_frames == 0


@pytest.mark.parametrize("kind", ["spy", "alt", "symlink"])
def test_a_second_controller_by_another_name_is_refused_and_changes_nothing(
        pty_sim: SimProcess, tmp_path: Path, kind: str) -> None:
    stim = open_session(pty_sim.url, (1,))
    try:
        stim.configure(1, frequency_hz=20, pulse_width_us=200)
        stim.enable(1)
        with pytest.raises(errors.DeviceBusy, match="in use"):
            open_transport(other_name(kind, pty_sim.url, tmp_path))
        assert still_answers(stim) and stim.tripped is None  # nothing flushed or reconfigured under it
    finally:
        stim.close()


def test_a_session_held_through_a_wrapper_url_locks_the_port_itself(pty_sim: SimProcess, tmp_path: Path) -> None:
    held = Link(open_transport(other_name("spy", pty_sim.url, tmp_path)))
    held.open()
    try:
        with pytest.raises(errors.DeviceBusy, match="in use"):
            open_transport(pty_sim.url)
        assert isinstance(ask(held, icd.GetStatus()), icd.Status)
    finally:
        held.close()
    open_transport(pty_sim.url).close()  # free again once the session has closed


@pytest.mark.parametrize("kind", ["spy", "alt", "symlink"])
def test_estim_says_a_device_in_use_by_another_name_is_in_use(
        pty_sim: SimProcess, tmp_path: Path, kind: str) -> None:
    stim = open_session(pty_sim.url, (1,))
    try:
        done = subprocess.run(estim_on(other_name(kind, pty_sim.url, tmp_path), "run", *DIRECT_SESSION,
                                       "--seconds", "2"),
                              capture_output=True, text=True, timeout=40, env=child_env(), cwd=REPO)
        assert done.returncode == 4, done.stderr
        assert "in use" in done.stderr and "Traceback" not in done.stderr
        assert stim.tripped is None
    finally:
        stim.close()


def test_a_tcp_device_is_claimed_by_address_whatever_its_name(tmp_path: Path) -> None:
    with spawn_sim("tcp:127.0.0.1:0", trace_path=tmp_path / "trace.jsonl") as sim:
        port = sim.url.rsplit(":", 1)[1]
        held = Link(open_transport(sim.url))
        held.open()
        try:
            # refused here, before connecting (the simulator would close a second client at once)
            with pytest.raises(errors.DeviceBusy, match="another controller on this computer"):
                open_transport(f"tcp://localhost:{port}")
        finally:
            held.close()
        again = Link(open_transport(f"tcp://localhost:{port}"))
        assert again.open().serial
        again.close()


def test_an_rfc2217_server_that_hangs_up_at_once_means_in_use() -> None:
    """ser2net at its max-connections accepts a client and closes it straight away."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.settimeout(0.3)
            try:  # every telnet request the client opens with: it then waits for answers, and sees the end
                while conn.recv(1024):
                    pass
            except TimeoutError:
                pass
            conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        with pytest.raises(errors.DeviceBusy, match="closed the connection at once"):
            open_transport(f"rfc2217://127.0.0.1:{server.getsockname()[1]}")
