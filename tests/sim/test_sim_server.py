"""The simulated device served over real byte streams: socketpair, pty and TCP loopback."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from firmware_host import icd
from firmware_host.icd import Ack, Estop, Fault, FaultCode, Heartbeat, Hello, Identity, Output, SetChannel
from firmware_host.sim import SimConfig, SimulatedDevice, start_in_process
from firmware_host.sim.server import DeviceLoop, PtyStream, main

REPO = Path(__file__).resolve().parents[2]


def read_until(read, predicate, timeout: float = 2.0) -> list[icd.Message]:
    """Read frames with read(max_wait) -> bytes until predicate(messages) holds."""
    decoder = icd.FrameDecoder()
    messages: list[icd.Message] = []
    deadline = time.monotonic() + timeout
    while not predicate(messages):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; got {messages}"
        messages += [p.message() for p in decoder.feed(read(remaining))]
    return messages


def sock_reader(sock: socket.socket):
    def read(wait: float) -> bytes:
        sock.settimeout(wait)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""
    return read


def has(kind: type, **fields: int):
    return lambda msgs: any(isinstance(m, kind) and all(getattr(m, k) == v for k, v in fields.items()) for m in msgs)


# --- in process (sim://) -------------------------------------------------------------------


def test_in_process_device_handshake_and_fast_estop() -> None:
    host, stop, device = start_in_process(SimConfig(watchdog_ms=2000))
    try:
        assert any(t.name == "sim-device" and t.daemon for t in threading.enumerate())
        read = sock_reader(host)
        host.sendall(icd.encode_frame(0, Hello()))
        assert isinstance(read_until(read, has(Identity))[-1], Identity)
        host.sendall(icd.encode_frame(1, SetChannel(0, 0, 1, 0, 10_000, 0, 200, 50, 0)))
        host.sendall(icd.encode_frame(2, Output(1)))
        read_until(read, lambda m: sum(isinstance(x, Ack) for x in m) == 2)
        assert device.output_mask == 1
        host.sendall(icd.encode_frame(77, Estop()))
        read_until(read, has(Fault, code=FaultCode.ESTOP))  # its latency is measured in bench/
        assert device.output_mask == 0 and device.latched_faults == 1 << FaultCode.ESTOP
    finally:
        stop()
        host.close()
    assert not any(t.name == "sim-device" and t.is_alive() for t in threading.enumerate())


def test_in_process_loop_ends_when_the_host_closes_its_end() -> None:
    host, stop, _ = start_in_process()
    thread = next(t for t in threading.enumerate() if t.name == "sim-device")
    host.close()
    thread.join(timeout=2)
    assert not thread.is_alive()
    stop()  # still safe to call


def test_trace_file_gets_one_json_line_per_event(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    host, stop, _ = start_in_process(SimConfig(), trace_path=trace)
    try:
        host.sendall(icd.encode_frame(5, Estop()))
        read_until(sock_reader(host), has(Fault))
    finally:
        stop()
        host.close()
    [line] = trace.read_text().splitlines()
    event = json.loads(line)
    assert event["kind"] == "fault" and event["code"] == "ESTOP" and event["channel"] == 255
    assert abs(event["t"] - time.monotonic()) < 5


# --- pty --------------------------------------------------------------------------------


def test_a_pty_nobody_reads_never_stalls_the_device() -> None:
    events: list[tuple[str, float, dict]] = []
    config = SimConfig(channels=8, telemetry_hz=255, watchdog_ms=200)
    device = SimulatedDevice(config, now=time.monotonic(), on_event=lambda *e: events.append(e))
    stop = threading.Event()
    stream = PtyStream()
    loop = DeviceLoop(device, stop)
    thread = threading.Thread(target=loop.run, args=(stream,), daemon=True)
    thread.start()
    slave = os.open(stream.path, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(slave)
        os.write(slave, icd.encode_frame(0, Hello()))
        end = time.monotonic() + 0.8  # telemetry at 8 × 255 Hz (~65 KB/s) overfills every buffer
        seq = 1
        while time.monotonic() < end:
            sent_at = time.monotonic()  # the device can read the frame before write() returns here
            os.write(slave, icd.encode_frame(seq, Heartbeat()))
            seq += 1
            time.sleep(0.02)
        deadline = sent_at + 1.0
        while not any(kind == "fault" for kind, _, _ in events) and time.monotonic() < deadline:
            time.sleep(0.005)
        fault_at = next(now for kind, now, d in events if kind == "fault" and d["code"] == "WATCHDOG")
        assert fault_at - sent_at >= 0.2  # never early; how late is measured in bench/
        assert loop.tx_dropped_bytes > 0
        # what did get through is whole frames: dropping never splits one
        decoder = icd.FrameDecoder()
        end = time.monotonic() + 0.2  # the device never stops talking: read a while
        while time.monotonic() < end and select.select([slave], [], [], 0.05)[0]:
            decoder.feed(os.read(slave, 65536))
        assert decoder.good_frames > 100 and decoder.bad_frames == 0
    finally:
        stop.set()
        thread.join(timeout=2)
        os.close(slave)


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The server in a subprocess, as `estim sim` runs it; yields (process, first stdout line)."""
    code = "import sys; from firmware_host.sim.server import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert select.select([proc.stdout], [], [], 10)[0], "no first line"
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def stop_cleanly(proc: subprocess.Popen[str], signum: int) -> None:
    proc.send_signal(signum)
    assert proc.wait(timeout=5) == 0
    assert "Traceback" not in proc.stderr.read()


