"""The delivered-intensity figure of a session, for `record show --plot` and the PDF report.

Top: intensity as the device reported it, per channel, with the patient's thresholds as
dashed lines and every stop, e-stop, fault, refusal and piece of patient feedback marked
by a numbered line (the numbers are listed under the plot). Bottom: which pulse rate each
channel delivered when, one row per rate, so a dense-disperse session reads as two
interleaved rows rather than a solid block. Legends sit outside the axes.
matplotlib is imported here only (Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..waveforms.preview import draw_thresholds, merge_span, rate_label, spell_text
from .session import Session

EVENT_STYLE = {"stop": ("tab:red", "-"), "estop": ("darkred", "-"), "fault": ("tab:orange", "--"),
               "refusal": ("tab:purple", ":"), "feedback": ("tab:green", "-.")}


def record_figure(session: Session, fig: Any = None) -> Any:
    """Draw into `fig` (a Figure or SubFigure; default a new 10 x 5.2 in Figure) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(10, 5.2), layout="constrained")
    amp_ax, rate_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    end_s = max((o.samples[-1].t_s for o in session.outputs if o.samples), default=0.0)
    scale, unit = (60.0, "min") if end_s > 180 else (1.0, "s")
    colours = {}
    for o in session.outputs:
        line, = amp_ax.step([x.t_s / scale for x in o.samples], [x.ma for x in o.samples], where="post",
                            lw=1.1, label=f"channel {o.channel}")
        colours[o.channel] = line.get_color()
    draw_thresholds(amp_ax, {th.get("channel"): th for th in session.thresholds}, colours)
    marked = [e for e in session.events if e.t_s is not None and e.kind in EVENT_STYLE]
    for n, e in enumerate(marked, start=1):
        colour, style = EVENT_STYLE[e.kind]
        for ax in (amp_ax, rate_ax):
            ax.axvline(e.t_s / scale, color=colour, ls=style, lw=1.2)
        amp_ax.annotate(str(n), (e.t_s / scale, 1.0 + 0.05 * ((n - 1) % 3)), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", fontsize=8, color=colour, annotation_clip=False)
    amp_ax.set_ylabel("intensity delivered (mA)")
    amp_ax.set_ylim(bottom=0)
    amp_ax.grid(alpha=0.3)
    if amp_ax.get_legend_handles_labels()[0]:
        amp_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _rates(rate_ax, session, colours, scale)
    rate_ax.set_xlabel(f"device time ({unit})")
    if marked:
        from .words import stop_text

        text = "; ".join(f"{n} {e.kind}{'' if e.channel is None else f' ch{e.channel}'}: {stop_text(e.text)}"
                         for n, e in enumerate(marked, start=1))
        rate_ax.set_xlabel(f"device time ({unit})\n" + _wrap(text, 110), fontsize=8)
    return fig


def _rates(ax: Any, session: Session, colours: dict[int, str], scale: float) -> None:
    """One row per pulse rate; a bar wherever a channel delivered at that rate."""
    rates = sorted({x.rate for o in session.outputs for x in o.samples if x.ma > 0})
    rows = {rate: i for i, rate in enumerate(rates)}
    n = max(len(session.outputs), 1)
    spells: dict[tuple[float, int, float], list[tuple[float, float]]] = {}
    total = max((o.samples[-1].t_s - o.samples[0].t_s for o in session.outputs if o.samples), default=0.0)
    for k, o in enumerate(session.outputs):
        spans: dict[tuple[float, int, float], list[tuple[float, float]]] = {}
        for a, b in zip(o.samples, o.samples[1:]):
            if a.ma > 0:
                merge_span(spans.setdefault(a.rate, []), a.t_s, b.t_s)
        for rate, bars in spans.items():
            spells.setdefault(rate, []).extend(bars)
            ax.broken_barh([(s / scale, w / scale) for s, w in bars], (rows[rate] - 0.4 + 0.8 * k / n, 0.8 / n),
                           color=colours.get(o.channel))
    ax.set_yticks(range(len(rates)), [(rate_label(*rate) + "\n" + spell_text(spells.get(rate, []), total)).rstrip()
                                      for rate in rates], fontsize="small")
    ax.set_ylim(-0.6, max(len(rates), 1) - 0.4)
    ax.set_ylabel("pulse rate")
    ax.grid(axis="x", alpha=0.3)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def save_record_plot(session: Session, png: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = record_figure(session)
    fig.suptitle(f"{session.path.name}: intensity as delivered", fontsize=10)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
