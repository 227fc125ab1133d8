"""Presets: starting programs keyed to a clinical target mechanism, with their evidence.

Each preset states where its parameters come from, how strong the human evidence is that
this parameter set engages its target (most of it is preclinical or expert framing, and
the labels say so), and plain sentences a clinician can read to the patient. None promises
an outcome. Intensity is always relative to a threshold measured on the day on this
waveform; the patient's sensitivity picks the multiple, the session length and how slowly
intensity ramps in. The sensitivity's lower cap and slower ramp rate are applied once, by
the safety layer (`safety.limits.SENSITIVITY_FACTORS`), and printed with the dose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .program import Mechanism, Needle, Program, Sensitivity, ThresholdKind


class Confidence(StrEnum):
    """Strength of human evidence that these parameters engage the named target (GRADE-like)."""

    MODERATE = "moderate"
    LOW = "low"
    VERY_LOW = "very low"


@dataclass(frozen=True, slots=True)
class Source:
    """A full citation; `doi` only where one was checked against the publisher's record."""

    authors: str
    year: int
    title: str
    journal: str
    locator: str = ""    # volume(issue):pages
    doi: str | None = None
    note: str = ""

    def __str__(self) -> str:
        where = f";{self.locator}" if self.locator else ""
        doi = f" doi:{self.doi}" if self.doi else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.authors}. {self.title}. {self.journal}. {self.year}{where}.{doi}{note}"


@dataclass(frozen=True, slots=True)
class SensitivityProfile:
    """How a patient's sensitivity shapes a preset beyond its multiple: slower ramps in and
    out (and into each contraction), a shorter session, and no stepwise increase for the
    hypersensitive."""

    ramp_in_s: float
    ramp_out_s: float
    max_minutes: float
    escalate: bool
    contraction_ramp_s: float


PROFILES: dict[Sensitivity, SensitivityProfile] = {
    Sensitivity.HYPERSENSITIVE: SensitivityProfile(90.0, 30.0, 20.0, escalate=False, contraction_ramp_s=3.0),
    Sensitivity.TYPICAL: SensitivityProfile(60.0, 20.0, 30.0, escalate=True, contraction_ramp_s=2.0),
    Sensitivity.HYPOSENSITIVE: SensitivityProfile(30.0, 15.0, 40.0, escalate=True, contraction_ramp_s=2.0),
}

CAP_MA = 10.0        # the preset's prescription cap before the sensitivity factor
RAMP_MA_PER_S = 0.2  # the preset's ramp rate before the sensitivity factor


