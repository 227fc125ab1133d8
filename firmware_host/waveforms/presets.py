"""Presets: starting programs keyed to a clinical target mechanism, with their evidence.

Each preset states where its parameters come from, how strong the human evidence is that
this parameter set engages its target (most of it is preclinical or expert framing, and
the labels say so), and one plain sentence a clinician can read to the patient. None
promises an outcome. Intensity is always relative to a threshold measured on the day;
the patient's sensitivity profile picks the multiple, the cap, the session length and
how slowly intensity ramps in.
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
class SensitivityProfile:
    """Dose limits for a patient's threat system: hypersensitive gets less, slower."""

    cap_ma: float
    ramp_rate_ma_per_s: float
    ramp_in_s: float
    ramp_out_s: float
    max_minutes: float
    escalate: bool  # whether a preset's stepwise increase is used at all


PROFILES: dict[Sensitivity, SensitivityProfile] = {
    Sensitivity.HYPERSENSITIVE: SensitivityProfile(6.0, 0.05, 90.0, 30.0, 20.0, escalate=False),
    Sensitivity.TYPICAL: SensitivityProfile(10.0, 0.1, 60.0, 20.0, 30.0, escalate=True),
    Sensitivity.HYPOSENSITIVE: SensitivityProfile(15.0, 0.2, 30.0, 15.0, 40.0, escalate=True),
}


@dataclass(frozen=True, slots=True)
class Preset:
    """A target mechanism's starting parameters plus the honesty needed to use them."""

    mechanism: Mechanism
    title: str
    pattern: Mapping[str, Any]  # channel spec fields other than intensity and ramp
    threshold: ThresholdKind
    multiples: Mapping[Sensitivity, float]
    minutes: float
    sources: tuple[str, ...]
    confidence: Confidence
    confidence_note: str
    rationale: str
    step: Mapping[str, Any] | None = field(default=None)  # StepSpec fields, cap relative

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
        return Program.from_data(
            {
                "name": f"{self.title} ({Sensitivity(sensitivity).value})",
                "mechanism": self.mechanism,
                "prescription": {
                    "max_amplitude_ma": {ch: profile.cap_ma for ch in needles},
                    "max_minutes": profile.max_minutes,
                    "ramp_rate_ma_per_s": profile.ramp_rate_ma_per_s,
                    "sensitivity": sensitivity,
                },
                "needles": dict(needles),
                "segments": [{"duration_s": duration_min * 60.0, "channels": {ch: spec for ch in needles}}],
            },
            source=f"preset {self.mechanism}",
        )


