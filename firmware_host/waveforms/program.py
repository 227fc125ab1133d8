"""Dosing programs: a validated, file-backed description of a whole session.

A program is data a clinician can read and diff (TOML or JSON). It names its target
mechanism, the needles on each channel, the prescription limits, and a sequence of
segments, each giving every channel a pattern. Intensity may be relative to a threshold
measured on the day, so a program only yields settings once `resolve(thresholds)` has
turned every relative intensity into mA. Every schema problem becomes a `ProgramError`
naming the file, the line, the field path and the offending value.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from abc import abstractmethod
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tomli_w
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainSerializer, Tag,
                      ValidationError, model_validator)

import safety
from safety.limits import Sensitivity
from safety.placement import Region, Side
from safety.settings import Shape

from .thresholds import SENSORY_CEILING, TOLERANCE_CEILING, TitrationWaveform
from .patterns import (
    AmplitudeModulation, Continuous, DenseDisperse, FrequencySweep, Intermittent, Pattern,
    Ramp, Segments, Setting, Stepwise, TimedSetting, Waveform, merge,
)

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Channel = Annotated[int, Field(ge=1, le=255)]
AsymRatio = Annotated[int, Field(ge=1, le=255)]  # u8 on the wire


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a program, located as precisely as the source allows."""

    source: str
    line: int | None
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        value = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{where}: {self.field} = {value}: {self.message}"


_MISSING = object()


class ProgramError(ValueError):
    """A program that cannot be loaded, resolved or run; `problems` lists each cause."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _FieldError(ValueError):
    """Raised inside validators to report a problem at a field path relative to the model."""

    def __init__(self, loc: tuple[str | int, ...], value: Any, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdKind(StrEnum):
    """Thresholds measured per channel on the day: first felt, visible twitch, most tolerated."""

    SENSORY = "sensory"
    MOTOR = "motor"
    TOLERANCE = "tolerance"


class Mechanism(StrEnum):
    PERIPHERAL_ANALGESIA = "peripheral_analgesia"
    SEGMENTAL_INHIBITION = "segmental_inhibition"
    DESCENDING_MODULATION = "descending_modulation"
    NEUROMUSCULAR_REEDUCATION = "neuromuscular_reeducation"
    TISSUE_PERFUSION = "tissue_perfusion"


class Relative(_Model):
    """An intensity of `multiple` × a threshold measured on the channel."""

    multiple: Positive
    of: ThresholdKind


def _intensity_kind(value: Any) -> str:
    return "relative" if isinstance(value, (dict, Relative)) else "amount"


Intensity = Annotated[Annotated[NonNegative, Tag("amount")] | Annotated[Relative, Tag("relative")],
                      Discriminator(_intensity_kind)]
"""Absolute mA, or relative to a measured threshold (a table): one kind is judged, so a bad
value gets one error, not one per kind it is not."""


class Site(_Model):
    """A needle site: the body region the placement rules judge, plus the point's name."""

    region: Region
    side: Side
    point: Annotated[str, Field(min_length=1)] | None = None

    def needle_site(self) -> safety.NeedleSite:
        return safety.NeedleSite(self.region, self.side, self.point)


class Needle(_Model):
    """A channel's needles: size, how deep they are in (the conducting part the charge-density
    rule judges, which is not the nominal length), and the two sites."""

    diameter_mm: Positive
    length_mm: Positive
    inserted_mm: Positive
    site_a: Site
    site_b: Site

    @model_validator(mode="after")
    def _inserted_fits(self) -> Needle:
        if self.inserted_mm > self.length_mm:
            raise _FieldError(("inserted_mm",), self.inserted_mm,
                              f"deeper than the needle is long ({self.length_mm:g} mm)")
        return self

    def placement(self) -> safety.ChannelPlacement:
        return safety.ChannelPlacement(self.site_a.needle_site(), self.site_b.needle_site())


Range = tuple[Positive, Positive]


class Prescription(_Model):
    """Limits for this patient; frequency and width ranges left out prescribe exactly the
    span the program itself uses."""

    max_amplitude_ma: dict[Channel, Positive]
    max_minutes: Positive
    ramp_rate_ma_per_s: Positive
    sensitivity: Sensitivity
    frequency_hz: Range | None = None
    pulse_width_us: Range | None = None


