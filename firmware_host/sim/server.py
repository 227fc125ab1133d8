"""Running a SimulatedDevice on its own clock against a real byte stream (pty, TCP, socketpair).

One loop per device: select on the stream with a timeout of the device's next deadline,
hand received bytes to the device the moment they arrive (e-stop latency), tick on
deadlines, and write replies without ever blocking: what the peer does not read is
buffered up to a bound, then dropped whole frame-chunk by chunk and counted, so a pty
nobody reads can never stall the device's supervision.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .config import SimConfig
from .device import SimulatedDevice

MAX_PENDING_BYTES = 16384  # unread replies kept for a slow peer before dropping


class Stream(Protocol):
    """A non-blocking byte stream: read() -> None when the peer has gone for good."""

    def fileno(self) -> int: ...
    def read(self) -> bytes | None: ...
    def write(self, data: bytes) -> int: ...
    def close(self) -> None: ...


class SocketStream:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bytes | None:
        try:
            return self.sock.recv(4096) or None
        except BlockingIOError:
            return b""
        except OSError:
            return None

    def write(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return 0  # the peer has gone; the next read reports it

    def close(self) -> None:
        self.sock.close()


class PtyStream:
    """The master side of a pseudo-terminal whose slave we keep open ourselves.

    Holding the slave open keeps our raw termios in force and means the master never sees
    EIO when hosts close and reopen the slave path between sessions; EIO is still treated
    as "nothing to read" in case the slave is hung up.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF mapping: 0x00 and 0x0A pass untouched
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def fileno(self) -> int:
        return self.master

    def read(self) -> bytes | None:
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except (BlockingIOError, OSError):
            return 0

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass  # already closed: close() is idempotent


class DeviceLoop:
    """Drives one device from one thread: the only caller of receive() and tick()."""

    def __init__(self, device: SimulatedDevice, stop: threading.Event) -> None:
        self.device = device
        self.stop = stop
        self.tx_dropped_bytes = 0
        self._pending = bytearray()
        self._latency_s = device.config.link_latency_ms / 1000
        self._delayed: deque[tuple[float, bytes]] = deque()  # (release time, bytes) on a slow link

    def run(self, stream: Stream | None, listener: socket.socket | None = None) -> None:
        """Serve until `stop`; with a listener, one accepted client at a time, else until EOF."""
        device = self.device
        while not self.stop.is_set():
            if stream is None and listener is None:
                return
            now = time.monotonic()
            deadline = device.next_deadline(now)
            if self._delayed:
                deadline = min(deadline, self._delayed[0][0])
            timeout = max(0.0, deadline - now)
            readers = [s for s in (stream, listener) if s is not None]
            writers = [stream] if stream is not None and self._pending else []
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if listener is not None and listener in readable:
                stream = self._accept(listener, stream)
            if stream is not None and stream in readable:
                data = stream.read()
                if data is None:
                    stream.close()
                    stream = None
                    self._pending.clear()
                    self._delayed.clear()
                elif data:
                    self._send(stream, device.receive(data, time.monotonic()))
            if stream is not None and stream in writable:
                self._flush(stream)
            out = device.tick(time.monotonic())
            if stream is not None:
                self._send(stream, out)
                self._release(stream)
        if stream is not None:
            stream.close()

    def _accept(self, listener: socket.socket, current: Stream | None) -> Stream | None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return current
        if current is not None:
            conn.close()  # two controllers must never drive one device
            return current
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending.clear()
        self._delayed.clear()
        return SocketStream(conn)

    def _send(self, stream: Stream, data: bytes) -> None:
        if not data:
            return
        if self._latency_s:
            self._delayed.append((time.monotonic() + self._latency_s, data))
            return
        self._queue(stream, data)

    def _release(self, stream: Stream) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._queue(stream, self._delayed.popleft()[1])

    def _queue(self, stream: Stream, data: bytes) -> None:
        if len(self._pending) + len(data) > MAX_PENDING_BYTES:
            self.tx_dropped_bytes += len(data)  # whole frames only: the peer resyncs cleanly
            return
        self._pending += data
        self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        written = stream.write(bytes(self._pending))
        del self._pending[:written]


