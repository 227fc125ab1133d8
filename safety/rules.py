"""Static rules over settings, in one vectorised form.

`evaluate_arrays` computes every quantity and every rule over NumPy arrays (a whole
60-minute program at once); `check_setting` runs the same code on length-1 arrays and
turns the violations into `Refusal`s, so the formulas exist exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from .errors import Refusal
from .limits import NEEDLE_RULES, STANDARD, EffectiveLimits
from .settings import ChannelSetting, Shape

REL_TOL = 1e-9  # absorbs binary float noise (e.g. 5 × 0.85); far below the 1 µA grid

@dataclass(frozen=True)
class SettingArrays:
    """Columns of settings, one row per setting."""

    channel: np.ndarray
    shape: np.ndarray
    frequency_hz: np.ndarray
    pulse_width_us: np.ndarray
    amplitude_ma: np.ndarray
    asym_ratio: np.ndarray
    interphase_us: np.ndarray
    burst_pulses: np.ndarray
    burst_rate_hz: np.ndarray

    @classmethod
    def from_settings(cls, settings: Sequence[ChannelSetting]) -> SettingArrays:
        def col(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(s, name) for s in settings], dtype=dtype)

        return cls(col("channel", np.int64), col("shape", np.int64), col("frequency_hz", float),
                   col("pulse_width_us", float), col("amplitude_ma", float), col("asym_ratio", np.int64),
                   col("interphase_us", float), col("burst_pulses", np.int64), col("burst_rate_hz", float))


@dataclass(frozen=True)
class LimitArrays:
    """Effective limits broadcast to the rows of a `SettingArrays`."""

    max_amplitude_ma: np.ndarray
    min_pulse_width_us: np.ndarray
    max_pulse_width_us: np.ndarray
    min_frequency_hz: np.ndarray
    max_frequency_hz: np.ndarray
    max_phase_charge_uc: np.ndarray
    max_interphase_us: np.ndarray
    min_burst_rate_hz: np.ndarray
    area_cm2: np.ndarray

    @classmethod
    def for_rows(cls, limits: Sequence[EffectiveLimits]) -> LimitArrays:
        def col(name: str) -> np.ndarray:
            return np.array([getattr(lim, name) for lim in limits], dtype=float)

        return cls(col("max_amplitude_ma"), col("min_pulse_width_us"), col("max_pulse_width_us"),
                   col("min_frequency_hz"), col("max_frequency_hz"), col("max_phase_charge_uc"),
                   col("max_interphase_us"), col("min_burst_rate_hz"),
                   np.array([lim.needle.area_cm2 for lim in limits], dtype=float))


@dataclass(frozen=True)
class Metrics:
    """Derived physical quantities per row (shared by the rules and the output summary).

    `pulse_rate_hz` is the mean rate (what delivered charge scales with); `densest_rate_hz`
    is the number of pulses in the densest 1 s window, which for bursts slower than 1 Hz
    is far above the mean: every "over 1 s" quantity (r.m.s. current, power density,
    residual current) uses it."""

    pulse_rate_hz: np.ndarray
    densest_rate_hz: np.ndarray
    phase_charge_uc: np.ndarray
    residual_charge_uc: np.ndarray
    residual_current_ua: np.ndarray
    rms_current_ma: np.ndarray
    pulse_energy_mj: np.ndarray
    power_density_w_cm2: np.ndarray
    current_density_ma_cm2: np.ndarray
    shannon_k: np.ndarray
    pulse_span_us: np.ndarray
    period_us: np.ndarray
    burst_span_s: np.ndarray
    burst_period_s: np.ndarray


def densest_second(s: SettingArrays) -> np.ndarray:
    """Pulses in the densest 1 s window: for bursts, the window opens with a burst, so it
    holds every burst that starts within it, the last one possibly cut short. Exact integer
    arithmetic in mHz (1 s = 1000 mHz·s)."""
    bursting = s.burst_pulses >= 2
    f = np.rint(s.frequency_hz * 1000).astype(np.int64)
    fb = np.maximum(np.where(bursting, np.rint(s.burst_rate_hz * 1000).astype(np.int64), 1), 1)
    starts = -(-fb // 1000)                                   # bursts starting in [0, 1 s)
    rest = np.maximum(fb - 1000 * (starts - 1), 0) * f        # pulses of the last one, x fb*1000
    last = np.minimum(s.burst_pulses, -(-rest // (fb * 1000)))
    count = (starts - 1) * s.burst_pulses + last
    return np.where(bursting, np.maximum(count, s.burst_pulses * s.burst_rate_hz), s.frequency_hz)


def compute_metrics(s: SettingArrays, area_cm2: np.ndarray) -> Metrics:
    """All derived quantities; the recovery amplitude is the device's integer µA division."""
    mono = s.shape == int(Shape.MONOPHASIC)
    bursting = s.burst_pulses >= 2
    rate = np.where(bursting, s.burst_pulses * s.burst_rate_hz, s.frequency_hz)
    densest = densest_second(s)
    amp_ua = np.rint(s.amplitude_ma * 1000).astype(np.int64)
    rec_ua = np.where(mono, 0, amp_ua // s.asym_ratio)
    rest_ua = np.where(mono, amp_ua, amp_ua - rec_ua * s.asym_ratio)
    pw_s = s.pulse_width_us * 1e-6
    rec_pw_s = np.where(mono, 0.0, pw_s * s.asym_ratio)
    amp_a, rec_a = s.amplitude_ma / 1000, rec_ua / 1e6
    i2t = amp_a**2 * pw_s + rec_a**2 * rec_pw_s          # A²·s per pulse
    rms_ma = np.sqrt(i2t * densest) * 1000
    q = s.amplitude_ma * s.pulse_width_us / 1000          # µC per phase
    with np.errstate(divide="ignore"):
        k = np.where(q > 0, np.log10(np.maximum(q, 1e-300)) + np.log10(np.maximum(q, 1e-300) / area_cm2),
                     -np.inf)
        period_us = np.where(s.frequency_hz > 0, 1e6 / np.maximum(s.frequency_hz, 1e-300), np.inf)
        burst_period_s = np.where(bursting & (s.burst_rate_hz > 0), 1 / np.maximum(s.burst_rate_hz, 1e-300),
                                  np.inf)
    residual_uc = rest_ua * s.pulse_width_us / 1e6
    return Metrics(
        pulse_rate_hz=rate,
        densest_rate_hz=densest,
        phase_charge_uc=q,
        residual_charge_uc=residual_uc,
        residual_current_ua=residual_uc * densest,
        rms_current_ma=rms_ma,
        pulse_energy_mj=i2t * STANDARD.reference_load_ohm * 1000,
        power_density_w_cm2=(rms_ma / 1000) ** 2 * STANDARD.reference_load_ohm / area_cm2,
        current_density_ma_cm2=s.amplitude_ma / area_cm2,
        shannon_k=k,
        pulse_span_us=np.where(mono, s.pulse_width_us, s.pulse_width_us * (1 + s.asym_ratio) + s.interphase_us),
        period_us=period_us,
        burst_span_s=np.where(bursting, s.burst_pulses * period_us * 1e-6, 0.0),
        burst_period_s=burst_period_s,
    )


@dataclass(frozen=True)
class Rule:
    """One static rule: `value` must stay at or under (`max`), strictly under (`below`) or at
    or over (`min`) `limit`; `forbidden` rules refuse wherever `value` is true."""

    key: str            # quantity id; the rule id is "<layer>.<key>"
    layer: str | None   # fixed layer, or None: the layer that set the effective limit
    label: str
    unit: str
    bound: Literal["max", "below", "min", "forbidden"]
    value: Callable[[SettingArrays, Metrics], np.ndarray]
    limit: Callable[[LimitArrays], np.ndarray | float]
    applies: Callable[[SettingArrays], np.ndarray] | None = None
    source: str = ""
    remedy: str = ""    # what to change, in plain words, when it refuses


RULES: tuple[Rule, ...] = (
    Rule("amplitude_max", None, "amplitude ", " mA", "max", lambda s, m: s.amplitude_ma,
         lambda lim: lim.max_amplitude_ma, source="device report / prescription x sensitivity",
         remedy="lower the intensity: the cap is the device's, or the prescription's (--max-amplitude) times the "
                "sensitivity profile's factor (--sensitivity)"),
    Rule("pulse_width_max", None, "phase width ", " µs", "max", lambda s, m: s.pulse_width_us,
         lambda lim: lim.max_pulse_width_us, source="device report / prescription"),
    Rule("pulse_width_min", None, "phase width ", " µs", "min", lambda s, m: s.pulse_width_us,
         lambda lim: lim.min_pulse_width_us, source="prescription"),
    Rule("frequency_max", None, "frequency ", " Hz", "max", lambda s, m: s.frequency_hz,
         lambda lim: lim.max_frequency_hz, source="IEC 60601-2-10 scope (400 Hz) / device / prescription"),
    Rule("frequency_min", None, "frequency ", " Hz", "min", lambda s, m: s.frequency_hz,
         lambda lim: lim.min_frequency_hz, source="device report / prescription"),
    Rule("burst_rate_min", None, "burst rate ", " Hz", "min", lambda s, m: s.burst_rate_hz,
         lambda lim: lim.min_burst_rate_hz, applies=lambda s: s.burst_pulses >= 2, source="device report"),
    Rule("phase_charge_max", None, "phase charge ", " µC", "max", lambda s, m: m.phase_charge_uc,
         lambda lim: lim.max_phase_charge_uc, source="device report"),
    Rule("interphase_max", None, "interphase gap ", " µs", "max", lambda s, m: s.interphase_us,
         lambda lim: lim.max_interphase_us, source="device report (ICD 4: interphase at most max phase)"),
    Rule("rms_current", "standard", "r.m.s. current into 500 Ω ", " mA", "max", lambda s, m: m.rms_current_ma,
         lambda lim: STANDARD.max_rms_current_ma, source="IEC 60601-2-10 / FDA"),
    Rule("pulse_energy", "standard", "pulse energy into 500 Ω ", " mJ", "max", lambda s, m: m.pulse_energy_mj,
         lambda lim: STANDARD.max_pulse_energy_mj, source="IEC 60601-2-10"),
    Rule("power_density", "standard", "average power density ", " W/cm²", "below",
         lambda s, m: m.power_density_w_cm2, lambda lim: STANDARD.max_power_density_w_cm2,
         source="FDA guidance (0.25 W/cm², 1 s average)"),
    Rule("no_dc", "standard", "MONOPHASIC output (net DC)", "", "forbidden",
         lambda s, m: s.shape == int(Shape.MONOPHASIC), lambda lim: 0.0, source="IEC 60601-2-10: no DC output"),
    Rule("charge_balanced", "needle", "MONOPHASIC (unbalanced) pulses at a needle", "", "forbidden",
         lambda s, m: s.shape == int(Shape.MONOPHASIC), lambda lim: 0.0, source="needle electrode practice"),
    Rule("residual_current", "needle", "residual mean current ", " µA", "max",
         lambda s, m: m.residual_current_ua, lambda lim: NEEDLE_RULES.max_residual_current_ua,
         source="needle electrode practice (10 µA)"),
    Rule("shannon_k", "needle", "charge density k=", "", "max", lambda s, m: m.shannon_k,
         lambda lim: NEEDLE_RULES.shannon_k_max, source="Shannon 1992 (k = 1.85)",
         remedy="the charge per phase is too concentrated on the needle: use a shorter phase, a lower current, "
                "or a larger conducting surface: insert the needle deeper (--inserted MM) or use a thicker one "
                "(--needle DIAMETERxLENGTH)"),
    Rule("pulse_fits_period", "setting", "pulse length ", " µs", "max", lambda s, m: m.pulse_span_us,
         lambda lim: np.inf, source="device (pulse must end before the next one)"),
    Rule("burst_fits_period", "setting", "burst length ", " s", "max", lambda s, m: m.burst_span_s,
         lambda lim: np.inf, applies=lambda s: s.burst_pulses >= 2, source="ICD 4: burst must fit its period"),
)
# The two "fits" rules compare against per-row periods, set in evaluate_arrays.
_ROW_LIMITS = {"pulse_fits_period": "period_us", "burst_fits_period": "burst_period_s"}
SHANNON_WARN_KEY = "shannon_k_warn"


@dataclass(frozen=True)
class ArrayVerdict:
    """Per-rule values, limits and violation masks; `refused` is true where any rule fails."""

    metrics: Metrics
    values: dict[str, np.ndarray]
    limits: dict[str, np.ndarray]
    violations: dict[str, np.ndarray]
    warnings: dict[str, np.ndarray]
    refused: np.ndarray


def evaluate_arrays(s: SettingArrays, lim: LimitArrays) -> ArrayVerdict:
    """Evaluate every static rule on every row at once."""
    m = compute_metrics(s, lim.area_cm2)
    n = s.amplitude_ma.shape[0]
    values, limits, violations = {}, {}, {}
    for rule in RULES:
        v = np.broadcast_to(np.asarray(rule.value(s, m)), (n,))
        row_limit = _ROW_LIMITS.get(rule.key)
        limit = getattr(m, row_limit) if row_limit else rule.limit(lim)
        limit = np.broadcast_to(np.asarray(limit, dtype=float), (n,))
        if rule.bound == "forbidden":
            bad = v.astype(bool)
        elif rule.bound == "max":
            bad = v > limit + np.abs(limit) * REL_TOL
        elif rule.bound == "below":
            bad = v >= limit
        else:
            bad = v < limit - np.abs(limit) * REL_TOL
        if rule.applies is not None:
            bad = bad & rule.applies(s)
        values[rule.key], limits[rule.key], violations[rule.key] = v, limit, bad
    warnings = {SHANNON_WARN_KEY: (m.shannon_k >= NEEDLE_RULES.shannon_k_warn) & ~violations["shannon_k"]}
    refused = np.logical_or.reduce(list(violations.values())) if violations else np.zeros(n, bool)
    return ArrayVerdict(m, values, limits, violations, warnings, refused)


@dataclass(frozen=True)
class Verdict:
    """Outcome of the static rules for one setting."""

    refusals: tuple[Refusal, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.refusals


def _num(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}"


def _amp(x: float) -> str:
    return f"{x:.1f}" if round(x, 1) == x else f"{x:.3f}"


def context(setting: ChannelSetting, limits: EffectiveLimits) -> str:
    """The parenthesised part of a clinician message."""
    return f"{limits.needle.describe()}, {_amp(setting.amplitude_ma)} mA, {setting.pulse_width_us:g} µs"


def check_setting(setting: ChannelSetting, limits: EffectiveLimits) -> Verdict:
    """Scalar form: the array path on one row, violations turned into `Refusal`s."""
    verdict = evaluate_arrays(SettingArrays.from_settings([setting]), LimitArrays.for_rows([limits]))
    where = f"on channel {setting.channel} ({context(setting, limits)})"
    refusals = []
    for rule in RULES:
        if not verdict.violations[rule.key][0]:
            continue
        layer = rule.layer or limits.sources[rule.key]
        value, limit = float(verdict.values[rule.key][0]), float(verdict.limits[rule.key][0])
        if rule.bound == "forbidden":
            head, value, limit = f"{rule.label} is refused", setting.shape.name, "charge-balanced"
        else:
            verb = {"max": "exceeds", "below": "is not below", "min": "is below"}[rule.bound]
            head = f"{rule.label}{_num(value)}{rule.unit} {verb} {_num(limit)}{rule.unit}"
        remedy = f"; {rule.remedy}" if rule.remedy else ""
        refusals.append(Refusal(f"{layer}.{rule.key}", f"{head} {where}{remedy}", value=value, limit=limit,
                                channel=setting.channel, detail=rule.source))
    warnings: tuple[str, ...] = ()
    if verdict.warnings[SHANNON_WARN_KEY][0]:
        warnings = (f"charge density k={_num(float(verdict.metrics.shannon_k[0]))} is at or above the "
                    f"warning level {_num(NEEDLE_RULES.shannon_k_warn)} {where}",)
    return Verdict(tuple(refusals), warnings)