@dataclass(frozen=True, slots=True)
class Preset:
    """A target mechanism's starting parameters plus the honesty needed to use them."""

    mechanism: Mechanism
    title: str
    pattern: Mapping[str, Any]  # channel spec fields other than intensity and ramp
    threshold: ThresholdKind
    multiples: Mapping[Sensitivity, float]
    minutes: float
    sources: tuple[Source, ...]
    confidence: Confidence
    confidence_note: str
    mechanism_note: str         # what the target is, in plain words
    rationale: str              # what to tell the patient
    step: Mapping[str, Any] | None = field(default=None)  # StepSpec fields, cap relative
    ramp_ma_per_s: float = RAMP_MA_PER_S

    @property
    def name(self) -> str:
        return self.mechanism.value

    def program(
        self, needles: Mapping[int, Needle], sensitivity: Sensitivity, minutes: float | None = None
    ) -> Program:
        """A program driving every needled channel with this preset for `sensitivity`."""
        profile = PROFILES[sensitivity]
        duration_min = min(minutes if minutes is not None else self.minutes, profile.max_minutes)
        spec: dict[str, Any] = {
            **self.pattern,
            "intensity": {"multiple": self.multiples[sensitivity], "of": self.threshold},
            "ramp": {"in_s": profile.ramp_in_s, "out_s": profile.ramp_out_s},
        }
        if self.step is not None and profile.escalate:
            spec["step"] = dict(self.step)
        if "intermittent" in spec:
            spec["intermittent"] = {**spec["intermittent"], "ramp_up_s": profile.contraction_ramp_s}
        return Program.from_data(
            {
                "name": f"{self.title} ({Sensitivity(sensitivity).value})",
                "mechanism": self.mechanism,
                "prescription": {
                    "max_amplitude_ma": {ch: CAP_MA for ch in needles},
                    "max_minutes": profile.max_minutes,
                    "ramp_rate_ma_per_s": self.ramp_ma_per_s,
                    "sensitivity": sensitivity,
                },
                "needles": dict(needles),
                "segments": [{"duration_s": duration_min * 60.0, "channels": {ch: spec for ch in needles}}],
            },
            source=f"preset {self.mechanism}",
        )

    def describe(self) -> str:
        """Everything a clinician needs to judge the preset, in plain words."""
        p = self.pattern
        if p["pattern"] == "dense_disperse":
            wave = (f"{p['disperse']['frequency_hz']:g} Hz at {p['disperse']['pulse_width_us']:g} µs for "
                    f"{p['disperse_s']:g} s, then {p['dense']['frequency_hz']:g} Hz at "
                    f"{p['dense']['pulse_width_us']:g} µs for {p['dense_s']:g} s, alternating")
        else:
            wave = f"{p['frequency_hz']:g} Hz, {p['pulse_width_us']:g} µs per phase, biphasic"
        if "intermittent" in p:
            i = p["intermittent"]
            ups = ", ".join(f"{s.value} {p.contraction_ramp_s:g} s" for s, p in PROFILES.items())
            wave += (f"; {i['on_s']:g} s on / {i['off_s']:g} s off, each on-phase ramping up ({ups}) and down "
                     f"over {i.get('ramp_down_s', 0):g} s")
        dose = ", ".join(f"{s.value} {m:g} x" for s, m in self.multiples.items())
        ceiling = ("never above 0.9 x the motor threshold (no twitch) nor 0.9 x tolerance"
                   if self.threshold is ThresholdKind.SENSORY else "never above 0.9 x tolerance")
        lines = [
            f"{self.title}  ({self.name})",
            f"target: {self.mechanism_note}",
            f"waveform: {wave}",
            f"intensity: the {self.threshold.value} threshold measured today on this waveform times "
            f"{dose}; {ceiling}",
            f"length: {self.minutes:g} min (at most {', '.join(f'{s.value} {p.max_minutes:g}' for s, p in PROFILES.items())})",
            f"evidence: {self.confidence.value} confidence: {self.confidence_note}",
            f"to tell the patient: {self.rationale}",
            "sources:",
            *(f"  - {s}" for s in self.sources),
        ]
        return "\n".join(lines)


_HAN_2003 = Source("Han JS", 2003, "Acupuncture: neuropeptide release produced by electrical stimulation of "
                   "different frequencies", "Trends Neurosci", locator="26(1):17-22",
                   note="mostly rat data: 2 Hz enkephalin and beta-endorphin, 100 Hz spinal dynorphin, 2/100 Hz both")
_BUTTS_2026 = Source("Butts R", 2026, "Dry needling isn't a 'trigger point tool'. It's a mechanotransduction "
                     "intervention", "Torrentia Medical Education (web article)", note="clinical framework, expert opinion")
_LARA_PALOMO = Source("Lara-Palomo IC, Antequera-Soler E, Fernandez-Sanchez M, Castro-Sanchez AM, Garcia-Lopez H", 2024,
                      "Electrical dry needling versus a non-invasive multicomponent intervention in the treatment of "
                      "myofascial trigger points in patients with chronic low back pain: a randomised clinical trial",
                      "Clin Rehabil", locator="38(3):347-360", doi="10.1177/02692155231201589",
                      note="human trial of electrical dry needling as a whole, not of these exact parameters")
_GARCIA_DE_MIGUEL = Source("Garcia-de-Miguel S, Pecos-Martin D, Larroca-Sanz T, et al", 2020,
                           "Short-term effects of PENS versus dry needling in subjects with unilateral mechanical neck "
                           "pain and active myofascial trigger points in levator scapulae muscle: a randomized "
                           "controlled trial", "J Clin Med", locator="9(6):1665", doi="10.3390/jcm9061665",
                           note="human trial of percutaneous electrical nerve stimulation")