class TraceWriter:
    """on_event hook appending JSON lines stamped with time.monotonic() (shared across processes)."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # closed by close()
        self._lock = threading.Lock()

    def __call__(self, kind: str, now: float, detail: dict) -> None:
        line = json.dumps({"t": time.monotonic(), "kind": kind, "device_now": now, **detail})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _make_device(config: SimConfig, trace_path: str | Path | None) -> tuple[SimulatedDevice, TraceWriter | None]:
    trace = TraceWriter(trace_path) if trace_path is not None else None
    return SimulatedDevice(config, now=time.monotonic(), on_event=trace), trace


def serve_pty(
    config: SimConfig,
    ready: Callable[[str], None],
    stop: threading.Event,
    trace_path: str | Path | None = None,
) -> None:
    """Serve on a new pseudo-terminal; ready(slave_path) once it can be opened."""
    device, trace = _make_device(config, trace_path)
    stream = PtyStream()
    try:
        ready(stream.path)
        DeviceLoop(device, stop).run(stream)
    finally:
        stream.close()
        if trace is not None:
            trace.close()


def serve_tcp(
    config: SimConfig,
    host: str,
    port: int,
    ready: Callable[[str], None],
    stop: threading.Event,
    trace_path: str | Path | None = None,
) -> None:
    """Listen on host:port; ready("socket://HOST:PORT") with the bound port; one client at a time."""
    device, trace = _make_device(config, trace_path)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    listener.setblocking(False)
    try:
        bound_host, bound_port = listener.getsockname()[:2]
        shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::", "") else bound_host
        ready(f"socket://{shown}:{bound_port}")
        DeviceLoop(device, stop).run(None, listener)
    finally:
        listener.close()
        if trace is not None:
            trace.close()


def start_in_process(
    config: SimConfig | None = None, trace_path: str | Path | None = None
) -> tuple[socket.socket, Callable[[], None], SimulatedDevice]:
    """A device on a daemon thread "sim-device" behind a socketpair: the `sim://` transport.

    Returns the host's end (blocking), a stop function (idempotent; joins the thread) and
    the device for inspection. The loop also ends when the host closes its end.
    """
    device, trace = _make_device(config or SimConfig(), trace_path)
    host_end, device_end = socket.socketpair()
    stop = threading.Event()
    loop = DeviceLoop(device, stop)

    def run() -> None:
        try:
            loop.run(SocketStream(device_end))
        finally:
            if trace is not None:
                trace.close()

    thread = threading.Thread(target=run, name="sim-device", daemon=True)
    thread.start()

    def stop_device() -> None:
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=2)

    return host_end, stop_device, device


def main(argv: Sequence[str] | None = None) -> int:
    """`estim sim`: serve a simulated device until SIGINT/SIGTERM; first stdout line = where."""
    parser = argparse.ArgumentParser(prog="estim sim", description="Run the simulated stimulator.")
    parser.add_argument("--listen", default="pty", help="pty (default) or tcp:HOST:PORT (PORT 0 = any free)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SimConfig setting")
    parser.add_argument("--trace", metavar="PATH", help="append device events as JSON lines to PATH")
    args = parser.parse_args(argv)
    try:
        config = SimConfig.from_overrides(dict(_split_setting(item) for item in args.set))
        listen = _parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def ready(where: str) -> None:
        print(where, flush=True)

    try:
        if listen is None:
            serve_pty(config, ready, stop, args.trace)
        else:
            serve_tcp(config, listen[0], listen[1], ready, stop, args.trace)
    except OSError as exc:
        print(f"estim sim: {exc}", file=sys.stderr)
        return 1
    return 0


def _split_setting(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item!r}: expected KEY=VALUE")
    return key.strip(), value


def _parse_listen(text: str) -> tuple[str, int] | None:
    if text == "pty":
        return None
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected pty or tcp:HOST:PORT")
    return host.strip("[]"), int(port)


if __name__ == "__main__":
    sys.exit(main())