_HAN_2003 = (
    "Han JS. Acupuncture: neuropeptide release produced by electrical stimulation of different "
    "frequencies. Trends Neurosci. 2003;26(1):17-22 (mostly rat data; 2 Hz enkephalin/beta-endorphin, "
    "100 Hz spinal dynorphin, 2/100 Hz alternation both)"
)
_BUTTS_2026 = (
    "Butts R. Dry needling isn't a 'trigger point tool'. It's a mechanotransduction intervention. "
    "Torrentia Medical Education, Apr 2026 (clinical framework, expert opinion)"
)
_DN_META_2025 = (
    "Neurophysiological effects of dry needling: a systematic review and meta-analysis (2025; "
    "literature to Oct 2024) - CPM and temporal summation outcomes, needling without set electrical parameters"
)

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
            sources=(
                "Goldman N, Chen M, Fujita T, et al. Adenosine A1 receptors mediate local anti-nociceptive "
                "effects of acupuncture. Nat Neurosci. 2010;13(7):883-888 (mouse, manual needling)",
                _HAN_2003,
            ),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "local adenosine mechanism shown in mice with manual needling; no human trial ties these "
                "electrical parameters to it"
            ),
            rationale=(
                "Slow, gentle pulses at the needles add a steady signal where it hurts, which in laboratory "
                "studies changed local pain chemistry; it should feel like light, comfortable tapping."
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
            sources=(
                "Melzack R, Wall PD. Pain mechanisms: a new theory. Science. 1965;150(3699):971-979",
                _HAN_2003,
            ),
            confidence=Confidence.LOW,
            confidence_note=(
                "segmental inhibition by non-painful afferent input is well described; clinical benefit of "
                "high-rate needle stimulation is inconsistent across trials"
            ),
            rationale=(
                "Fast, buzzing pulses in the same nerve segment as your pain compete with pain signals "
                "entering the spinal cord; it should feel strong but comfortable, never painful."
            ),
        ),
        Preset(
            mechanism=Mechanism.DESCENDING_INHIBITION,
            title="Descending inhibition (DNIC/CPM), 2/100 Hz dense-disperse",
            pattern={
                "pattern": "dense_disperse",
                "disperse": {"frequency_hz": 2.0, "pulse_width_us": 600.0},
                "dense": {"frequency_hz": 100.0, "pulse_width_us": 200.0},
                "disperse_s": 3.0, "dense_s": 3.0,
            },
            threshold=ThresholdKind.TOLERANCE,
            multiples={Sensitivity.HYPERSENSITIVE: 0.6, Sensitivity.TYPICAL: 0.75, Sensitivity.HYPOSENSITIVE: 0.85},
            step={"step_ma": 0.5, "every_s": 600.0, "cap": {"multiple": 0.9, "of": ThresholdKind.TOLERANCE}},
            minutes=30.0,
            sources=(
                "Le Bars D, Dickenson AH, Besson JM. Diffuse noxious inhibitory controls (DNIC). "
                "Pain. 1979;6(3):283-304",
                "Diffuse noxious inhibitory controls in chronic pain states. Int J Mol Sci, Jan 2025 (review; "
                "noradrenergic, serotonergic and opioidergic contributions)",
                _HAN_2003,
                _DN_META_2025,
            ),
            confidence=Confidence.LOW,
            confidence_note=(
                "conditioned pain modulation is reproducible in humans; that this stimulation engages it, "
                "or releases the peptides seen in rats, is plausible but not established"
            ),
            rationale=(
                "Alternating slow and fast pulses at a strong but bearable level aims to switch on the body's "
                "own pain-dampening system; it should never go beyond what you have told us you can tolerate."
            ),
        ),
        Preset(
            mechanism=Mechanism.NEUROMUSCULAR_REEDUCATION,
            title="Neuromuscular re-education, motor-level bursts",
            pattern={
                "pattern": "burst", "frequency_hz": 100.0, "pulse_width_us": 200.0,
                "burst_pulses": 7, "burst_rate_hz": 2.0,
                "intermittent": {"on_s": 10.0, "off_s": 10.0},
            },
            threshold=ThresholdKind.MOTOR,
            multiples={Sensitivity.HYPERSENSITIVE: 1.0, Sensitivity.TYPICAL: 1.1, Sensitivity.HYPOSENSITIVE: 1.25},
            minutes=15.0,
            sources=(_BUTTS_2026, _DN_META_2025),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "a mechanistic and expert-opinion rationale; it is meant to accompany movement retraining, "
                "not replace it"
            ),
            rationale=(
                "Short bursts make the muscle twitch visibly, with rests, so it can be retrained alongside your "
                "exercises; the twitch should be comfortable and you can ask to stop at any time."
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
                "Langevin HM, Churchill DL, Cipolla MJ. Mechanical signaling through connective tissue: a "
                "mechanism for the therapeutic effect of acupuncture. FASEB J. 2001;15(12):2275-2282 "
                "(needle rotation, not electrical stimulation)",
                "Integrative research on the mechanisms of acupuncture mechanics and connective tissue "
                "mechanobiology (2025 review, cited in Butts 2026)",
                _BUTTS_2026,
            ),
            confidence=Confidence.VERY_LOW,
            confidence_note=(
                "perfusion changes after needling are commonly observed; the link from these electrical "
                "parameters to tissue remodelling is mechanistic plausibility only"
            ),
            rationale=(
                "Slow, gentle pulsing of the muscle around the needles aims to increase local blood flow; you "
                "may see small rhythmic twitches and feel some warmth."
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
