"""Check a whole resolved program against every interlock rule before anything is sent.

The interlock judges one setting at a time while the session runs; a program that breaks
a rule at minute 40 would then stop at minute 40. `check` runs the interlock's own rules
(`safety.rules.evaluate_arrays`, the same code `check_setting` uses) once over every
segment of every channel, the patient's envelope (the same `ChannelGuard` the interlock
asks, once per distinct waveform), plus placement, screening and session length, so a
clinician sees every problem, with its time and channel, before the session starts.
`check_per_pulse` is the plain loop the vectorised form replaces; only the benchmark and
the agreement test use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import safety
from safety.limits import EffectiveLimits, effective_limits
from safety.rules import RULES, SHANNON_WARN_KEY, LimitArrays, SettingArrays, check_setting, evaluate_arrays

from .patterns import Segments
from .program import Program

UPDATE_PERIOD_S = 0.1
"""Default update period for modifiers that change every period (one telemetry period)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule broken (or warned about) over [t_s, t_end_s) on a channel; times None for
    session-wide findings such as placement."""

    rule: str
    channel: int | None
    t_s: float | None
    t_end_s: float | None
    value: Any
    limit: Any
    message: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    violations: tuple[Finding, ...]
    warnings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def first_times(self) -> dict[tuple[int | None, str], float | None]:
        """(channel, rule) -> earliest violation time: the verdict two checkers must share."""
        out: dict[tuple[int | None, str], float | None] = {}
        for f in self.violations:
            key = (f.channel, f.rule)
            if key not in out or (f.t_s is not None and (out[key] is None or f.t_s < out[key])):  # type: ignore[operator]
                out[key] = f.t_s
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "violations": [_plain(f) for f in self.violations],
                "warnings": [_plain(f) for f in self.warnings]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def table(self) -> str:
        """Plain text for a clinician: one line per rule and channel, violations first, in words,
        with when it happens (a rule broken at every modulation peak is one line with its count
        and time span, said for its worst value; every finding stays in `as_dict` for the record
        and for engineers)."""
        head = ("", "when", "ch", "what")
        rows = [head]
        for kind, items in (("REFUSED", self.violations), ("warning", self.warnings)):
            groups: dict[tuple[str, int | None], list[Finding]] = {}
            for f in items:
                groups.setdefault((f.rule, f.channel), []).append(f)
            for (_, channel), found in groups.items():
                worst = max(found, key=lambda f: _magnitude(f.value))
                rows.append((kind, _span(found), "-" if channel is None else str(channel), worst.message))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        broken = len({(f.rule, f.channel) for f in self.violations})
        verdict = "program passes every rule" if self.ok else (
            f"program refused: {broken} rule(s) broken" + (f", {len(self.violations)} times in all"
                                                          if len(self.violations) > broken else ""))
        return "\n".join([verdict, *lines]) if len(rows) > 1 else verdict


def check(program: Program, device: safety.DeviceLimits, envelope: safety.Envelope | None = None,
          update_period_s: float = UPDATE_PERIOD_S) -> CheckResult:
    """Every violation and warning of the whole program, from NumPy over all segments at once
    (`envelope`: the person's, as `Program.dose` returns it; default: nobody declared)."""
    setup = program.session_setup(device, envelope)
    violations, cautions, limits = _session(program, setup)
    if limits is None:
        return CheckResult(tuple(violations), tuple(cautions))
    seg = _rows_for(program.to_arrays(update_period_s), limits)
    order = np.lexsort((seg.t_s, seg.channel))  # runs are consecutive rows of one channel
    seg = Segments(**{name: getattr(seg, name)[order] for name in Segments.__dataclass_fields__})
    verdict = evaluate_arrays(_setting_arrays(seg), _limit_arrays(seg.channel, limits))
    for rule in RULES:
        layers = {ch: rule.layer or lim.sources[rule.key] for ch, lim in limits.items()}
        worst = np.minimum if rule.bound == "min" else np.maximum
        for ch, t0, t1, value, limit in _runs(seg, verdict.violations[rule.key], verdict.values[rule.key],
                                              verdict.limits[rule.key], worst):
            remedy = f": {rule.remedy}" if rule.remedy else ""
            violations.append(Finding(f"{layers[ch]}.{rule.key}", ch, t0, t1, value, limit,
                                      f"{rule.label}{_text(value)}{rule.unit} ({rule.bound} {_text(limit)}{rule.unit})"
                                      f"{remedy}"))
    k_warn = safety.NEEDLE_RULES.shannon_k_warn
    warnings = [Finding(f"needle.{SHANNON_WARN_KEY}", ch, t0, t1, value, k_warn,
                        f"charge density k={_text(value)} at or above {k_warn:g}")
                for ch, t0, t1, value, _ in _runs(seg, verdict.warnings[SHANNON_WARN_KEY], verdict.metrics.shannon_k,
                                                  np.full(len(seg), k_warn), np.maximum)]
    violations += _rate_limited_increases(seg, limits)
    violations += _outside_envelope(seg, setup)
    return CheckResult(tuple(violations), tuple(cautions + warnings))


def check_per_pulse(program: Program, device: safety.DeviceLimits, envelope: safety.Envelope | None = None,
                    update_period_s: float = UPDATE_PERIOD_S) -> CheckResult:
    """The same static verdict from a plain Python loop that checks every pulse on its own."""
    violations, _, limits = _session(program, program.session_setup(device, envelope))
    if limits is None:
        return CheckResult(tuple(violations), ())
    seg = _rows_for(program.to_arrays(update_period_s), limits)
    for row, t_end in zip(seg.rows(), seg.t_end_s.tolist()):
        setting = row.channel_setting()
        n_pulses = max(1, math.ceil((t_end - row.t_s) * setting.pulse_rate_hz))
        for k in range(n_pulses):
            for refusal in check_setting(setting, limits[row.channel]).refusals:
                t = row.t_s + k / setting.pulse_rate_hz
                violations.append(Finding(refusal.rule, row.channel, t, t, refusal.value, refusal.limit, refusal.message))
    return CheckResult(tuple(violations), ())


# --- Session-wide rules ------------------------------------------------------------------


def _session(program: Program, setup: safety.SessionSetup
             ) -> tuple[list[Finding], list[Finding], dict[int, EffectiveLimits] | None]:
    """Placement, screening, per-channel limits and session length, as the interlock judges
    them at set-up (with the stricter of the program's and the patient's sensitivity).

    Returns the findings, the screening's cautions and each channel's effective limits (None
    when the set-up itself is refused, so there are no limits to judge settings by)."""
    sensitivity = safety.stricter(setup.prescription.sensitivity, setup.envelope.sensitivity)
    refusals, cautions = setup.envelope.setup_verdict(setup.placements, sensitivity)
    findings = [_session_finding(r) for r in refusals]
    caution_findings = [Finding("screening.caution", None, None, None, None, None, c) for c in cautions]
    prescription = setup.prescription.model_copy(update={"sensitivity": sensitivity})
    limits: dict[int, EffectiveLimits] = {}
    for ch in setup.channels:
        try:
            limits[ch] = effective_limits(setup.device, prescription, ch, setup.needle(ch))
        except safety.Refusal as refusal:
            findings.append(_session_finding(refusal))
    if limits:
        session_s = min(lim.session_s for lim in limits.values())
        if program.duration_s > session_s * (1 + safety.rules.REL_TOL):
            findings.append(Finding("session.length", None, session_s, program.duration_s, program.duration_s,
                                    session_s, f"program lasts {program.duration_s:g} s; the session may last "
                                    f"{session_s:g} s (prescription and standard)"))
    return findings, caution_findings, limits


def _session_finding(refusal: safety.Refusal) -> Finding:
    return Finding(refusal.rule, refusal.channel, None, None, refusal.value, refusal.limit, refusal.message)


# --- Arrays ------------------------------------------------------------------------------


def _rows_for(seg: Segments, limits: Mapping[int, EffectiveLimits]) -> Segments:
    """Rows of channels that have limits (a refused channel is reported once, not per row)."""
    keep = np.isin(seg.channel, list(limits))
    return Segments(**{name: getattr(seg, name)[keep] for name in Segments.__dataclass_fields__})


def _setting_arrays(seg: Segments) -> SettingArrays:
    return SettingArrays(**{name: getattr(seg, name) for name in SettingArrays.__dataclass_fields__})


def _limit_arrays(channel: np.ndarray, limits: Mapping[int, EffectiveLimits]) -> LimitArrays:
    """Each channel's limits broadcast to its rows by indexing a per-channel table."""
    channels = np.array(sorted(limits))
    table = LimitArrays.for_rows([limits[ch] for ch in channels.tolist()])
    index = np.searchsorted(channels, channel)
    return LimitArrays(**{name: getattr(table, name)[index] for name in LimitArrays.__dataclass_fields__})


def _runs(seg: Segments, mask: np.ndarray, values: np.ndarray, limits: np.ndarray,
          worst: np.ufunc) -> Iterable[tuple[int, float, float, Any, Any]]:
    """(channel, start, end, worst value, limit) of each run of consecutive flagged rows of a
    channel; rows must be ordered by (channel, time)."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    same_run = np.concatenate(([False], (np.diff(idx) == 1) & (seg.channel[idx[1:]] == seg.channel[idx[:-1]])))
    starts = np.flatnonzero(~same_run)
    ends = np.concatenate((starts[1:], [len(idx)])) - 1
    worst_values = worst.reduceat(values[idx], starts) if values.dtype != bool else values[idx][starts]
    return [(int(seg.channel[idx[s]]), float(seg.t_s[idx[s]]), float(seg.t_end_s[idx[e]]), _scalar(w),
             _scalar(limits[idx[s]]))
            for s, e, w in zip(starts.tolist(), ends.tolist(), worst_values)]


def _rate_limited_increases(seg: Segments, limits: Mapping[int, EffectiveLimits]) -> list[Finding]:
    """Amplitude increases steeper than the interlock allows. The engine would spread them at
    the ramp rate, so the patient would get something other than the program says: a program
    is delivered as written or refused, so these refuse.

    Judged against the time since the channel's previous increase (or its start at 0 mA),
    which is how the interlock's ramp clock runs."""
    ch = seg.channel
    first = np.concatenate(([True], ch[1:] != ch[:-1]))
    before = np.where(first, 0.0, np.concatenate(([0.0], seg.amplitude_ma[:-1])))
    delta = seg.amplitude_ma - before
    rising = np.flatnonzero(delta > 1e-9)
    if len(rising) == 0:
        return []
    t_rise = seg.t_s[rising]
    channel_start = np.maximum.accumulate(np.where(first, np.arange(len(seg)), 0))[rising]
    prev = np.concatenate(([-1], rising[:-1]))
    since = np.where(prev >= channel_start, seg.t_s[np.maximum(prev, 0)], seg.t_s[channel_start])
    table = {c: (lim.ramp_ma_per_s, lim.max_step_ma) for c, lim in limits.items()}
    ramp = np.array([table[c][0] for c in ch[rising].tolist()])
    step = np.array([table[c][1] for c in ch[rising].tolist()])
    allowed = np.full(len(seg), np.inf)
    allowed[rising] = np.minimum(step, ramp * (t_rise - since))
    steep = delta > allowed * (1 + 1e-9) + 1e-9
    return [Finding("dynamic.ramp_rate", c, t0, t1, value, limit,
                    f"rises {value:.3f} mA in one step where {limit:.3f} mA is allowed by the ramp rate: "
                    f"lengthen the ramp or lower the intensity")
            for c, t0, t1, value, limit in _runs(seg, steep, delta, allowed, np.maximum)]


def _outside_envelope(seg: Segments, setup: safety.SessionSetup) -> list[Finding]:
    """Rows the patient's envelope refuses: a waveform with no threshold measured on it, or an
    amplitude above its ceiling. Judged once per distinct waveform of a channel, by the
    interlock's own `ChannelGuard`, then over every row at once."""
    columns = np.stack([seg.channel, seg.shape, seg.frequency_hz, seg.pulse_width_us, seg.burst_pulses,
                        seg.burst_rate_hz], axis=1)
    kinds, which = np.unique(columns, axis=0, return_inverse=True)
    which = which.reshape(-1)  # NumPy 2 keeps the input's shape here
    guards = {ch: safety.envelope.ChannelGuard(setup.envelope, setup.placements[ch]) for ch in setup.channels}
    ceiling = np.full(len(kinds), np.inf)
    refused: dict[int, safety.Refusal] = {}
    for k, row in enumerate(kinds):
        setting = seg.row(int(np.flatnonzero(which == k)[0])).channel_setting()
        try:
            found = guards[int(row[0])].ceiling(setting)
        except safety.Refusal as refusal:
            refused[k] = refusal
            continue
        if found is not None:
            ceiling[k] = found.amplitude_ma
    findings = []
    for k, refusal in refused.items():
        findings += [Finding(refusal.rule, c, t0, t1, refusal.value, refusal.limit, str(refusal))
                     for c, t0, t1, _, _ in _runs(seg, which == k, seg.amplitude_ma,
                                                  np.full(len(seg), np.nan), np.maximum)]
    row_ceiling = ceiling[which]
    over = seg.amplitude_ma > row_ceiling + 1e-9
    findings += [Finding("envelope.ceiling", c, t0, t1, value, limit,
                         f"{value:.4g} mA is above this patient's ceiling of {limit:.4g} mA on this waveform")
                 for c, t0, t1, value, limit in _runs(seg, over, seg.amplitude_ma, row_ceiling, np.maximum)]
    return findings


def _scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _plain(f: Finding) -> dict[str, Any]:
    d = asdict(f)
    for key in ("value", "limit"):
        v = d[key]
        if isinstance(v, float) and not math.isfinite(v):
            d[key] = str(v)
        elif not isinstance(v, (int, float, str, bool, type(None))):
            d[key] = str(v)
    return d


def _span(found: list[Finding]) -> str:
    """When a rule is broken: at set-up ("-"), at one time, or from the first to the last time
    with how often."""
    times = [f.t_s for f in found if f.t_s is not None]
    if not times:
        return "-"
    start, end = min(times), max(f.t_end_s if f.t_end_s is not None else f.t_s for f in found if f.t_s is not None)
    if len(found) == 1:
        return f"{_clock(start)} to {_clock(end)}"
    return f"{len(found)} times, {_clock(start)} to {_clock(end)}"


def _clock(t: float) -> str:
    minutes, seconds = divmod(t, 60)
    return f"{int(minutes):02d}:{seconds:04.1f}"


def _magnitude(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _text(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.4g}"