def _shape_from_file(value: Any) -> Any:
    """Files spell shapes in lower case ("biphasic"); the model holds `safety.settings.Shape`."""
    if isinstance(value, str) and not isinstance(value, Shape):
        try:
            return Shape[value.upper()]
        except KeyError:
            raise ValueError(f"unknown shape; expected one of {', '.join(s.name.lower() for s in Shape)}") from None
    return value


ShapeName = Annotated[Shape, BeforeValidator(_shape_from_file), PlainSerializer(lambda s: s.name.lower(), return_type=str)]


class PhaseSpec(_Model):
    """One side of a dense-disperse alternation."""

    frequency_hz: Positive
    pulse_width_us: Positive


class IntermittentSpec(_Model):
    """On for on_s, off for off_s; each on-phase ramps up over ramp_up_s to the full intensity
    and down over ramp_down_s, as stimulators do for contractions."""

    on_s: Positive
    off_s: Positive
    ramp_up_s: NonNegative = 0.0
    ramp_down_s: NonNegative = 0.0

    @model_validator(mode="after")
    def _ramps_fit(self) -> IntermittentSpec:
        if self.ramp_up_s + self.ramp_down_s > self.on_s:
            raise _FieldError(("ramp_up_s",), self.ramp_up_s,
                              f"the ramps ({self.ramp_up_s:g} s up, {self.ramp_down_s:g} s down) are longer than "
                              f"the on-phase ({self.on_s:g} s)")
        return self


class ModulationSpec(_Model):
    period_s: Positive
    depth: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    waveform: Waveform = Waveform.SINE


class SweepSpec(_Model):
    low_hz: Positive
    high_hz: Positive
    period_s: Positive

    @model_validator(mode="after")
    def _ordered(self) -> SweepSpec:
        if self.high_hz <= self.low_hz:
            raise _FieldError(("high_hz",), self.high_hz, f"must be above low_hz ({self.low_hz})")
        return self


class StepSpec(_Model):
    step_ma: Positive
    every_s: Positive
    cap: Intensity


class RampSpec(_Model):
    in_s: NonNegative
    out_s: NonNegative


def _absolute(intensity: Intensity) -> float:
    if isinstance(intensity, Relative):
        raise ValueError(f"intensity {intensity.multiple} x {intensity.of} threshold: resolve the program first")
    return intensity


class _ChannelSpec(_Model):
    """Fields every pattern shares: intensity, pulse shape and optional modifiers."""

    pattern: str  # narrowed to a Literal tag by each pattern; declared here so files list it first
    intensity: Intensity
    shape: ShapeName = Shape.BIPHASIC
    asym_ratio: AsymRatio = 1
    interphase_us: NonNegative = 0.0
    step: StepSpec | None = None
    sweep: SweepSpec | None = None
    modulation: ModulationSpec | None = None
    intermittent: IntermittentSpec | None = None
    ramp: RampSpec | None = None

    def intensities(self) -> Iterator[tuple[tuple[str, ...], Intensity]]:
        """Every intensity in the spec with its field path (for resolving and limits)."""
        yield ("intensity",), self.intensity
        if self.step is not None:
            yield ("step", "cap"), self.step.cap

    def _setting(self, frequency_hz: float, pulse_width_us: float, **burst: Any) -> Setting:
        amplitude = _absolute(self.intensity)
        return Setting(self.shape, frequency_hz, pulse_width_us, amplitude, self.asym_ratio, self.interphase_us, **burst)

    @abstractmethod
    def _carrier(self) -> Pattern: ...

    @abstractmethod
    def _phases(self) -> list[tuple[float, float]]:
        """(frequency Hz, pulse width µs) of each carrier phase."""

    def titration_waveform(self) -> TitrationWaveform:
        """The waveform to titrate on for this spec's dose: its phase with the longest pulse width
        (the one felt first at a given current, so thresholds from it keep every phase below them)."""
        frequency, width = max(self._phases(), key=lambda fw: fw[1])
        burst = getattr(self, "burst_pulses", 0)
        return TitrationWaveform(self.shape, frequency, width, burst, getattr(self, "burst_rate_hz", 0.0) if burst else 0.0)

    def frequencies(self) -> list[float]:
        """Every pulse frequency this spec can set (sweeps stay between their ends)."""
        sweep = [self.sweep.low_hz, self.sweep.high_hz] if self.sweep is not None else []
        return [f for f, _ in self._phases()] + sweep

    def pulse_widths(self) -> list[float]:
        return [w for _, w in self._phases()]

    def build(self, duration_s: float) -> Pattern:
        """The runtime pattern; modifiers apply in a fixed order so steps never fill rests."""
        p = self._carrier()
        if self.step is not None:
            p = Stepwise(p, self.step.step_ma, self.step.every_s, _absolute(self.step.cap))
        if self.sweep is not None:
            p = FrequencySweep(p, self.sweep.low_hz, self.sweep.high_hz, self.sweep.period_s)
        if self.modulation is not None:
            p = AmplitudeModulation(p, self.modulation.period_s, self.modulation.depth, self.modulation.waveform)
        if self.intermittent is not None:
            i = self.intermittent
            p = Intermittent(p, i.on_s, i.off_s, i.ramp_up_s, i.ramp_down_s)
        if self.ramp is not None:
            p = Ramp(p, self.ramp.in_s, self.ramp.out_s, duration_s)
        return p


