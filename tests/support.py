"""Test helpers: session set-ups. The simulator as its own process is
`firmware_host.sim.process`; the unguarded request path for tests that play a faulty host
is `hil_tests.harness` (`unguarded`, `ask`, `wave`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from safety import ChannelPlacement, NeedleSite, Prescription, Region, Side

REPO = Path(__file__).resolve().parents[1]

DIRECT_SESSION = ["--channel", "1", "--frequency", "20", "--pulse-width", "200", "--amplitude", "1",
                  "--sites", "left:forearm,left:forearm", "--inserted", "10"]
"""A short direct session on channel 1 at 1 mA, for tests about reaching a device."""


def estim_on(url: str, command: str = "run", *args: str) -> list[str]:
    """argv of `estim COMMAND --device URL ARGS`: the one place the tests of device paths (ptys
    by any name, RFC 2217, lab places) say which device is connected."""
    return [sys.executable, "-m", "firmware_host", command, "--device", url, *args]


def forearm_sites(*channels: int) -> dict[int, ChannelPlacement]:
    site = NeedleSite(Region.FOREARM, Side.LEFT)
    return {ch: ChannelPlacement(site, site) for ch in channels}


def prescription(max_ma: float = 5.0, ramp: float = 2.0) -> Prescription:
    return Prescription(max_amplitude_ma=max_ma, ramp_ma_per_s=ramp, frequency_hz=(1, 200),
                        pulse_width_us=(50, 600), sensitivity="hyposensitive")


def write_thresholds(path: Path, program, sensory: float = 1.0, motor: float = 2.0,  # noqa: ANN001 - Program
                     tolerance: float = 4.0, patient: str | None = None) -> Path:
    """A thresholds file as `estim titrate --out` writes it, measured now on every threshold-
    relative channel of `program`, on its sites and waveform."""
    from datetime import datetime, timezone

    from firmware_host.waveforms.thresholds import ChannelThresholds, save

    channels = sorted({ch for ch, _ in program.needed_thresholds})
    save(path, [ChannelThresholds(ch, program.needles[ch].placement(), program.titration_waveform(ch),
                                  datetime.now(timezone.utc), sensory, motor, tolerance, patient)
                for ch in channels])
    return path


def stimulating(estim_run: subprocess.Popen[str]) -> None:
    """Returns once a running `estim run` reports channel 1 on (its progress lines on stdout)."""
    assert estim_run.stdout is not None
    for line in estim_run.stdout:
        if line.startswith("ch1 on:"):
            return
    raise AssertionError(f"estim never stimulated: exit {estim_run.wait()}: "
                         f"{estim_run.stderr.read() if estim_run.stderr else ''}")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition until it holds (bounded): no fixed sleeps in the tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def peak_ua(record: Path) -> int:
    """The highest current the device has reported so far in a treatment record, in µA."""
    from safety import read_readings

    if not record.exists():
        return 0
    return max((r["amplitude_ua"] for r in read_readings(record)), default=0)


def titrate_with_keys(argv: Sequence[str], record: Path, keys: Sequence[tuple[str, int]],
                      cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `estim titrate` (argv without --record), pressing each key once the delivered current
    reaches its level in µA, as a clinician would when the patient reports it."""
    from firmware_host.sim.process import child_env

    proc = subprocess.Popen([*argv, "--record", str(record)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdin is not None
    for key, level in keys:
        wait_for(lambda: peak_ua(record) >= level or proc.poll() is not None, timeout=30)
        proc.stdin.write(key + "\n")
        proc.stdin.flush()
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
