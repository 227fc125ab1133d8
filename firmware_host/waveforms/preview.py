"""A picture of a program for the clinician before it runs.

Top: intensity and frequency of every channel over the whole session (from the array
form, so it shows exactly the quantised settings that would be sent). Bottom: a few
pulses of each distinct pulse shape, with the charge of the leading phase written on it.
matplotlib is imported here only, with the Agg backend, so nothing else pays for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .check import UPDATE_PERIOD_S
from .program import Program
from .shapes import Pulse, phase_charge_uc, render

ZOOM_PULSES = 3
"""Pulses drawn per distinct shape."""


def preview(program: Program, out_png: str | Path, update_period_s: float = UPDATE_PERIOD_S) -> Path:
    """Write a PNG of a resolved program; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = program.to_arrays(update_period_s)
    channels = sorted(set(seg.channel.tolist()))
    shapes = _distinct_pulses(seg)
    fig = plt.figure(figsize=(11, 6 + 2.2 * ((len(shapes) + 2) // 3)), layout="constrained")
    grid = fig.add_gridspec(2 + (len(shapes) + 2) // 3, 3)
    amp_ax, freq_ax = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :])
    for ch in channels:
        rows = seg.channel == ch
        t = np.append(seg.t_s[rows], seg.t_end_s[rows][-1]) / 60.0
        amp_ax.stairs(seg.amplitude_ma[rows], t, label=f"ch {ch}")
        freq_ax.stairs(seg.frequency_hz[rows], t, label=f"ch {ch}")
    amp_ax.set(title=program.name, ylabel="intensity (mA)")
    freq_ax.set(xlabel="time (min)", ylabel="frequency (Hz)", yscale="log")
    amp_ax.legend(loc="upper right", fontsize="small")
    for i, (pulse, frequency_hz) in enumerate(shapes):
        ax = fig.add_subplot(grid[2 + i // 3, i % 3])
        period_us = 1e6 / frequency_hz
        span_us = min(ZOOM_PULSES * period_us, 3 * pulse.duration_us + 2 * period_us)
        n = max(1, min(ZOOM_PULSES, int(np.ceil(span_us / period_us))))
        rate = max(1e6, 20 / (pulse.pulse_width_us * 1e-6))
        t, current = render(pulse, rate, n, frequency_hz)
        ax.plot(t * 1e3, current, lw=0.8)
        ax.set(title=f"{pulse.shape.name.lower()} {frequency_hz:g} Hz, {pulse.pulse_width_us:g} µs",
               xlabel="ms", ylabel="mA")
        ax.annotate(f"phase charge {phase_charge_uc(pulse):.3f} µC", (0.02, 0.05), xycoords="axes fraction",
                    fontsize="small")
        if n * period_us > 20 * pulse.duration_us:  # low rates: zoom on the first pulse
            ax.set_xlim(0, 4 * pulse.duration_us * 1e-3)
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _distinct_pulses(seg) -> list[tuple[Pulse, float]]:  # type: ignore[no-untyped-def]
    """One (pulse, frequency) per distinct shape/width/frequency, at its largest amplitude."""
    best: dict[tuple, tuple[Pulse, float]] = {}
    for row in seg.rows():
        if row.amplitude_ma <= 0:
            continue
        key = (row.shape, row.pulse_width_us, row.frequency_hz, row.asym_ratio, row.interphase_us)
        if key not in best or row.amplitude_ma > best[key][0].amplitude_ma:
            best[key] = (row.setting.pulse, row.frequency_hz)
    return [best[k] for k in sorted(best)]