def test_pty_server_in_a_subprocess() -> None:
    with sim_process("--listen", "pty", "--set", "watchdog_ms=100") as (proc, path):
        assert re.fullmatch(r"/dev/pts/\d+", path)

        def reader(port: serial.Serial):
            def read(wait: float) -> bytes:
                port.timeout = min(wait, 0.05)
                return port.read(port.in_waiting or 1)
            return read

        with serial.Serial(path, timeout=0.1) as port:
            port.write(icd.encode_frame(200, Hello()))
            assert has(Identity, watchdog_ms=100)(read_until(reader(port), has(Identity)))
            # the host falls silent: the watchdog trips and says so
            read_until(reader(port), has(Fault, code=FaultCode.WATCHDOG, channel=icd.DEVICE_WIDE))
        with serial.Serial(path, timeout=0.1) as port:  # close and reopen between sessions
            port.write(icd.encode_frame(3, Hello()))
            identity = read_until(reader(port), has(Identity))[-1]
            assert identity.latched_faults == 1 << FaultCode.WATCHDOG
        stop_cleanly(proc, signal.SIGTERM)


# --- TCP --------------------------------------------------------------------------------


def test_tcp_server_one_client_at_a_time_and_watchdog_on_disconnect(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with sim_process("--listen", "tcp:127.0.0.1:0", "--set", "watchdog_ms=100", "--trace", str(trace)) as (
        proc, where,
    ):
        match = re.fullmatch(r"socket://127\.0\.0\.1:(\d+)", where)
        assert match
        port = int(match.group(1))
        first = socket.create_connection(("127.0.0.1", port), timeout=2)
        read = sock_reader(first)
        first.sendall(icd.encode_frame(0, Hello()))
        read_until(read, has(Identity))
        with socket.create_connection(("127.0.0.1", port), timeout=2) as second:
            assert second.recv(100) == b""  # refused: closed at once
        first.sendall(icd.encode_frame(1, Heartbeat()))
        read_until(read, has(Ack))
        first.close()  # the host vanishes; the device keeps running
        deadline = time.monotonic() + 2
        while "WATCHDOG" not in (trace.read_text() if trace.exists() else ""):
            assert time.monotonic() < deadline, "watchdog did not fire"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as again:
            again.sendall(icd.encode_frame(9, Hello()))
            identity = read_until(sock_reader(again), has(Identity))[-1]
            assert identity.latched_faults == 1 << FaultCode.WATCHDOG
        stop_cleanly(proc, signal.SIGINT)


def test_main_rejects_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--set", "bogus=1"])
    assert exc.value.code == 2 and "'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--listen", "udp:1"])


def test_link_latency_delays_replies_never_drops_them() -> None:
    host, stop, _device = start_in_process(SimConfig(link_latency_ms=30))
    try:
        read = sock_reader(host)
        sent = time.monotonic()
        host.sendall(icd.encode_frame(0, Hello()))
        assert isinstance(read_until(read, has(Identity))[-1], Identity)
        assert time.monotonic() - sent >= 0.03  # a slow adapter never makes a reply early
        for seq in range(1, 9):
            host.sendall(icd.encode_frame(seq, Heartbeat()))
        read_until(read, lambda m: sum(isinstance(x, Ack) for x in m) == 8)
    finally:
        stop()
        host.close()