class ContinuousSpec(_ChannelSpec):
    pattern: Literal["continuous"] = "continuous"
    frequency_hz: Positive
    pulse_width_us: Positive

    def _carrier(self) -> Pattern:
        return Continuous(self._setting(self.frequency_hz, self.pulse_width_us))

    def _phases(self) -> list[tuple[float, float]]:
        return [(self.frequency_hz, self.pulse_width_us)]


class BurstSpec(_ChannelSpec):
    """Bursts of burst_pulses at frequency_hz, repeated at burst_rate_hz (e.g. 7 @ 100 Hz, 2/s)."""

    pattern: Literal["burst"] = "burst"
    frequency_hz: Positive
    pulse_width_us: Positive
    burst_pulses: Annotated[int, Field(ge=2, le=255)]
    burst_rate_hz: Positive

    def _carrier(self) -> Pattern:
        return Continuous(
            self._setting(self.frequency_hz, self.pulse_width_us, burst_pulses=self.burst_pulses, burst_rate_hz=self.burst_rate_hz)
        )

    def _phases(self) -> list[tuple[float, float]]:
        return [(self.frequency_hz, self.pulse_width_us)]


class DenseDisperseSpec(_ChannelSpec):
    """Alternation starting with the disperse (low-rate) phase, as in '2/100 Hz'."""

    pattern: Literal["dense_disperse"] = "dense_disperse"
    disperse: PhaseSpec
    dense: PhaseSpec
    disperse_s: Positive = 3.0
    dense_s: Positive = 3.0

    def _carrier(self) -> Pattern:
        return DenseDisperse(
            self._setting(self.disperse.frequency_hz, self.disperse.pulse_width_us),
            self._setting(self.dense.frequency_hz, self.dense.pulse_width_us),
            self.disperse_s,
            self.dense_s,
        )

    def _phases(self) -> list[tuple[float, float]]:
        return [(self.disperse.frequency_hz, self.disperse.pulse_width_us), (self.dense.frequency_hz, self.dense.pulse_width_us)]


ChannelSpec = Annotated[ContinuousSpec | BurstSpec | DenseDisperseSpec, Field(discriminator="pattern")]
PATTERN_KINDS = ("continuous", "burst", "dense_disperse")


class Segment(_Model):
    duration_s: Positive
    channels: Annotated[dict[Channel, ChannelSpec], Field(min_length=1)]


