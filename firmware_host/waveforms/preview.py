"""A picture of a program for the clinician before it runs.

Top: intensity of every channel over the whole session (from the array form, so it shows
exactly the quantised settings that would be sent), with the patient's thresholds as
dashed lines. Middle: which pulse rate each channel uses when, one row per rate (bursts
labelled with their structure), so a dense-disperse program reads as two interleaved
rows, not a solid block. Bottom: each distinct pulse shape as delivered: two whole bursts
for a burst setting, a few pulses otherwise, with the charge of the leading phase.
Legends sit outside the axes. matplotlib is imported here only, with the Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .check import UPDATE_PERIOD_S
from .program import Program
from .shapes import Pulse, phase_charge_uc, render

ZOOM_PULSES = 3
"""Pulses drawn per distinct shape (without bursts)."""
ZOOM_BURSTS = 2
"""Bursts drawn per distinct burst shape."""
THRESHOLD_STYLE = {"sensory": ":", "motor": "--", "tolerance": "-."}


def preview(program: Program, out_png: str | Path, update_period_s: float = UPDATE_PERIOD_S,
            thresholds: Mapping[int, Mapping[str, float]] | None = None) -> Path:
    """Write a PNG of a resolved program; `thresholds` (per channel, mA) are drawn as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = program.to_arrays(update_period_s)
    channels = sorted(set(seg.channel.tolist()))
    shapes = _distinct_pulses(seg)
    rows = (len(shapes) + 2) // 3
    minutes = program.duration_s > 180
    scale, unit = (60.0, "min") if minutes else (1.0, "s")
    fig = plt.figure(figsize=(11, 6.5 + 2.2 * rows), layout="constrained")
    grid = fig.add_gridspec(2 + rows, 3, height_ratios=[3, 1.6] + [2] * rows)
    amp_ax = fig.add_subplot(grid[0, :])
    rate_ax = fig.add_subplot(grid[1, :], sharex=amp_ax)
    colours = {}
    for ch in channels:
        mask = seg.channel == ch
        t = np.append(seg.t_s[mask], seg.t_end_s[mask][-1]) / scale
        colours[ch] = amp_ax.stairs(seg.amplitude_ma[mask], t, label=f"channel {ch}").get_edgecolor()
    draw_thresholds(amp_ax, thresholds or {}, colours)
    amp_ax.set(title=program.name, ylabel="intensity (mA)")
    amp_ax.set_ylim(bottom=0)
    amp_ax.grid(alpha=0.3)
    amp_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    _rate_rows(rate_ax, seg, channels, colours, scale)
    rate_ax.set_xlabel(f"time ({unit})")
    for i, (pulse, frequency_hz, burst_pulses, burst_rate_hz) in enumerate(shapes):
        _zoom(fig.add_subplot(grid[2 + i // 3, i % 3]), pulse, frequency_hz, burst_pulses, burst_rate_hz)
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def draw_thresholds(ax, thresholds: Mapping[int, Mapping[str, float]], colours: Mapping[int, object]) -> None:  # type: ignore[no-untyped-def]
    """Dashed lines at each channel's thresholds; one grey line for a value all channels share."""
    lines: dict[tuple[str, float], list[int]] = {}
    for ch, marks in sorted(thresholds.items()):
        for name in THRESHOLD_STYLE:
            if marks.get(name) is not None:
                lines.setdefault((name, float(marks[name])), []).append(ch)
    for (name, value), chs in lines.items():
        shared = len(chs) > 1
        ax.axhline(value, ls=THRESHOLD_STYLE[name], lw=0.9, color="grey" if shared else colours.get(chs[0], "grey"),
                   label=f"{name} {value:g} mA" + (f" (ch {', '.join(map(str, chs))})" if len(thresholds) > 1 else ""))


def spell_text(spans: list[tuple[float, float]], total: float) -> str:
    """'3 s at a time' when a rate comes in short spells (dense-disperse), else ''."""
    if len(spans) < 4:
        return ""
    median = float(np.median([width for _, width in spans]))
    return f"{median:.3g} s at a time" if median < total / 20 else ""


def rate_label(hz: float, burst_pulses: int = 0, burst_rate_hz: float = 0.0) -> str:
    """'100 Hz', or '7 x 100 Hz, 2 bursts/s' for bursts."""
    return f"{burst_pulses} x {hz:g} Hz, {burst_rate_hz:g} bursts/s" if burst_pulses >= 2 else f"{hz:g} Hz"


def _rate_rows(ax, seg, channels: list[int], colours: dict, scale: float) -> None:  # type: ignore[no-untyped-def]
    """One row per pulse rate (or burst structure); a bar wherever a channel uses it at > 0 mA."""
    live = seg.amplitude_ma > 0
    keys = sorted({(float(f), int(b), float(r)) for f, b, r, on in
                   zip(seg.frequency_hz, seg.burst_pulses, seg.burst_rate_hz, live) if on})
    row_of = {k: i for i, k in enumerate(keys)}
    n = max(len(channels), 1)
    spells: dict[int, list[tuple[float, float]]] = {}
    for k, ch in enumerate(channels):
        bars: dict[int, list[tuple[float, float]]] = {}
        for i in np.flatnonzero((seg.channel == ch) & live):
            key = (float(seg.frequency_hz[i]), int(seg.burst_pulses[i]), float(seg.burst_rate_hz[i]))
            merge_span(bars.setdefault(row_of[key], []), float(seg.t_s[i]), float(seg.t_end_s[i]))
        for row, spans in bars.items():
            spells.setdefault(row, []).extend(spans)
            ax.broken_barh([(a / scale, w / scale) for a, w in spans], (row - 0.4 + 0.8 * k / n, 0.8 / n),
                           color=colours.get(ch))
    total = float(seg.t_end_s.max()) if len(seg) else 0.0
    ax.set_yticks(range(len(keys)), [rate_label(*key) + ("\n" + spell_text(spells.get(row, []), total)).rstrip()
                                     for key, row in row_of.items()], fontsize="small")
    ax.set_ylim(-0.6, max(len(keys), 1) - 0.4)
    ax.set_ylabel("pulse rate")
    ax.grid(axis="x", alpha=0.3)


def merge_span(spans: list[tuple[float, float]], start: float, end: float) -> None:
    """Append [start, end) as (start, width), joining it to the last span when they touch."""
    if spans and abs(spans[-1][0] + spans[-1][1] - start) < 1e-6:
        spans[-1] = (spans[-1][0], end - spans[-1][0])
    else:
        spans.append((start, end - start))


def _zoom(ax, pulse: Pulse, frequency_hz: float, burst_pulses: int, burst_rate_hz: float) -> None:  # type: ignore[no-untyped-def]
    """A few pulses of one shape; for bursts, two whole bursts so their grouping shows."""
    rate = max(1e6, 20 / (pulse.pulse_width_us * 1e-6))
    bursting = burst_pulses >= 2
    if bursting:
        n = ZOOM_BURSTS * burst_pulses
        rate = min(rate, 2e5 * burst_rate_hz)   # at most 400 000 samples over the two burst periods
    else:
        n = ZOOM_PULSES
    t, current = render(pulse, rate, n, frequency_hz, burst_pulses, burst_rate_hz)
    ax.plot(t * 1e3, current, lw=0.8)
    if bursting:  # the pulses inside one burst, magnified
        inset = ax.inset_axes((0.5, 0.5, 0.47, 0.45))
        first = t < burst_pulses / frequency_hz
        inset.plot(t[first] * 1e3, current[first], lw=0.6)
        inset.text(0.5, 0.02, f"one burst: {burst_pulses} pulses", transform=inset.transAxes, ha="center",
                   va="bottom", fontsize="x-small")
        inset.tick_params(labelsize="xx-small")
    ax.set(title=rate_label(frequency_hz, burst_pulses, burst_rate_hz) + f", {pulse.shape.name.lower()} "
           f"{pulse.pulse_width_us:g} µs", xlabel="ms", ylabel="mA")
    ax.title.set_fontsize("small")
    ax.annotate(f"phase charge {phase_charge_uc(pulse):.3f} µC", (0.02, 0.05), xycoords="axes fraction",
                fontsize="small")
    period_us = 1e6 / frequency_hz
    if not bursting and n * period_us > 20 * pulse.duration_us:  # low rates: zoom on the first pulse
        ax.set_xlim(0, 4 * pulse.duration_us * 1e-3)


def _distinct_pulses(seg) -> list[tuple[Pulse, float, int, float]]:  # type: ignore[no-untyped-def]
    """One (pulse, frequency, burst pulses, burst rate) per distinct shape, at its largest amplitude."""
    best: dict[tuple, tuple[Pulse, float, int, float]] = {}
    for row in seg.rows():
        if row.amplitude_ma <= 0:
            continue
        key = (row.shape, row.pulse_width_us, row.frequency_hz, row.asym_ratio, row.interphase_us,
               row.burst_pulses, row.burst_rate_hz)
        if key not in best or row.amplitude_ma > best[key][0].amplitude_ma:
            best[key] = (row.setting.pulse, row.frequency_hz, row.burst_pulses, row.burst_rate_hz)
    return [best[k] for k in sorted(best)]
