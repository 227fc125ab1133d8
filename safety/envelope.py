"""The patient's envelope: every limit that comes from the person connected, in one object
the interlock holds for the whole session and applies to every frame, whoever built it.

It is made from today's visit (`Envelope.for_visit`: the screening, the sensitivity, the
thresholds bound to channel, sites and waveform) or from an explicit declaration that no
visit applies: a participant of a research protocol screened under it (`research`), a bench
test load with nobody connected (`test_load`), or nothing declared (`undeclared`), which the
link accepts on the built-in simulated device only. What it holds:

- who is connected, as declared, for the record;
- the patient's sensitivity: the interlock uses the stricter of it and the prescription's;
- the screening answers and what the placement rules need (implant, pregnancy), judged
  against every channel's needles at set-up (`setup_verdict`);
- the thresholds. On a channel and needle sites where any were measured, every SET_CHANNEL
  needs a threshold on a matching waveform (the same one, or the same but for a phase width
  within 4x, converted by the Weiss strength–duration model, `thresholds.convert_width`),
  usable now (measured in the last 12 hours, not dated in the future), and stays at or below
  0.9 x its tolerance, and for channels dosed at a sensory level 0.9 x its motor threshold
  (`ceiling_for`). A channel being titrated (`titrating`) takes its titration waveform only,
  up to the prescription's cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .errors import Refusal
from .limits import EffectiveLimits, Sensitivity
from .rules import check_setting
from .placement import ChannelPlacement, Patient, check_placement
from .screening import Screening, screen
from .settings import ChannelSetting
from .thresholds import ChannelThresholds, DoseThresholds, ThresholdError, TitrationWaveform, for_dose, same_sites

SENSORY_CEILING = 0.9     # a sensory-level dose stays at or below 0.9 x motor threshold
TOLERANCE_CEILING = 0.9   # every dose stays at or below 0.9 x tolerance
STRICTNESS = (Sensitivity.HYPERSENSITIVE, Sensitivity.TYPICAL, Sensitivity.HYPOSENSITIVE)  # strictest first


def stricter(first: Sensitivity, *others: Sensitivity | None) -> Sensitivity:
    """The strictest of the profiles given (hypersensitive before typical before hyposensitive;
    None is no profile)."""
    return min([first, *(p for p in others if p is not None)], key=STRICTNESS.index)


class Subject(StrEnum):
    """Who or what is connected to the needles, as declared for the session."""

    PATIENT = "patient"          # a patient of the visit store, screened in today's visit
    RESEARCH = "research"        # a participant of a research protocol, screened under that protocol
    TEST_LOAD = "test_load"      # a bench load (resistor, phantom): nobody is connected
    UNDECLARED = "undeclared"    # nothing declared: the built-in simulated device only

    def describe(self, who: str, reference: str) -> str:
        return {Subject.PATIENT: f"patient {who}, screened in visit {reference}",
                Subject.RESEARCH: f"participant {who} of research protocol {reference}, screened under it",
                Subject.TEST_LOAD: f"a test load ({who}): nobody is connected",
                Subject.UNDECLARED: "nothing declared: for the built-in simulated device only"}[self]


@dataclass(frozen=True)
class Ceiling:
    """The most a channel may deliver on one waveform, and why, in the clinician's words."""

    amplitude_ma: float
    why: str


