"""Test helpers: session set-ups. The simulator as its own process is
`firmware_host.sim.process`; the unguarded request path for tests that play a faulty host
is `hil_tests.harness` (`unguarded`, `ask`, `wave`)."""

from __future__ import annotations

from pathlib import Path

from safety import ChannelPlacement, NeedleSite, Prescription, Region, Side

REPO = Path(__file__).resolve().parents[1]


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