class Program(_Model):
    """A dosing program. Build with `load`, `from_data` or a preset; never mutate."""

    name: Annotated[str, Field(min_length=1)]
    mechanism: Mechanism
    prescription: Prescription
    needles: Annotated[dict[Channel, Needle], Field(min_length=1)]
    segments: Annotated[list[Segment], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        channels = set(self.needles)
        if set(self.prescription.max_amplitude_ma) != channels:
            raise _FieldError(
                ("prescription", "max_amplitude_ma"), sorted(self.prescription.max_amplitude_ma),
                f"must give a cap for exactly the needled channels {sorted(channels)}",
            )
        for i, seg in enumerate(self.segments):
            if set(seg.channels) != channels:
                raise _FieldError(
                    ("segments", i, "channels"), sorted(seg.channels),
                    f"every segment must set exactly the needled channels {sorted(channels)}",
                )
            for ch, spec in seg.channels.items():
                cap = self.prescription.max_amplitude_ma[ch]
                for path, value in spec.intensities():
                    if isinstance(value, float) and value > cap:
                        raise _FieldError(
                            ("segments", i, "channels", str(ch), *path), value,
                            f"exceeds prescription.max_amplitude_ma for channel {ch} ({cap} mA)",
                        )
        if self.duration_s > self.prescription.max_minutes * 60.0:
            raise _FieldError(
                ("segments",), [seg.duration_s for seg in self.segments],
                f"durations total {self.duration_s:g} s, more than prescription.max_minutes "
                f"({self.prescription.max_minutes:g} min)",
            )
        return self

    @property
    def duration_s(self) -> float:
        return float(sum(seg.duration_s for seg in self.segments))

    @property
    def needed_thresholds(self) -> set[tuple[int, ThresholdKind]]:
        """(channel, kind) pairs that must be measured before the program can run."""
        return {
            (ch, value.of)
            for seg in self.segments
            for ch, spec in seg.channels.items()
            for _, value in spec.intensities()
            if isinstance(value, Relative)
        }

    def titration_waveform(self, channel: int) -> TitrationWaveform:
        """The one waveform this channel's thresholds must be measured on (ProgramError when its
        threshold-relative doses use waveforms that no single titration covers)."""
        waves = {spec.titration_waveform() for seg in self.segments for ch, spec in seg.channels.items()
                 if ch == channel and any(isinstance(v, Relative) for _, v in spec.intensities())}
        if len(waves) != 1:
            raise ProgramError([Problem(f"program {self.name!r}", None, f"channel {channel}", sorted(map(str, waves)),
                                        "threshold-relative doses on one channel must use one waveform "
                                        "(titrate once per waveform: split the program)")])
        return waves.pop()

    def resolve(self, thresholds: Mapping[int, Mapping[str, float]]) -> Program:
        """`resolve_noted` without the notes."""
        return self.resolve_noted(thresholds)[0]

    def resolve_noted(self, thresholds: Mapping[int, Mapping[str, float]]) -> tuple[Program, tuple[str, ...]]:
        """The same program with every relative intensity turned into mA (whole µA), and a
        note for every intensity held down by a physiological ceiling.

        `thresholds[channel][kind]` is the measured threshold in mA. Ceilings: a dose relative
        to the sensory threshold stays at or below 0.9 x motor (a sensory-level dose must not
        twitch); every dose stays at or below 0.9 x tolerance. A dose with neither ceiling
        measured is refused. Raises ProgramError naming each missing or invalid threshold; the
        result is validated again, so an intensity above its prescription cap is refused too.
        """
        source = f"program {self.name!r}"
        problems = []
        for ch, kinds in thresholds.items():
            for kind, value in kinds.items():
                if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                    problems.append(Problem(source, None, f"thresholds[{ch}].{kind}", value,
                                            "must be a measured current above 0 mA"))
            ordered = [(k, kinds[k]) for k in ThresholdKind if isinstance(kinds.get(k), (int, float))]
            for (k1, v1), (k2, v2) in zip(ordered, ordered[1:]):
                if v1 > v2:
                    problems.append(Problem(source, None, f"thresholds[{ch}].{k1}", v1,
                                            f"is above the {k2} threshold ({v2:g} mA): they rise first felt, "
                                            "twitch, tolerance; titrate again"))
        data = self.model_dump()
        notes: list[str] = []
        for i, seg in enumerate(self.segments):
            for ch, spec in seg.channels.items():
                for path, value in spec.intensities():
                    if not isinstance(value, Relative):
                        continue
                    measured = thresholds.get(ch, {}).get(value.of)
                    field = _format_loc(("segments", i, "channels", str(ch), *path))
                    if measured is None:
                        problems.append(Problem(
                            source, None, field, value.model_dump(mode="json"),
                            f"needs the {value.of} threshold of channel {ch}, which was not given",
                        ))
                        continue
                    ceiling = _ceiling(thresholds.get(ch, {}), value.of)
                    if ceiling is None:
                        problems.append(Problem(
                            source, None, field, value.model_dump(mode="json"),
                            f"needs the {'motor threshold or ' if value.of is ThresholdKind.SENSORY else ''}"
                            f"tolerance of channel {ch} to keep the dose below it: titrate to tolerance",
                        ))
                        continue
                    wanted = round(value.multiple * float(measured), 3)
                    dose = min(wanted, ceiling[0])
                    if dose < wanted:
                        notes.append(f"channel {ch}: {value.multiple:g} x {value.of} = {wanted:g} mA held at "
                                     f"{dose:g} mA ({ceiling[1]})")
                    target = data["segments"][i]["channels"][ch]
                    for key in path[:-1]:
                        target = target[key]
                    target[path[-1]] = dose
        if problems:
            raise ProgramError(problems)
        return Program.from_data(data, source=f"{source} resolved"), tuple(dict.fromkeys(notes))

    def _require_resolved(self) -> None:
        missing = self.needed_thresholds
        if missing:
            needs = ", ".join(f"{kind} on channel {ch}" for ch, kind in sorted(missing))
            raise ProgramError([Problem(
                f"program {self.name!r}", None, "intensity", "relative",
                f"call resolve(thresholds) first; needs {needs}",
            )])

    def patterns(self) -> list[tuple[float, Segment, dict[int, Pattern]]]:
        """(start time, segment, channel -> pattern) for each segment; needs a resolved program."""
        self._require_resolved()
        out = []
        start = 0.0
        for seg in self.segments:
            out.append((start, seg, {ch: spec.build(seg.duration_s) for ch, spec in seg.channels.items()}))
            start += seg.duration_s
        return out

    def settings(self, update_period_s: float) -> Iterator[TimedSetting]:
        """Lazily every setting of the session, ordered by (time, channel)."""
        return chain.from_iterable(
            merge(*(p.settings(ch, seg.duration_s, update_period_s, start) for ch, p in pats.items()))
            for start, seg, pats in self.patterns()
        )

    def to_arrays(self, update_period_s: float) -> Segments:
        """Every segment of the session as arrays, ordered by (time, channel)."""
        parts = []
        for start, seg, pats in self.patterns():
            for ch, p in pats.items():
                part = p.to_arrays(seg.duration_s, update_period_s, ch)
                parts.append(_shifted(part, start))
        return Segments.concatenate(parts)

    def session_setup(self, device: safety.DeviceLimits, patient: safety.Patient | None = None) -> safety.SessionSetup:
        """The interlock's view of this program: its prescription, needles and placements.

        The session limit passed on is capped at the standard's; `check` compares the
        program's own length against the effective limit, so a longer program is reported.
        """
        rx = self.prescription
        specs = [spec for seg in self.segments for spec in seg.channels.values()]
        freqs = [f for spec in specs for f in spec.frequencies()]
        widths = [w for spec in specs for w in spec.pulse_widths()]
        prescription = safety.Prescription(
            max_amplitude_ma=dict(rx.max_amplitude_ma),
            max_session_minutes=min(rx.max_minutes, safety.STANDARD.max_session_minutes),
            ramp_ma_per_s=rx.ramp_rate_ma_per_s,
            frequency_hz=rx.frequency_hz or (min(freqs), max(freqs)),
            pulse_width_us=rx.pulse_width_us or (min(widths), max(widths)),
            sensitivity=rx.sensitivity,
        )
        return safety.SessionSetup(
            device=device,
            prescription=prescription,
            placements={ch: n.placement() for ch, n in self.needles.items()},
            needles={ch: safety.Needle(n.diameter_mm, n.inserted_mm) for ch, n in self.needles.items()},
            patient=patient or safety.Patient(),
        )

    # --- Files -------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: Any, source: str = "<data>", text: str | None = None) -> Program:
        """Validate plain data; `text` (TOML source) lets errors name the line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ProgramError(_problems(exc, source, text)) from None

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a .toml or .json program file."""
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProgramError([Problem(source, None, "(file)", source, f"cannot read: {exc.strerror}")]) from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text, parse_constant=_json_constant)
            except (json.JSONDecodeError, ValueError) as exc:
                line = getattr(exc, "lineno", None)
                raise ProgramError([Problem(source, line, "(file)", _line_text(text, line), f"invalid JSON: {exc}")]) from None
            return cls.from_data(data, source, text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            line = int(match.group(1)) if match else None
            raise ProgramError([Problem(source, line, "(file)", _line_text(text, line), f"invalid TOML: {exc}")]) from None
        return cls.from_data(data, source, text)

    def save(self, path: str | Path) -> None:
        """Write as TOML or JSON by suffix; `load` gives back an equal program."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            path.write_text(tomli_w.dumps(_str_keys(data)), encoding="utf-8")


def _ceiling(measured: Mapping[str, float], of: ThresholdKind) -> tuple[float, str] | None:
    """The highest dose the thresholds allow, and why; None when the needed one is missing."""
    candidates = []
    if of is ThresholdKind.SENSORY and measured.get("motor"):
        candidates.append((_floor_ua(SENSORY_CEILING * measured["motor"]),
                           f"{SENSORY_CEILING:g} x motor threshold: a sensory-level dose stays below a twitch"))
    if measured.get("tolerance"):
        candidates.append((_floor_ua(TOLERANCE_CEILING * measured["tolerance"]),
                           f"{TOLERANCE_CEILING:g} x tolerance: every dose stays below it"))
    return min(candidates) if candidates else None


def _floor_ua(ma: float) -> float:
    """Down to whole µA, so a ceiling is never exceeded by rounding."""
    return float(np.floor(ma * 1000 + 1e-9) / 1000)


def _shifted(seg: Segments, offset_s: float) -> Segments:
    return replace(seg, t_s=seg.t_s + offset_s, t_end_s=seg.t_end_s + offset_s)


def _json_constant(name: str) -> float:
    """JSON has no NaN/Infinity; Python's parser accepts them, so keep them for validation to refuse."""
    return float(name.replace("Infinity", "inf"))


def _str_keys(data: Any) -> Any:
    """TOML tables need string keys (channel numbers are ints in the model)."""
    if isinstance(data, dict):
        return {str(k): _str_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_str_keys(v) for v in data]
    return data


def _line_text(text: str, line: int | None) -> str | None:
    lines = text.splitlines()
    return lines[line - 1].strip() if line and 0 < line <= len(lines) else None


# --- Error location ------------------------------------------------------------------


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(program)"


def _problems(exc: ValidationError, source: str, text: str | None) -> list[Problem]:
    lines = _toml_key_lines(text) if text is not None and not source.lower().endswith(".json") else {}
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in PATTERN_KINDS and p not in ("amount", "relative"))
        value: Any = err.get("input", _MISSING)
        message = err["msg"]
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("error"), _FieldError):
            field_error: _FieldError = ctx["error"]
            loc, value, message = (*loc, *field_error.loc), field_error.value, field_error.message
        elif err["type"] == "missing":
            value = _MISSING
        elif err["type"] == "union_tag_invalid":
            loc, value = (*loc, "pattern"), ctx.get("tag")
            message = f"unknown pattern; expected one of {', '.join(PATTERN_KINDS)}"
        elif err["type"] == "union_tag_not_found":
            loc, value = (*loc, "pattern"), _MISSING
            message = f"each channel needs a pattern: one of {', '.join(PATTERN_KINDS)}"
        line = _find_line(loc, lines, text, source)
        problems.append(Problem(source, line, _format_loc(loc), value, message))
    return problems


