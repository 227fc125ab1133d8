"""Thresholds bound to what they were measured on, and the rules for using them.

A threshold (first felt, visible twitch, most tolerated) belongs to one patient, one
channel, its two needle sites, one waveform (shape, frequency, phase width, bursts) and one
time. It is used only where all of these match, and only within 12 hours after it was
measured (never when it is dated in the future: rooms sharing a store may disagree on the
time). The one conversion allowed is between phase widths of the same waveform otherwise,
by the Weiss strength–duration model I(w) = I_rheobase · (1 + c / w) with chronaxie
c = 300 µs (`convert_width`, the one place it is computed); with that model 0.75 × a tolerance
measured at 200 µs is 1.25 × the tolerance at 600 µs (Geddes LA. Accuracy limitations of
chronaxie values. IEEE Trans Biomed Eng. 2004;51(1):176-181). Every conversion is reported.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .placement import ChannelPlacement, NeedleSite, Region, Side
from .settings import ChannelSetting, Shape

KINDS = ("sensory", "motor", "tolerance")
CHRONAXIE_US = 300.0
MAX_CONVERSION_RATIO = 4.0       # convert between phase widths at most 4x apart
MAX_AGE = timedelta(hours=12)    # thresholds from an earlier day guide titration, never a dose


class ThresholdError(ValueError):
    """Thresholds that cannot be used for this dose; the message says what to do instead."""


@dataclass(frozen=True, slots=True)
class TitrationWaveform:
    """The waveform a titration ran on: what its thresholds belong to."""

    shape: Shape
    frequency_hz: float
    pulse_width_us: float
    burst_pulses: int = 0
    burst_rate_hz: float = 0.0

    @classmethod
    def of(cls, setting: ChannelSetting) -> TitrationWaveform:
        """The waveform a setting delivers, as thresholds are bound to it (amplitude aside)."""
        bursting = setting.bursting
        return cls(setting.shape, setting.frequency_hz, setting.pulse_width_us,
                   setting.burst_pulses if bursting else 0, setting.burst_rate_hz if bursting else 0.0)

    def same_except_width(self, other: TitrationWaveform) -> bool:
        return (self.shape, self.frequency_hz, self.burst_pulses, self.burst_rate_hz) == \
            (other.shape, other.frequency_hz, other.burst_pulses, other.burst_rate_hz)

    def __str__(self) -> str:
        burst = f", bursts of {self.burst_pulses} at {self.burst_rate_hz:g}/s" if self.burst_pulses > 1 else ""
        return f"{self.frequency_hz:g} Hz, {self.pulse_width_us:g} µs{burst}"

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape.name.lower(), "frequency_hz": self.frequency_hz,
                "pulse_width_us": self.pulse_width_us, "burst_pulses": self.burst_pulses,
                "burst_rate_hz": self.burst_rate_hz}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TitrationWaveform:
        return cls(Shape[str(d["shape"]).upper()], float(d["frequency_hz"]), float(d["pulse_width_us"]),
                   int(d.get("burst_pulses", 0)), float(d.get("burst_rate_hz", 0.0)))


def site_key(site: NeedleSite) -> str:
    """`side:region[:point]`, the form sites take on the command line and in the store."""
    return f"{site.side.value}:{site.region.value}" + (f":{site.point}" if site.point else "")


def site_from_key(text: str) -> NeedleSite:
    side, region, *point = text.split(":", 2)
    return NeedleSite(Region(region), Side(side), point[0] if point else None)


def same_sites(a: ChannelPlacement, b: ChannelPlacement) -> bool:
    """The same two needle sites, in either order (points compared only where both name one)."""
    def key(s: NeedleSite) -> tuple[str, str]:
        return (s.region.value, s.side.value)
    if sorted((key(a.a), key(a.b))) != sorted((key(b.a), key(b.b))):
        return False
    points_a = {p for p in (a.a.point, a.b.point) if p}
    points_b = {p for p in (b.a.point, b.b.point) if p}
    return not (points_a and points_b) or points_a == points_b


@dataclass(frozen=True, slots=True)
class ChannelThresholds:
    """One titration's result on one channel, with everything it is bound to."""

    channel: int
    placement: ChannelPlacement
    waveform: TitrationWaveform
    measured_at: datetime
    sensory_ma: float | None
    motor_ma: float | None
    tolerance_ma: float | None
    patient: str | None = None
    repeats: int = 1

    def __post_init__(self) -> None:
        marks = [(k, v) for k, v in zip(KINDS, (self.sensory_ma, self.motor_ma, self.tolerance_ma)) if v is not None]
        for kind, value in marks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ThresholdError(f"the {kind} threshold on channel {self.channel} is {value!r} mA; a threshold "
                                     "must be above 0 mA: titrate again")
        for (k1, v1), (k2, v2) in zip(marks, marks[1:]):
            if v1 > v2:
                raise ThresholdError(f"on channel {self.channel} the {k1} threshold ({v1:g} mA) is above the {k2} "
                                     f"threshold ({v2:g} mA); they must rise in the order first felt, twitch, "
                                     "tolerance: titrate again")
        if self.measured_at.tzinfo is None:
            object.__setattr__(self, "measured_at", self.measured_at.replace(tzinfo=timezone.utc))

    def value(self, kind: str) -> float | None:
        return {"sensory": self.sensory_ma, "motor": self.motor_ma, "tolerance": self.tolerance_ma}[kind]

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "patient": self.patient,
                "sites": [site_key(self.placement.a), site_key(self.placement.b)],
                "waveform": self.waveform.as_dict(), "measured_at": self.measured_at.isoformat(),
                "sensory": self.sensory_ma, "motor": self.motor_ma, "tolerance": self.tolerance_ma,
                "repeats": self.repeats}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChannelThresholds:
        a, b = d["sites"]
        return cls(int(d["channel"]), ChannelPlacement(site_from_key(a), site_from_key(b)),
                   TitrationWaveform.from_dict(d["waveform"]), datetime.fromisoformat(d["measured_at"]),
                   d.get("sensory"), d.get("motor"), d.get("tolerance"), d.get("patient"), int(d.get("repeats", 1)))

    def describe(self) -> str:
        marks = ", ".join(f"{k} {'-' if v is None else f'{v:g} mA'}" for k, v in
                          zip(KINDS, (self.sensory_ma, self.motor_ma, self.tolerance_ma)))
        return (f"channel {self.channel} ({self.placement.a} / {self.placement.b}, {self.waveform}): {marks}, "
                f"measured {self.measured_at.astimezone():%Y-%m-%d %H:%M}")