PRESETS: dict[Mechanism, Preset] = {
    p.mechanism: p
    for p in (
        Preset(
            mechanism=Mechanism.PERIPHERAL_ANALGESIA,
            title="Peripheral analgesia, low rate",
            pattern={
                "pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 300.0,
                "modulation": {"period_s": 20.0, "depth": 0.2, "waveform": "sine"},
            },
            threshold=ThresholdKind.SENSORY,
            multiples={Sensitivity.HYPERSENSITIVE: 1.2, Sensitivity.TYPICAL: 1.5, Sensitivity.HYPOSENSITIVE: 2.0},
            minutes=20.0,
            ramp_ma_per_s=0.3,
            sources=(
                Source("Goldman N, Chen M, Fujita T, et al.", 2010, "Adenosine A1 receptors mediate local "
                       "anti-nociceptive effects of acupuncture", "Nat Neurosci", locator="13(7):883-888", doi="10.1038/nn.2562",
                       note="mice, manual needling"),
                _HAN_2003,
                _LARA_PALOMO,
            ),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "a local adenosine mechanism was shown in mice with manual needling; no human trial ties these "
                "electrical parameters to it"
            ),
            mechanism_note="local (peripheral) pain chemistry around the needles, at a sensory level",
            rationale=(
                "Slow, gentle pulses at the needles add a steady signal where it hurts; in laboratory studies this "
                "kind of input changed local pain chemistry. It should feel like light, comfortable tapping."
            ),
        ),
        Preset(
            mechanism=Mechanism.SEGMENTAL_INHIBITION,
            title="Segmental (spinal gating) inhibition, high rate",
            pattern={
                "pattern": "continuous", "frequency_hz": 100.0, "pulse_width_us": 200.0,
                "modulation": {"period_s": 10.0, "depth": 0.3, "waveform": "triangle"},
            },
            threshold=ThresholdKind.SENSORY,
            multiples={Sensitivity.HYPERSENSITIVE: 1.5, Sensitivity.TYPICAL: 2.0, Sensitivity.HYPOSENSITIVE: 2.5},
            minutes=30.0,
            ramp_ma_per_s=0.4,
            sources=(
                Source("Melzack R, Wall PD", 1965, "Pain mechanisms: a new theory", "Science", locator="150(3699):971-979"),
                _HAN_2003,
                _GARCIA_DE_MIGUEL,
            ),
            confidence=Confidence.LOW,
            confidence_note=(
                "inhibition in the spinal segment by non-painful input is well described; the clinical benefit of "
                "high-rate needle stimulation is inconsistent across trials"
            ),
            mechanism_note="the spinal segment of the pain: non-painful input that competes with pain signals",
            rationale=(
                "Fast, buzzing pulses in the same nerve segment as your pain compete with pain signals entering the "
                "spinal cord. It should feel strong but comfortable, a buzz with no twitch, never painful."
            ),
        ),
        Preset(
            mechanism=Mechanism.DESCENDING_MODULATION,
            title="Descending (opioid) modulation, 2/100 Hz dense-disperse",
            pattern={
                "pattern": "dense_disperse",
                "disperse": {"frequency_hz": 2.0, "pulse_width_us": 600.0},
                "dense": {"frequency_hz": 100.0, "pulse_width_us": 200.0},
                "disperse_s": 3.0, "dense_s": 3.0,
            },
            threshold=ThresholdKind.TOLERANCE,
            multiples={Sensitivity.HYPERSENSITIVE: 0.6, Sensitivity.TYPICAL: 0.75, Sensitivity.HYPOSENSITIVE: 0.85},
            step={"step_ma": 0.2, "every_s": 600.0, "cap": {"multiple": 0.9, "of": ThresholdKind.TOLERANCE}},
            minutes=30.0,
            sources=(
                _HAN_2003,
                Source("Wang Y, Zhang Y, Wang W, Cao Y, Han JS", 2005, "Effects of synchronous or asynchronous "
                       "electroacupuncture stimulation with low versus high frequency on spinal opioid release and "
                       "tail flick nociception", "Exp Neurol", locator="192:156-162", note="rats: 2/100 Hz alternation"),
                _BUTTS_2026,
            ),
            confidence=Confidence.LOW,
            confidence_note=(
                "in rats, alternating 2 and 100 Hz released both groups of the body's own opioids; that this happens "
                "in people at these settings is plausible but not established. This is not conditioned pain "
                "modulation (DNIC), which needs a painful stimulus elsewhere; this stays below pain"
            ),
            mechanism_note="descending modulation from the brainstem, thought to be opioid-mediated, below pain",
            rationale=(
                "Alternating slow and fast pulses at a strong but comfortable level aims to engage the body's own "
                "pain-dampening chemistry. It should never hurt, and it stays below what you told us you can tolerate."
            ),
        ),
        Preset(
            mechanism=Mechanism.NEUROMUSCULAR_REEDUCATION,
            title="Neuromuscular re-education, motor-level contractions",
            pattern={
                "pattern": "continuous", "frequency_hz": 35.0, "pulse_width_us": 250.0,
                "intermittent": {"on_s": 6.0, "off_s": 18.0, "ramp_up_s": 2.0, "ramp_down_s": 1.0},  # ramp up: profile
            },
            threshold=ThresholdKind.MOTOR,
            multiples={Sensitivity.HYPERSENSITIVE: 1.0, Sensitivity.TYPICAL: 1.1, Sensitivity.HYPOSENSITIVE: 1.25},
            minutes=15.0,
            ramp_ma_per_s=2.0,
            sources=(
                Source("Maffiuletti NA", 2010, "Physiological and methodological considerations for the use of "
                       "neuromuscular electrical stimulation", "Eur J Appl Physiol", locator="110(2):223-234",
                       note="conventions: 30-50 Hz, ramps of 1-2 s, rest 3 to 5 times the contraction"),
                _BUTTS_2026,
            ),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "stimulation conventions come from surface neuromuscular stimulation; the rationale for needles is "
                "mechanistic and expert opinion, and it is meant to go with movement retraining, not replace it"
            ),
            mechanism_note="motor output: visible, comfortable contractions with long rests, alongside exercise",
            rationale=(
                "Every few seconds the muscle around the needles tightens on its own for a moment, then rests; "
                "we use this alongside your exercises. It should be comfortable, and you can ask to stop at any time."
            ),
        ),
        Preset(
            mechanism=Mechanism.TISSUE_PERFUSION,
            title="Tissue and perfusion, low-rate muscle pumping",
            pattern={"pattern": "continuous", "frequency_hz": 2.0, "pulse_width_us": 250.0},
            threshold=ThresholdKind.MOTOR,
            multiples={Sensitivity.HYPERSENSITIVE: 0.9, Sensitivity.TYPICAL: 1.0, Sensitivity.HYPOSENSITIVE: 1.1},
            minutes=20.0,
            sources=(
                Source("Langevin HM, Churchill DL, Cipolla MJ", 2001, "Mechanical signaling through connective "
                       "tissue: a mechanism for the therapeutic effect of acupuncture", "FASEB J", locator="15(12):2275-2282",
                       doi="10.1096/fj.01-0015hyp", note="needle rotation, not electrical stimulation"),
                _BUTTS_2026,
            ),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "perfusion changes after needling are commonly observed; the link from these electrical parameters "
                "to tissue remodelling is mechanistic plausibility only"
            ),
            mechanism_note="local blood flow and connective tissue, through slow rhythmic muscle pumping",
            rationale=(
                "Slow, gentle pulsing of the muscle around the needles aims to increase local blood flow; you may "
                "see small rhythmic twitches and feel some warmth."
            ),
        ),
    )
}


def preset_program(
    mechanism: Mechanism | str, needles: Mapping[int, Needle], sensitivity: Sensitivity | str,
    minutes: float | None = None,
) -> Program:
    """The preset program for a target mechanism and a patient's sensitivity."""
    return PRESETS[Mechanism(mechanism)].program(needles, Sensitivity(sensitivity), minutes)