@dataclass(frozen=True)
class Envelope:
    """Fixed for the session once handed to the interlock (see the module's docstring)."""

    subject: Subject = Subject.UNDECLARED
    who: str = ""
    reference: str = ""
    sensitivity: Sensitivity | None = None     # None: the person's profile is not known here
    patient: Patient = field(default_factory=Patient)
    screening: Screening | None = None
    thresholds: tuple[ChannelThresholds, ...] = ()
    sensory_level: frozenset[int] = frozenset()
    titrating: Mapping[int, tuple[TitrationWaveform, ...]] = field(default_factory=lambda: MappingProxyType({}))
    made_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        if self.sensitivity is not None:  # a profile given by name ("typical") is the profile
            object.__setattr__(self, "sensitivity", Sensitivity(self.sensitivity))

    # --- the ways to make one --------------------------------------------------------------

    @classmethod
    def for_visit(cls, patient_code: str, visit: str, screening: Screening, sensitivity: Sensitivity,
                  thresholds: Iterable[ChannelThresholds] = ()) -> Envelope:
        """Today's visit of a patient of the visit store: its screening, profile and thresholds."""
        return cls(Subject.PATIENT, _named(patient_code, "patient code"), str(visit), sensitivity,
                   screening.patient(), screening, _theirs(thresholds, patient_code))

    @classmethod
    def research(cls, protocol: str, participant: str, patient: Patient = Patient(),
                 sensitivity: Sensitivity | None = None,
                 thresholds: Iterable[ChannelThresholds] = ()) -> Envelope:
        """A participant screened under a research protocol outside the visit store; thresholds
        (from a file) must name the participant."""
        return cls(Subject.RESEARCH, _named(participant, "participant code"), _named(protocol, "protocol"),
                   sensitivity, patient, None, _theirs(thresholds, participant))

    @classmethod
    def test_load(cls, description: str = "bench load") -> Envelope:
        """A bench load: nobody is connected, so there is nothing to screen and no threshold."""
        return cls(Subject.TEST_LOAD, _named(description, "test load description"), "")

    @classmethod
    def undeclared(cls, patient: Patient = Patient(), sensitivity: Sensitivity | None = None,
                   thresholds: Iterable[ChannelThresholds] = (), who: str = "") -> Envelope:
        """Nothing declared: accepted by the built-in simulated device only (training, demos);
        thresholds, if any, must all name `who`."""
        kept = tuple(thresholds)
        return cls(Subject.UNDECLARED, who, "", sensitivity, patient, None, _theirs(kept, who) if kept else ())

    def dosing(self, sensory_level: Iterable[int]) -> Envelope:
        """The same envelope for a dose given at a sensory level on these channels."""
        return replace(self, sensory_level=frozenset(sensory_level))

    def titration(self, channel: int, waveforms: Iterable[TitrationWaveform]) -> Envelope:
        """The same envelope for titrating `channel` on `waveforms` (and nothing else on it)."""
        return replace(self, titrating=MappingProxyType({**self.titrating, channel: tuple(waveforms)}))

    # --- what it says -------------------------------------------------------------------

    @property
    def screened(self) -> bool:
        """A person was screened (in the visit store or under a research protocol) or nobody is
        connected: a session may go to a real device."""
        return self.subject is not Subject.UNDECLARED

    def describe(self) -> str:
        return self.subject.describe(self.who, self.reference)

    def as_record(self) -> dict[str, Any]:
        """What the treatment record keeps of it."""
        return {"subject": self.subject.value, "who": self.who, "reference": self.reference,
                "sensitivity": self.sensitivity and self.sensitivity.value, "patient": vars(self.patient),
                "screening": None if self.screening is None else
                {q.value: a for q, a in sorted(self.screening.answers.items())},
                "thresholds": [t.as_dict() for t in self.thresholds], "sensory_level": sorted(self.sensory_level),
                "titrating": {str(ch): [w.as_dict() for w in ws] for ch, ws in sorted(self.titrating.items())},
                "made_at": self.made_at.isoformat()}

    def setup_verdict(self, placements: Mapping[int, ChannelPlacement],
                      sensitivity: Sensitivity) -> tuple[list[Refusal], list[str]]:
        """Refusals and cautions for these needles: the placement rules for this patient, and
        with a visit's screening every answer against every site."""
        refusals = check_placement(placements, self.patient)
        warnings: list[str] = []
        if self.subject is Subject.PATIENT:
            verdict = screen(self.screening or Screening({}), placements, sensitivity)
            refusals += verdict.refusals
            warnings += verdict.warnings
        return refusals, warnings

    def has_thresholds(self, channel: int, placement: ChannelPlacement) -> bool:
        return any(t.channel == channel and same_sites(t.placement, placement) for t in self.thresholds)

    def thresholds_for(self, channel: int, placement: ChannelPlacement, wave: TitrationWaveform,
                       retitrate: str = "") -> DoseThresholds:
        """The newest usable thresholds on this channel, sites and waveform (converted between
        phase widths by the Weiss model, with a note); ThresholdError ending with `retitrate`."""
        return for_dose(self.thresholds, channel, placement, wave, now=self.made_at,
                        retitrate=retitrate or f"titrate channel {channel} on {wave} first")

    def ceiling_for(self, channel: int, placement: ChannelPlacement, wave: TitrationWaveform) -> Ceiling | None:
        """The most `wave` may deliver on `channel` with these needles (None: nothing was measured
        here, so the prescription alone limits it), or a Refusal saying what to titrate."""
        if channel in self.titrating:
            titrated = self.titrating[channel]
            if wave not in titrated:
                on = " and ".join(map(str, titrated))
                raise Refusal("envelope.titration_waveform", f"channel {channel} is being titrated on {on}: {wave} "
                              "is not sent in this titration", value=str(wave), limit=on, channel=channel)
            return None
        if not self.has_thresholds(channel, placement):
            return None
        try:
            found = self.thresholds_for(channel, placement, wave)
        except ThresholdError as exc:
            raise Refusal("envelope.no_threshold", f"{exc} (today's thresholds for channel {channel} at "
                          f"{placement.a} / {placement.b} were measured on another waveform, or cannot be used)",
                          value=str(wave), limit="a threshold on this waveform", channel=channel) from None
        values = found.values
        ceilings = []
        if values.get("tolerance"):
            ceilings.append(Ceiling(_floor_ua(TOLERANCE_CEILING * values["tolerance"]),
                                    f"{TOLERANCE_CEILING:g} x tolerance {values['tolerance']:g} mA"))
        if channel in self.sensory_level and values.get("motor"):
            ceilings.append(Ceiling(_floor_ua(SENSORY_CEILING * values["motor"]),
                                    f"{SENSORY_CEILING:g} x motor threshold {values['motor']:g} mA: a sensory-level "
                                    "dose stays below a twitch"))
        if not ceilings:
            needs = "motor threshold or tolerance" if channel in self.sensory_level else "tolerance"
            raise Refusal("envelope.no_ceiling", f"channel {channel} has no {needs} measured on {wave}, so nothing "
                          f"keeps a dose below it: titrate channel {channel} on {wave} to the top mark (t)",
                          value=str(wave), limit=needs, channel=channel)
        best = min(ceilings, key=lambda c: c.amplitude_ma)
        note = f"; {found.notes[0]}" if found.notes else ""
        return Ceiling(best.amplitude_ma, f"{best.why} on {wave}{note}")


