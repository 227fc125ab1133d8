"""Test helpers: the simulator as a separate process on a pty or TCP, session set-ups,
and a deliberately unguarded request path for tests that play a faulty host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from firmware_host import icd
from firmware_host.link import Link
from safety import ChannelPlacement, NeedleSite, Prescription, Region, Side

REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class SimProcess:
    url: str
    proc: subprocess.Popen
    trace: Path

    def events(self) -> list[dict]:
        if not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines() if line.strip()]

    def wait_event(self, predicate, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.01)
        raise AssertionError(f"no matching device event within {timeout} s; saw {self.events()[-5:]}")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def start_sim(listen: str, trace: Path, *settings: str) -> SimProcess:
    args = [sys.executable, "-m", "firmware_host", "sim", "--listen", listen, "--trace", str(trace)]
    for item in settings:
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if not first:
        proc.kill()
        raise AssertionError(f"simulator printed nothing: {proc.stderr.read() if proc.stderr else ''}")
    return SimProcess(first, proc, trace)


def stop_sim(sim: SimProcess) -> None:
    sim.resume()
    sim.proc.send_signal(signal.SIGTERM)
    try:
        sim.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait()


def forearm_sites(*channels: int) -> dict[int, ChannelPlacement]:
    site = NeedleSite(Region.FOREARM, Side.LEFT)
    return {ch: ChannelPlacement(site, site) for ch in channels}


def prescription(max_ma: float = 5.0, ramp: float = 2.0) -> Prescription:
    return Prescription(max_amplitude_ma=max_ma, ramp_ma_per_s=ramp, frequency_hz=(1, 200),
                        pulse_width_us=(50, 600), sensitivity="hyposensitive")


def unguarded(link: Link, message: icd.Message) -> Future[icd.Message]:
    """Queue a raw message, skipping the interlock: only tests that play a faulty host to
    exercise the device's own rules do this; product code has no such path."""
    return link._enqueue(message)  # noqa: SLF001
