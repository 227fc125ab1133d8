"""What will happen, said before current starts: for each channel its needles, today's
thresholds and the arithmetic of the dose, the real peak (the last step of an escalation), the
intensity swing, how long the ramp-in takes; then the session's length and any shortening by
the sensitivity profile. `run` waits for Enter after it on a terminal."""

from __future__ import annotations

import argparse
from typing import Any

from safety import ChannelSetting

from ..waveforms.check import UPDATE_PERIOD_S


def program_plan(args: argparse.Namespace, program: Any, notes: tuple[str, ...]) -> list[str]:
    """The plan of a program or preset dosed for `args.envelope` (`notes` from its dose)."""
    from safety import describe_sensitivity, stricter

    from ..waveforms import PRESETS, PROFILES, Mechanism

    lines = []
    preset = PRESETS[Mechanism(args.preset)] if getattr(args, "preset", None) else None
    if preset is not None:
        lines.append(preset.describe())
    rx = program.prescription
    profile = stricter(rx.sensitivity, args.envelope.sensitivity)  # a program file never loosens the patient's
    lines.append("sensitivity " + describe_sensitivity(profile, max(rx.max_amplitude_ma.values()),
                                                       rx.ramp_rate_ma_per_s))
    seg = program.to_arrays(UPDATE_PERIOD_S)
    said = set()
    for ch in program.channels:
        needle = program.needles[ch]
        lines.append(f"channel {ch}: {needle.site_a.needle_site()} / {needle.site_b.needle_site()}, needles "
                     f"{needle.diameter_mm:g}x{needle.length_mm:g} mm in {needle.inserted_mm:g} mm")
        lines += [f"  {line}" for line in _thresholds(args, program, ch)]
        for note in notes:
            if note.startswith(f"channel {ch}: ") and note not in said:
                said.add(note)
                lines.append("  " + note.removeprefix(f"channel {ch}: "))
        for i, part in enumerate(program.segments, 1):
            when = f"part {i} ({part.duration_s / 60:g} min): " if len(program.segments) > 1 else ""
            lines.append(f"  dose: channel {ch}: {when}{_course(part.channels[ch], seg, ch, part.duration_s)}")
    lines.append(f"session: {_minutes(program.duration_s)}" + _shortened(args, program, preset, PROFILES, profile))
    return lines


def direct_plan(waveforms: dict[int, ChannelSetting], ramp_ma_per_s: float, hold_s: float,
                ceilings: dict[int, str]) -> list[str]:
    """The plan of a direct run: each channel's waveform and intensity, and today's ceiling there."""
    lines = []
    for ch, w in sorted(waveforms.items()):
        ramp_s = w.amplitude_ma / ramp_ma_per_s
        lines.append(f"channel {ch}: {w.frequency_hz:g} Hz, {w.pulse_width_us:g} µs, {w.amplitude_ma:g} mA; ramps in "
                     f"over {ramp_s:.0f} s ({ramp_ma_per_s:g} mA/s), holds {_minutes(hold_s)}, ramps down over "
                     f"{ramp_s:.0f} s" + (f"; {ceilings[ch]}" if ch in ceilings else ""))
    return lines


def _thresholds(args: argparse.Namespace, program: Any, ch: int) -> list[str]:
    """Today's thresholds on each waveform the channel's dose is relative to."""
    out = []
    placement = program.needles[ch].placement()
    for wave in program.titration_waveforms(ch, relative_only=False):
        try:
            found = args.envelope.thresholds_for(ch, placement, wave)
        except ValueError:
            continue
        marks = ", ".join(f"{kind} {found.values[kind]:g}" if kind in found.values else f"{kind} not marked"
                          for kind in ("sensory", "motor", "tolerance"))
        out.append(f"today's thresholds on {wave}: {marks} mA")
    return out


def _course(spec: Any, seg: Any, ch: int, duration_s: float) -> str:
    """One channel's intensity over the session: the dose, its real peak (what the device will
    be sent at the highest, to 0.01 mA), swing and ramps."""
    mine = seg.amplitude_ma[seg.channel == ch]
    peak = round(float(mine.max()), 2) if len(mine) else 0.0
    dose = spec.intensity
    parts = [f"{dose:g} mA"]
    if spec.step is not None and peak > dose + 0.005:
        parts.append(f"then +{spec.step.step_ma:g} mA every {_minutes(spec.step.every_s)} up to {peak:g} mA")
    parts.append(f"real peak {peak:g} mA")
    if spec.ramp is not None and spec.ramp.in_s >= duration_s:
        parts[-1] += f" (the session ends before its {spec.ramp.in_s:g} s ramp-in does)"
    if spec.modulation is not None:
        m = spec.modulation
        parts.append(f"swings by {m.depth:.0%} (down to {dose * (1 - m.depth):.3g} mA) and back every {m.period_s:g} s")
    if spec.intermittent is not None:
        i = spec.intermittent
        parts.append(f"{i.on_s:g} s on (rising over {i.ramp_up_s:g} s) and {i.off_s:g} s off")
    if spec.ramp is not None:
        parts.append(f"ramps in over {spec.ramp.in_s:g} s and out over {spec.ramp.out_s:g} s")
    return "; ".join(parts)


def _shortened(args: argparse.Namespace, program: Any, preset: Any, profiles: Any, profile: Any) -> str:
    if preset is None:
        return ""
    longest = profiles[profile].max_minutes
    asked = getattr(args, "minutes", None) or (args.seconds / 60 if getattr(args, "seconds", None) else None)
    if asked is None and longest < preset.minutes:
        return (f" (the preset's {preset.minutes:g} min, shortened to {longest:g} for a {profile.value} patient)")
    if asked is not None:
        return f" (as asked; the preset's is {preset.minutes:g} min, at most {longest:g} for a {profile.value} patient)"
    return f" (the preset's length; at most {longest:g} min for a {profile.value} patient)"


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min"