def _find_line(loc: tuple[str | int, ...], lines: dict[tuple[str, ...], int], text: str | None, source: str) -> int | None:
    """The line of the deepest known key on the path (TOML), or of a unique key (JSON)."""
    key = tuple(str(p) for p in loc)
    for n in range(len(key), 0, -1):
        if key[:n] in lines:
            return lines[key[:n]]
    if text is not None and key:
        hits = [i for i, line in enumerate(text.splitlines(), 1) if f'"{key[-1]}"' in line]
        if len(hits) == 1:
            return hits[0]
    return None


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)$")
_KEY_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_-]+)\s*=")


def _key_parts(dotted: str) -> list[str]:
    return [a or b or c for a, b, c in _KEY_PART.findall(dotted)]


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path (array-of-table entries indexed) to the line that defines it."""
    lines: dict[tuple[str, ...], int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()

    def resolve(parts: list[str]) -> tuple[str, ...]:
        path: tuple[str, ...] = ()
        for part in parts:
            path = (*path, part)
            if path in arrays:
                path = (*path, str(arrays[path]))
        return path

    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header and not _ASSIGN.match(line):
            parts = _key_parts(header.group(2))
            if header.group(1) == "[[":
                array = (*resolve(parts[:-1]), parts[-1])
                arrays[array] = arrays.get(array, -1) + 1
                lines.setdefault(array, number)
                table = (*array, str(arrays[array]))
            else:
                table = resolve(parts)
            lines[table] = number
            continue
        assign = _ASSIGN.match(line)
        if assign:
            path = (*table, *_key_parts(assign.group(1)))
            lines[path] = number
            rest = assign.group(2).strip()
            if rest.startswith("{"):
                for inner in _INLINE_KEY.findall(rest):
                    lines.setdefault((*path, inner), number)
    return lines
