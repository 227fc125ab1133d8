"""E-stop latency (API call -> device output off) and watchdog latency (host killed -> safe).

Both are measured across processes on CLOCK_MONOTONIC: the host reads time.monotonic()
just before the call (or the kill), the device's trace stamps each event with the
time.monotonic() at which it handled it (`device_now`).
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from firmware_host.sim.process import child_env
from firmware_host.stimulator import DeviceFault
from hil_tests.harness import open_session
from safety import ChannelReading

from .hostproc import STAMP
from .harness import TRANSPORTS, Device, Streamer, arm, opened_link, simulator
from .stats import Result, spread

ESTOP_P99_MS = 2.0
ESTOP_P99_NETWORK_MS = 5.0  # through ser2net (RFC 2217): one more process and a TCP hop
WATCHDOG_OVERSHOOT_P99_MS = 20.0


def run_estop(workdir: Path, quick: bool) -> list[Result]:
    """Link.estop() idle and with a saturated link, and Stimulator.estop() idle, per transport."""
    return [r for transport in TRANSPORTS for r in estop_on(transport, workdir, quick, ESTOP_P99_MS)]


def estop_on(transport: str, workdir: Path, quick: bool, p99_below_ms: float) -> list[Result]:
    """The e-stop figures of one transport."""
    trials = 30 if quick else 200
    results: list[Result] = []
    with simulator(transport, workdir) as sim:
        for saturated in (False, True):
            samples = _link_estop_trials(sim, trials, saturated)
            load = "saturated" if saturated else "idle"
            results += spread(f"estop_link_{load}_{transport}", samples, "ms", 1e3, p99_below_ms)
        samples = _api_estop_trials(sim, max(trials // 4, 10))
        results += spread(f"estop_api_idle_{transport}", samples, "ms", 1e3, p99_below_ms)
    return results


def _link_estop_trials(sim: Device, trials: int, saturated: bool) -> list[float]:
    samples = []
    with opened_link(sim.url) as link:
        with Streamer(link, channel=1) if saturated else nullcontext():
            for _ in range(trials):
                arm(link, channel=0)
                samples.append(_timed_estop(sim, link.estop))
    return samples


def _api_estop_trials(sim: Device, trials: int) -> list[float]:
    """Through the public API: the interlock trips, then the link writes ESTOP.

    The supervisor stops again on any reading that still shows the last stop, and on the
    device's FAULT ESTOP; such a stop would cancel the next enable or race the measured
    one. So each trial waits for a reading taken after its enable before it stops (at
    telemetry_hz: this is the slow benchmark), and for the next event after its FAULT.
    """
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    samples = []
    with open_session(sim.url, (1,)) as stim:  # the HIL suite's session (one place opens them all)
        stim.subscribe(events.put)
        stim.configure(1, frequency_hz=100, pulse_width_us=200)
        for _ in range(trials):
            if stim.tripped:
                stim.clear_faults("bench")
            stim.enable(1)
            _next_event(events, lambda e: isinstance(e, ChannelReading) and e.channel == 1 and e.enabled)
            samples.append(_timed_estop(sim, stim.estop))
            _next_event(events, lambda e: isinstance(e, DeviceFault) and e.code == "ESTOP")
            _next_event(events, lambda e: True)
    return samples


def _next_event(events: queue.SimpleQueue[object], predicate: Callable[[object], bool]) -> None:
    while not predicate(events.get(timeout=2.0)):
        pass


def _timed_estop(sim: Device, estop: Callable[[], bool]) -> float:
    """Seconds from just before `estop()` to the device turning the output off.

    estop()'s result is not checked: the trace proves the stop, and the API's estop()
    can report False for an ACKed stop when the supervisor stops concurrently.
    """
    start = time.monotonic()
    estop()
    return sim.trace.output_off("estop", start) - start


def run_watchdog(workdir: Path, quick: bool) -> list[Result]:
    """SIGKILL a host process that holds a channel enabled; time until the watchdog trips."""
    trials = 5 if quick else 20
    results: list[Result] = []
    for transport in TRANSPORTS:
        with simulator(transport, workdir) as sim:
            from_kill, overshoot = _watchdog_trials(sim, workdir, trials)
        results += spread(f"watchdog_kill_to_off_{transport}", from_kill, "ms", 1e3)
        results += spread(f"watchdog_overshoot_{transport}", overshoot, "ms", 1e3, WATCHDOG_OVERSHOOT_P99_MS)
    return results


def _watchdog_trials(sim: Device, workdir: Path, trials: int) -> tuple[list[float], list[float]]:
    """Kill-to-off latencies, and overshoots past watchdog_ms counted from the host's last frame.

    The next host is started while the device still waits out the watchdog, so its import
    time overlaps; it opens the link only when told to ("go"), never before the trip.
    """
    stamp_path = workdir / "last-host-frame"
    from_kill: list[float] = []
    overshoot: list[float] = []
    watchdog_s = 0.0
    host = _spawn_host(sim.url, stamp_path)
    try:
        for trial in range(trials):
            watchdog_s = _host_ready(host) / 1000
            time.sleep(random.uniform(0, watchdog_s / 4))  # a random phase of the heartbeat period
            killed = time.monotonic()
            host.send_signal(signal.SIGKILL)
            host.wait()
            last_frame = STAMP.unpack(stamp_path.read_bytes()[: STAMP.size])[0]
            if trial + 1 < trials:
                host = _spawn_host(sim.url, stamp_path)
            off = sim.trace.output_off("watchdog", killed, timeout=watchdog_s + 2.0)
            from_kill.append(off - killed)
            overshoot.append(off - last_frame - watchdog_s)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    return from_kill, overshoot


def _spawn_host(url: str, stamp_path: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "bench.hostproc", url, str(stamp_path)]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())


def _host_ready(host: subprocess.Popen[str]) -> int:
    """Tell a spawned host to connect and arm; its device's watchdog_ms once it has."""
    assert host.stdin is not None and host.stdout is not None
    host.stdin.write("go\n")
    host.stdin.flush()
    line = host.stdout.readline().split()
    if line[:1] != ["ready"]:
        raise RuntimeError(f"watchdog host did not get ready (exit {host.poll()})")
    return int(line[1])
