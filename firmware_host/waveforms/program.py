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
from collections.abc import Callable, Iterator
from abc import abstractmethod
from dataclasses import replace
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainSerializer, Tag,
                      ValidationError, model_validator)

import safety
from safety.limits import Sensitivity
from safety.placement import Region, Side
from safety.settings import Shape

from safety.envelope import Envelope
from safety.thresholds import ThresholdError, TitrationWaveform
from .program_errors import Problem, ProgramError, FieldError, format_loc, line_text, problems_of
from .patterns import (
    AmplitudeModulation, Continuous, DenseDisperse, FrequencySweep, Intermittent, Pattern,
    Ramp, Segments, Setting, Stepwise, TimedSetting, Waveform, merge,
)

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Channel = Annotated[int, Field(ge=1, le=255)]
AsymRatio = Annotated[int, Field(ge=1, le=255)]  # u8 on the wire


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
            raise FieldError(("inserted_mm",), self.inserted_mm,
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
            raise FieldError(("ramp_up_s",), self.ramp_up_s,
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
            raise FieldError(("high_hz",), self.high_hz, f"must be above low_hz ({self.low_hz})")
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

    def titration_waveforms(self) -> tuple[TitrationWaveform, ...]:
        """Every waveform this spec delivers (each phase of a dense-disperse alternation): a
        threshold-relative dose needs thresholds measured on each, since the patient's envelope
        judges every frame against a threshold on its own waveform."""
        burst = getattr(self, "burst_pulses", 0)
        rate = getattr(self, "burst_rate_hz", 0.0) if burst else 0.0
        return tuple(dict.fromkeys(TitrationWaveform(self.shape, f, w, burst, rate) for f, w in self._phases()))

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
            raise FieldError(
                ("prescription", "max_amplitude_ma"), sorted(self.prescription.max_amplitude_ma),
                f"must give a cap for exactly the needled channels {sorted(channels)}",
            )
        for i, seg in enumerate(self.segments):
            if set(seg.channels) != channels:
                raise FieldError(
                    ("segments", i, "channels"), sorted(seg.channels),
                    f"every segment must set exactly the needled channels {sorted(channels)}",
                )
            for ch, spec in seg.channels.items():
                cap = self.prescription.max_amplitude_ma[ch]
                for path, value in spec.intensities():
                    if isinstance(value, float) and value > cap:
                        raise FieldError(
                            ("segments", i, "channels", str(ch), *path), value,
                            f"exceeds prescription.max_amplitude_ma for channel {ch} ({cap} mA)",
                        )
        if self.duration_s > self.prescription.max_minutes * 60.0:
            raise FieldError(
                ("segments",), [seg.duration_s for seg in self.segments],
                f"durations total {self.duration_s:g} s, more than prescription.max_minutes "
                f"({self.prescription.max_minutes:g} min)",
            )
        return self

    @property
    def duration_s(self) -> float:
        return float(sum(seg.duration_s for seg in self.segments))

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(sorted(self.needles))

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

    def titration_waveforms(self, channel: int, relative_only: bool = True) -> tuple[TitrationWaveform, ...]:
        """The waveforms this channel's thresholds must be measured on, in the order the program
        uses them (empty when its intensities are all in mA); with `relative_only` False, every
        waveform the channel delivers (what a titration for this program covers)."""
        return tuple(dict.fromkeys(w for seg in self.segments for ch, spec in seg.channels.items()
                                   if ch == channel and (not relative_only or any(
                                       isinstance(v, Relative) for _, v in spec.intensities()))
                                   for w in spec.titration_waveforms()))

    @property
    def sensory_level(self) -> frozenset[int]:
        """Channels dosed relative to the sensory threshold: each stays below a twitch."""
        return frozenset(ch for ch, kind in self.needed_thresholds if kind is ThresholdKind.SENSORY)

    def dose(self, envelope: Envelope,
             retitrate: Callable[[int, TitrationWaveform], str] | None = None) -> tuple[Program, Envelope, tuple[str, ...]]:
        """This program dosed for the person of `envelope`: every threshold-relative intensity
        turned into mA (whole µA), the envelope the session must hold (sensory-level channels
        marked, so the interlock keeps them below a twitch), and a note for every conversion
        and every dose held down by the envelope's ceiling.

        A relative intensity needs its threshold measured on each waveform of its pattern (both
        phases of a dense-disperse alternation), on its channel and sites, usable now; the dose is
        the lowest of multiple x threshold and the envelope's ceiling over those waveforms.
        Raises ProgramError naming each missing threshold (`retitrate(channel, waveform)` says
        how to measure it); the result is validated again, so a dose above the prescription's cap
        is refused too."""
        envelope = envelope.dosing(self.sensory_level)
        source = f"program {self.name!r}"
        hint = retitrate or (lambda ch, wave: f"titrate channel {ch} on {wave} first")
        problems, notes, data = [], [], self.model_dump()
        for i, seg in enumerate(self.segments):
            for ch, spec in seg.channels.items():
                placement = self.needles[ch].placement()
                for path, value in spec.intensities():
                    if not isinstance(value, Relative):
                        continue
                    doses = []
                    for wave in spec.titration_waveforms():
                        try:
                            found = envelope.thresholds_for(ch, placement, wave, hint(ch, wave))
                            measured = found.values.get(value.of)
                            if measured is None:
                                raise ThresholdError(f"channel {ch} has no {value.of} threshold measured on {wave}: "
                                                     f"{hint(ch, wave)}")
                            ceiling = envelope.ceiling_for(ch, placement, wave)
                        except (ThresholdError, safety.Refusal) as exc:
                            problems.append(Problem(source, None, format_loc(("segments", i, "channels", str(ch), *path)),
                                                    value.model_dump(mode="json"), str(exc)))
                            continue
                        notes += found.notes
                        wanted = round(value.multiple * measured, 3)
                        said = f"channel {ch}: {value.multiple:g} x {value.of} {measured:g} mA = {wanted:g} mA"
                        if ceiling is not None and ceiling.amplitude_ma < wanted:
                            said += f", held at {ceiling.amplitude_ma:g} mA ({ceiling.why})"
                            wanted = ceiling.amplitude_ma
                        notes.append(said)
                        if ch in self.sensory_level and "motor" not in found.values:
                            notes.append(f"channel {ch}: no twitch was marked (m) on {wave}, so this sensory-level "
                                         "dose is held only below 0.9 x tolerance: watch for a twitch")
                        felt = found.values.get("sensory")
                        if ch in self.sensory_level and felt is not None and wanted < felt:
                            problems.append(Problem(source, None, format_loc(("segments", i, "channels", str(ch), *path)),
                                                    value.model_dump(mode="json"),
                                                    f"{said}: below this patient's own sensory threshold of {felt:g} mA "
                                                    f"on {wave}, so they would not feel it. The sensory and motor "
                                                    "thresholds are too close here: titrate again, or choose a "
                                                    "motor-level preset"))
                            continue
                        doses.append(wanted)
                    if len(doses) == len(spec.titration_waveforms()):
                        target = data["segments"][i]["channels"][ch]
                        for key in path[:-1]:
                            target = target[key]
                        target[path[-1]] = min(doses)
        if problems:
            raise ProgramError(problems)
        return Program.from_data(data, source=f"{source} dosed"), envelope, tuple(dict.fromkeys(notes))

    def _require_resolved(self) -> None:
        missing = self.needed_thresholds
        if missing:
            needs = ", ".join(f"{kind} on channel {ch}" for ch, kind in sorted(missing))
            raise ProgramError([Problem(
                f"program {self.name!r}", None, "intensity", "relative",
                f"call dose(envelope) first; needs {needs}",
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

    def session_setup(self, device: safety.DeviceLimits, envelope: Envelope | None = None) -> safety.SessionSetup:
        """The interlock's view of this program: its prescription, needles and placements, with
        the envelope of the person it is given to (`dose` returns the one to use).

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
            envelope=envelope or Envelope.undeclared(),
        )

    # --- Files -------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: Any, source: str = "<data>", text: str | None = None) -> Program:
        """Validate plain data; `text` (TOML source) lets errors name the line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ProgramError(problems_of(exc, source, text)) from None

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
                raise ProgramError([Problem(source, line, "(file)", line_text(text, line), f"invalid JSON: {exc}")]) from None
            return cls.from_data(data, source, text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            line = int(match.group(1)) if match else None
            raise ProgramError([Problem(source, line, "(file)", line_text(text, line), f"invalid TOML: {exc}")]) from None
        return cls.from_data(data, source, text)

    def save(self, path: str | Path) -> None:
        """Write as TOML or JSON by suffix; `load` gives back an equal program."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            path.write_text(tomli_w.dumps(_str_keys(data)), encoding="utf-8")


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