@dataclass
class ChannelGuard:
    """The envelope on one channel's needles, as the interlock asks it on every frame; each
    waveform's verdict is worked out once per session (the envelope is fixed)."""

    envelope: Envelope
    placement: ChannelPlacement
    _verdicts: dict[TitrationWaveform, Ceiling | Refusal | None] = field(default_factory=dict)

    def ceiling(self, setting: ChannelSetting) -> Ceiling | None:
        """As `Envelope.ceiling`: the Refusal is raised, the Ceiling (or None) returned."""
        wave = TitrationWaveform.of(setting)
        if wave not in self._verdicts:
            try:
                self._verdicts[wave] = self.envelope.ceiling_for(setting.channel, self.placement, wave)
            except Refusal as refusal:
                self._verdicts[wave] = refusal
        verdict = self._verdicts[wave]
        if isinstance(verdict, Refusal):
            raise verdict.with_traceback(None)
        return verdict

    def refusal(self, setting: ChannelSetting) -> Refusal | None:
        """Why `setting` may not be sent (a waveform without a threshold, an amplitude above
        the ceiling), or None."""
        try:
            ceiling = self.ceiling(setting)
        except Refusal as refusal:
            return refusal
        if ceiling is None or setting.amplitude_ma <= ceiling.amplitude_ma + 1e-9:
            return None
        return Refusal("envelope.ceiling", f"{setting.amplitude_ma:g} mA on channel {setting.channel} is above this "
                       f"patient's ceiling of {ceiling.amplitude_ma:g} mA ({ceiling.why}): stay at or below "
                       f"{ceiling.amplitude_ma:g} mA", value=setting.amplitude_ma, limit=ceiling.amplitude_ma,
                       channel=setting.channel)


    def highest(self, waveform: ChannelSetting, limits: EffectiveLimits) -> tuple[float, Refusal | None]:
        """The highest amplitude of `waveform` (whole µA, a multiple of its recovery ratio) that
        every static rule and this envelope allow, up to the channel's cap, and the refusal that
        stops it there (None: the cap itself). Static limits only grow with the amplitude, so a
        bisection finds it. What a titration may ramp to."""
        asym = waveform.asym_ratio

        def refusal(units: int) -> Refusal | None:
            setting = waveform.with_amplitude(units * asym / 1000)
            return next(iter(check_setting(setting, limits).refusals), None) or self.refusal(setting)

        top = int(limits.max_amplitude_ma * 1000) // asym
        if refusal(top) is None:
            return top * asym / 1000, None
        low, high = 0, top  # refusal(high) is not None
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if refusal(mid) is None else (low, mid)
        return low * asym / 1000, refusal(high)


def _named(text: str, what: str) -> str:
    name = " ".join(str(text).split()) if isinstance(text, str) else ""
    if not name or not name.isprintable():
        raise Refusal("envelope.unnamed", f"the {what} is empty or cannot be read: give it in plain text",
                      value=text, limit=what)
    return name


def _theirs(thresholds: Iterable[ChannelThresholds], who: str) -> tuple[ChannelThresholds, ...]:
    """Thresholds of this person only: one that names nobody or somebody else is refused."""
    kept = tuple(thresholds)
    for t in kept:
        if t.patient != who:
            whose = f"patient {t.patient}" if t.patient else "no patient"
            raise Refusal("envelope.thresholds_of_another", f"thresholds for channel {t.channel} name {whose}, "
                          f"not {who}: use thresholds measured on {who}", value=t.patient, limit=who,
                          channel=t.channel)
    return kept


def _floor_ua(ma: float) -> float:
    """Down to whole µA, so a ceiling is never exceeded by rounding."""
    return math.floor(ma * 1000 + 1e-9) / 1000