def convert_width(value_ma: float, from_us: float, to_us: float, chronaxie_us: float = CHRONAXIE_US) -> float:
    """The Weiss strength–duration model: the same effect at another phase width."""
    return value_ma * (1 + chronaxie_us / to_us) / (1 + chronaxie_us / from_us)


def strength(amplitude_ma: float, width_us: float, chronaxie_us: float = CHRONAXIE_US) -> float:
    """How strongly a pulse acts, by the same model: its amplitude as a multiple of the threshold
    at its width, for a rheobase of 1 mA (A / (1 + c / w)). Equal strengths act alike whatever
    the width: 10 mA at 50 µs is 1.43, at 200 µs 4.0."""
    return amplitude_ma / (1 + chronaxie_us / width_us) if width_us > 0 else 0.0


@dataclass(frozen=True, slots=True)
class DoseThresholds:
    """Thresholds ready for one channel's dose, with notes on how they were obtained."""

    values: Mapping[str, float]
    notes: tuple[str, ...] = field(default=())


def for_dose(candidates: Iterable[ChannelThresholds], channel: int, placement: ChannelPlacement,
             waveform: TitrationWaveform, *, patient: str | None = None, now: datetime | None = None,
             retitrate: str = "titrate on this channel") -> DoseThresholds:
    """The newest usable thresholds for this channel, sites and waveform, or ThresholdError
    saying why none can be used and what to run instead (`retitrate`)."""
    now = now or datetime.now(timezone.utc)
    mine = sorted((t for t in candidates if t.channel == channel), key=lambda t: t.measured_at, reverse=True)
    if not mine:
        raise ThresholdError(f"no thresholds for channel {channel}: {retitrate}")
    reasons = []
    for t in mine:
        if patient is not None and t.patient not in (None, patient):
            reasons.append(f"they belong to patient {t.patient}")
            continue
        if not same_sites(t.placement, placement):
            reasons.append(f"they were measured at {t.placement.a} / {t.placement.b}, "
                           f"not at {placement.a} / {placement.b}")
            continue
        stale = usability(t, now)
        if stale:
            reasons.append(stale)
            continue
        values = {k: v for k in KINDS if (v := t.value(k)) is not None}
        if t.waveform == waveform:
            return DoseThresholds(values)
        ratio = max(t.waveform.pulse_width_us, waveform.pulse_width_us) / min(t.waveform.pulse_width_us,
                                                                             waveform.pulse_width_us)
        if t.waveform.same_except_width(waveform) and ratio <= MAX_CONVERSION_RATIO:
            converted = {k: round(convert_width(v, t.waveform.pulse_width_us, waveform.pulse_width_us), 3)
                         for k, v in values.items()}
            return DoseThresholds(converted, (
                f"channel {channel}: thresholds measured at {t.waveform.pulse_width_us:g} µs converted to "
                f"{waveform.pulse_width_us:g} µs by the strength-duration model (Weiss, chronaxie "
                f"{CHRONAXIE_US:g} µs): " + ", ".join(f"{k} {values[k]:g} -> {converted[k]:g} mA" for k in converted),))
        reasons.append(f"they were measured on {t.waveform}, and this dose uses {waveform}")
    raise ThresholdError(f"the thresholds for channel {channel} cannot be used: {reasons[0]}; {retitrate}")


