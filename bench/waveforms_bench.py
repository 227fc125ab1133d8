"""Waveform figures: program check (vectorised vs per pulse), rendering, arrays, engine
timing on the in-process simulated device, and memory while streaming long programs.

    python bench/waveforms_bench.py [--quick] [--json]

Figures only; tests never assert on time. `run(quick)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import firmware_host as fh  # noqa: E402
from firmware_host.waveforms import Program, Pulse, Shape, render  # noqa: E402
from firmware_host.waveforms.check import check, check_per_pulse  # noqa: E402
from firmware_host.waveforms.engine import run_program  # noqa: E402
from safety import DeviceLimits  # noqa: E402

SIM_DEVICE = DeviceLimits(channels=4, max_amplitude_ma=30.0, max_phase_us=1000, min_frequency_hz=0.5,
                          max_frequency_hz=200.0, max_phase_charge_uc=20.0, max_step_ma=1.0,
                          max_slew_ma_per_s=4.0, compliance_v=60.0)
SITES = {1: ("thigh", "lower_leg", "left"), 2: ("thigh", "lower_leg", "right"),  # channels run together:
         3: ("lower_leg", "foot", "left"), 4: ("lower_leg", "foot", "right")}    # every pair stays in the legs


def dense_disperse(minutes: float, amplitude_ma: float = 2.0, ramp_in_s: float = 60.0, phase_s: float = 3.0) -> Program:
    """A 4-channel 2/100 Hz dense-disperse program of the given length."""
    spec: dict[str, Any] = {
        "pattern": "dense_disperse", "disperse": {"frequency_hz": 2, "pulse_width_us": 300},
        "dense": {"frequency_hz": 100, "pulse_width_us": 200}, "disperse_s": phase_s, "dense_s": phase_s,
        "intensity": amplitude_ma,
    }
    if ramp_in_s:
        spec["ramp"] = {"in_s": ramp_in_s, "out_s": 0}
    return Program.from_data({
        "name": f"{minutes:g} min dense-disperse", "mechanism": "descending_modulation",
        "prescription": {"max_amplitude_ma": {ch: 5.0 for ch in SITES}, "max_minutes": 60, "ramp_rate_ma_per_s": 1.0,
                         "sensitivity": "hyposensitive", "frequency_hz": [1, 100], "pulse_width_us": [100, 400]},
        "needles": {ch: {"diameter_mm": 0.25, "length_mm": 25, "inserted_mm": 15, "site_a": {"region": a, "side": side},
                         "site_b": {"region": b, "side": side}} for ch, (a, b, side) in SITES.items()},
        "segments": [{"duration_s": minutes * 60.0, "channels": {ch: spec for ch in SITES}}],
    })


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


class VirtualClock:
    """Schedule time that jumps when slept: an hour streams as fast as the device answers."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt


def _open(program: Program) -> Any:
    setup = program.session_setup(SIM_DEVICE)
    return fh.open("sim://", prescription=setup.prescription, placements=setup.placements, needles=setup.needles)


def run(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # First, while the process is small: ru_maxrss only ever rises, so a later figure would
    # hide growth behind the rendering's arrays.
    rss = {}
    for minutes in (1.0, 10.0, 60.0):
        program = dense_disperse(minutes, amplitude_ma=1.0, ramp_in_s=0.0)
        clock = VirtualClock()
        with _open(program) as stim:
            run_program(stim, program, clock=clock, sleep=clock.sleep)
        rss[f"{minutes:g}"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    out["peak_rss_mib_after_streaming_min"] = rss
    hour = dense_disperse(60.0)
    out["check_vectorised_s"] = _best(lambda: check(hour, SIM_DEVICE), 3 if quick else 7)
    per_pulse_min = 1.0 if quick else 5.0  # the loop is slow; time a slice and scale linearly
    per_pulse_s = _best(lambda: check_per_pulse(dense_disperse(per_pulse_min), SIM_DEVICE), 1) * 60.0 / per_pulse_min
    out["check_per_pulse_s_extrapolated"] = per_pulse_s
    out["check_ratio"] = per_pulse_s / out["check_vectorised_s"]
    out["arrays_60min_4ch_s"] = _best(lambda: hour.to_arrays(0.1), 5)
    pulse, n_pulses = Pulse(Shape.BIPHASIC, 200.0, 3.0, asym_ratio=2, interphase_us=50.0), 200 if quick else 1000
    render_s = _best(lambda: render(pulse, 1e6, n_pulses, 100.0), 3)
    out["render_samples_per_s"] = n_pulses * 1e6 / 100.0 / render_s
    real_s = 2.0 if quick else 5.0
    short = dense_disperse(real_s / 60.0, amplitude_ma=1.0, ramp_in_s=0.0, phase_s=0.5)
    with _open(short) as stim:
        report = run_program(stim, short)
    out["engine_real_run_s"] = real_s
    out["engine_updates"] = report.program_updates
    out["engine_late_p50_ms"] = report.late_p50_s * 1e3
    out["engine_late_p99_ms"] = report.late_p99_s * 1e3
    out["engine_late_max_ms"] = report.late_max_s * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    figures = run(args.quick)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"check 60 min x 4 ch, vectorised : {figures['check_vectorised_s'] * 1e3:8.1f} ms (target < 100 ms)")
    print(f"check per-pulse loop (scaled)   : {figures['check_per_pulse_s_extrapolated']:8.1f} s")
    print(f"ratio                           : {figures['check_ratio']:8.0f} x (target >= 50 x)")
    print(f"arrays 60 min x 4 ch            : {figures['arrays_60min_4ch_s'] * 1e3:8.1f} ms")
    print(f"render                          : {figures['render_samples_per_s'] / 1e6:8.1f} M samples/s")
    print(f"engine on sim://, {figures['engine_real_run_s']:g} s real time, {figures['engine_updates']} updates: "
          f"late p50 {figures['engine_late_p50_ms']:.2f} ms, p99 {figures['engine_late_p99_ms']:.2f} ms, "
          f"max {figures['engine_late_max_ms']:.2f} ms")
    rss = ", ".join(f"{m} min: {v:.0f} MiB" for m, v in figures["peak_rss_mib_after_streaming_min"].items())
    print(f"peak RSS streaming (accelerated): {rss}")


if __name__ == "__main__":
    main()
