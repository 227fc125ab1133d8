"""The device as its own process, over a real pseudo-terminal and TCP, with a raw client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from tests.peer_device.clients import WireHost
from tests.peer_device.options import DeviceOptions
from tests.peer_device.process import REPO, spawn_peer
from tests.peer_device.protocol import FAULT, IDENTITY, Fault, Msg

pytestmark = pytest.mark.timeout(30)


def test_help_documents_every_option() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.peer_device", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=20)  # fmt: skip
    flags = ["--listen", "--trace"] + ["--" + f.name.replace("_", "-") for f in fields(DeviceOptions)]
    assert result.returncode == 0 and all(flag in result.stdout for flag in flags)


def test_a_bad_option_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.peer_device", "--channels", "9"], cwd=REPO,
                            capture_output=True, text=True, timeout=20)  # fmt: skip
    assert result.returncode == 2 and "channels must be 1..8" in result.stderr


def test_pty_session_watchdog_runs_on_the_device_clock_and_is_traced(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with spawn_peer("pty", trace=trace, watchdog_ms=200) as peer:
        assert peer.url.startswith("/dev/")
        host = WireHost(peer.url)
        try:
            identity = IDENTITY.unpack(host.hello().body)
            assert identity[0] == 2 and identity[13] == 200
            assert host.request(Msg.OUTPUT, b"\x01").type == Msg.ACK
            silent_from = time.monotonic()
            fault = host.wait_for(Msg.FAULT, timeout=2)
            assert FAULT.unpack(fault.body)[1] == Fault.WATCHDOG
            assert 0.15 < time.monotonic() - silent_from < 1.0
        finally:
            host.close()
        assert peer.stop() == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e["event"] for e in events] == ["output_off", "fault"]
    assert events[0]["cause"] == "WATCHDOG" and 0.15 < events[0]["t"] - silent_from < 1.0


def test_tcp_one_client_at_a_time_and_state_persists_after_the_host_vanishes() -> None:
    with spawn_peer("tcp:127.0.0.1:0", watchdog_ms=150, telemetry_hz=50) as peer:
        assert peer.url.startswith("socket://127.0.0.1:")
        first = WireHost(peer.url)
        assert first.hello().type == Msg.IDENTITY
        first.wait_for(Msg.TELEMETRY, timeout=1)  # telemetry flows while the host sends nothing
        host, _, port = peer.url.removeprefix("socket://").rpartition(":")
        with socket.create_connection((host, int(port)), timeout=2) as second:
            assert second.recv(100) == b""  # in use: closed at once
        first.close()  # vanishes without BYE
        time.sleep(0.4)
        third = WireHost(peer.url)
        try:
            third.read_for(0.05)  # whatever the device sent before this HELLO
            assert IDENTITY.unpack(third.hello().body)[-1] == 1 << Fault.WATCHDOG
        finally:
            third.close()
        peer.proc.send_signal(signal.SIGINT)
        assert peer.proc.wait(5) == 0


def test_pty_survives_several_host_sessions() -> None:
    with spawn_peer("pty", reply_latency_ms=0) as peer:
        for version in (2, 1, 2):
            host = WireHost(peer.url)
            try:
                assert IDENTITY.unpack(host.hello(version).body)[0] == version
                assert host.request(Msg.BYE).type == (Msg.ACK if version == 2 else Msg.NAK)
            finally:
                host.close()
