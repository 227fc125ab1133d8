"""ser2net publishing a serial path as RFC 2217, configured as labgrid's exporter runs it.

For what needs the network path without a coordinator: the RFC 2217 tests and benchmarks
(`python -m bench --only rfc2217`), and a rig host without labgrid (hil_tests/README.md).
ser2net is Debian's `ser2net` package (4.x, YAML configuration); `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SPEED = 115200
START_TIMEOUT_S = 5.0


def ser2net_binary() -> str | None:
    """Where ser2net is (labgrid's exporter looks in the same places), or None."""
    return shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.isfile("/usr/sbin/ser2net") else None)


def connection(path: str, host: str, port: int, max_connections: int, tuned: bool) -> list[str]:
    """ser2net 4 YAML, one `-Y` line each: labgrid's exporter's (accepter, connector, options),
    bound to `host` here (the exporter binds every interface). labgrid allows 10 connections;
    a rig configured by hand should allow 1. `tuned` is what hil_tests/README.md asks of such
    a rig: TCP_NODELAY (else Nagle's algorithm and the host's delayed ACKs hold replies up to
    40 ms) and no `chardelay` (ser2net's wait for more serial bytes before it sends, >= 1 ms)."""
    return [
        "connection: &estim",
        f"  accepter: telnet(rfc2217,mode=server),{'tcp(nodelay)' if tuned else 'tcp'},{host},{port}",
        f"  connector: serialdev(nouucplock=true),{path},{SPEED}n81,local",
        "  options:",
        f"    max-connections: {max_connections}",
        *(["    chardelay: false"] if tuned else []),
    ]


class Ser2net:
    """A running ser2net for one serial path: `url` is its rfc2217:// address. A context
    manager (stopped on exit); `pause`/`resume` freeze it as a stalled network would, `kill`
    drops every connection at once as a rig host that dies."""

    def __init__(self, path: str, host: str = "127.0.0.1", max_connections: int = 10, tuned: bool = False) -> None:
        binary = ser2net_binary()
        if binary is None:
            raise FileNotFoundError("ser2net is not installed (Debian: apt-get install ser2net)")
        self.port = _free_port(host)
        self.url = f"rfc2217://{host}:{self.port}"
        argv = [binary, "-d", "-n"]  # foreground, no configuration file
        for line in connection(path, host, self.port, max_connections, tuned):
            argv += ["-Y", line]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_listening(self.proc, host, self.port)
        except BaseException:
            self.stop()
            raise

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> Ser2net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[str], host: str, port: int) -> None:
    """Until ser2net accepts on `port` (checked through /proc, not by connecting: a client
    would make it open the serial port)."""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ser2net exited at once: {proc.stderr.read() if proc.stderr else ''}")
        listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A"]  # TCP_LISTEN
        if wanted in listening:
            return
        time.sleep(0.02)
    raise RuntimeError(f"ser2net did not listen on {host}:{port} within {START_TIMEOUT_S} s")
