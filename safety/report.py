"""End-of-session output summary per channel, at the declared needle.

The host estimate of delivered charge is ∫ phase charge × pulse rate dt over the
periods the channel was enabled (cathodic charge, as the device's counter counts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .history import AppliedDose
from .limits import Needle
from .rules import SettingArrays, compute_metrics


@dataclass(frozen=True)
class ChannelSummary:
    channel: int
    needle: Needle
    max_phase_charge_uc: float
    max_net_charge_per_pulse_uc: float
    max_current_density_ma_cm2: float
    max_power_density_w_cm2: float
    max_shannon_k: float | None          # None when nothing was delivered
    delivered_charge_host_uc: float
    delivered_charge_device_uc: float | None
    stimulation_s: float


def output_summary(doses: Sequence[AppliedDose], needles: Mapping[int, Needle],
                   device_charge_uc: Mapping[int, float]) -> tuple[list[ChannelSummary], str]:
    """Summaries per channel (of `needles`) and a plain-text table."""
    summaries = []
    for ch, needle in sorted(needles.items()):
        spans = [d for d in doses if d.channel == ch and d.enabled and d.setting and d.seconds > 0]
        if spans:
            m = compute_metrics(SettingArrays.from_settings([s.setting for s in spans]),
                                np.full(len(spans), needle.area_cm2))
            live = m.phase_charge_uc > 0
            dt = np.array([d.seconds for d in spans])
            summaries.append(ChannelSummary(
                ch, needle, float(m.phase_charge_uc.max()), float(m.residual_charge_uc.max()),
                float(m.current_density_ma_cm2.max()), float(m.power_density_w_cm2.max()),
                float(m.shannon_k[live].max()) if live.any() else None,
                float((m.phase_charge_uc * m.pulse_rate_hz * dt).sum()), device_charge_uc.get(ch),
                float(dt[live].sum())))
        else:
            summaries.append(ChannelSummary(ch, needle, 0.0, 0.0, 0.0, 0.0, None, 0.0,
                                            device_charge_uc.get(ch), 0.0))
    return summaries, format_summary(summaries)


def format_summary(summaries: Sequence[ChannelSummary]) -> str:
    head = ("ch", "needle", "max Q/phase µC", "net Q/pulse µC", "max J mA/cm²", "max P W/cm²", "max k",
            "charge host µC", "charge device µC", "stim s")
    rows = [head] + [(
        str(s.channel), f"{s.needle.diameter_mm:g}x{s.needle.length_mm:g} mm", f"{s.max_phase_charge_uc:.3f}",
        f"{s.max_net_charge_per_pulse_uc:.6f}", f"{s.max_current_density_ma_cm2:.2f}",
        f"{s.max_power_density_w_cm2:.4f}", "-" if s.max_shannon_k is None else f"{s.max_shannon_k:.2f}",
        f"{s.delivered_charge_host_uc:.0f}",
        "-" if s.delivered_charge_device_uc is None else f"{s.delivered_charge_device_uc:.0f}",
        f"{s.stimulation_s:.0f}") for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
