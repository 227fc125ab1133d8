"""Program builders shared by the check and engine tests."""

from __future__ import annotations

from typing import Any

from firmware_host.waveforms import Program
from safety import DeviceLimits

SIM_DEVICE = DeviceLimits(channels=4, max_amplitude_ma=30.0, max_phase_us=1000, min_frequency_hz=0.5,
                          max_frequency_hz=200.0, max_phase_charge_uc=20.0, max_step_ma=1.0,
                          max_slew_ma_per_s=4.0, compliance_v=60.0)
SITES = {1: ("thigh", "lower_leg", "left"), 2: ("thigh", "lower_leg", "right"),  # channels run together:
         3: ("lower_leg", "foot", "left"), 4: ("lower_leg", "foot", "right")}    # every pair stays in the legs


def dense_disperse_spec(amplitude_ma: float = 1.0, dense_hz: float = 100.0, phase_s: float = 3.0, **extra: Any) -> dict:
    return {"pattern": "dense_disperse", "disperse": {"frequency_hz": 2, "pulse_width_us": 300},
            "dense": {"frequency_hz": dense_hz, "pulse_width_us": 200}, "disperse_s": phase_s, "dense_s": phase_s,
            "intensity": amplitude_ma} | extra


def program(minutes: float, specs: dict[int, dict], max_minutes: float = 60.0, sensitivity: str = "hyposensitive",
            sites: dict[int, tuple[str, str, str]] | None = None) -> Program:
    """A program with one segment; channels are the keys of `specs`."""
    sites = sites or {ch: SITES[ch] for ch in specs}
    return Program.from_data({
        "name": "test", "mechanism": "descending_modulation",
        "prescription": {"max_amplitude_ma": {ch: 10.0 for ch in specs}, "max_minutes": max_minutes,
                         "ramp_rate_ma_per_s": 1.0, "sensitivity": sensitivity,
                         "frequency_hz": [1, 100], "pulse_width_us": [100, 400]},
        "needles": {ch: {"diameter_mm": 0.25, "length_mm": 25, "inserted_mm": 15, "site_a": {"region": a, "side": side},
                         "site_b": {"region": b, "side": side}} for ch, (a, b, side) in sites.items()},
        "segments": [{"duration_s": minutes * 60.0, "channels": specs}],
    })