def usability(t: ChannelThresholds, now: datetime) -> str | None:
    """Why `t` cannot be used at `now` (None: it can): more than 12 hours old, or dated after
    `now` (another computer's clock ahead of this one's: nothing says when it really was)."""
    if t.measured_at > now:
        return (f"they are dated {t.measured_at.astimezone():%Y-%m-%d %H:%M:%S}, later than this computer's "
                f"time ({now.astimezone():%H:%M:%S}): check the clocks of the computers sharing the visit store")
    if now - t.measured_at > MAX_AGE:
        return (f"they were measured {t.measured_at.astimezone():%Y-%m-%d %H:%M}, more than "
                f"{MAX_AGE.total_seconds() / 3600:g} hours ago")
    return None


# --- Files: written whole or not at all -------------------------------------------------------


def save(path: Path, thresholds: Iterable[ChannelThresholds]) -> None:
    """Write atomically, so an interrupted titration never leaves a half-written or emptied file."""
    write_whole(path, json.dumps({"thresholds": [t.as_dict() for t in thresholds]}, indent=2) + "\n")


def write_whole(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all: a temporary file beside it, flushed to disk, then
    renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> list[ChannelThresholds]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ThresholdError(f"{path}: not a thresholds file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), list):
        raise ThresholdError(f"{path}: these thresholds are not bound to a channel, needle sites and waveform; "
                             "titrate again with `estim titrate ... --out FILE`")
    try:
        entries = [ChannelThresholds.from_dict(d) for d in data["thresholds"]]
    except ThresholdError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ThresholdError(f"{path}: an entry is incomplete or invalid ({exc}); titrate again") from None
    nameless = [t.channel for t in entries if not t.patient]
    if nameless:
        raise ThresholdError(f"{path}: the thresholds of channel {nameless[0]} name no patient, so nothing says "
                             "whose they are: titrate again naming the person (--patient CODE, or --subject CODE "
                             "outside the visit store)")
    return entries
