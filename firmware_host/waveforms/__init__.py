"""Waveforms: pulse shapes and their exact metrics, time patterns, dosing programs, presets.

Import-light (NumPy, pydantic, tomli-w); nothing here talks to a device.
"""

from .patterns import (
    PARAMS, AmplitudeModulation, Continuous, DenseDisperse, FrequencySweep, Intermittent,
    Modifier, Pattern, Ramp, Segments, Setting, Stepwise, TimedSetting, Waveform, burst, merge,
)
from .presets import PRESETS, PROFILES, Confidence, Preset, SensitivityProfile, preset_program
from .program import (
    BurstSpec, ContinuousSpec, DenseDisperseSpec, IntermittentSpec, Mechanism, ModulationSpec,
    Needle, PhaseSpec, Prescription, Problem, Program, ProgramError, RampSpec, Relative, Segment,
    Sensitivity, Side, Site, StepSpec, SweepSpec, ThresholdKind,
)
from .shapes import (
    Pulse, Shape, amplitude_ua, energy_per_pulse_j, mean_pulse_rate_hz,
    net_charge_uc, phase_charge_uc, pulse_onsets_s, recovery_charge_uc, render, rms_current_ma,
)

__all__ = [
    "PARAMS", "PRESETS", "PROFILES",
    "AmplitudeModulation", "BurstSpec", "Confidence", "Continuous", "ContinuousSpec",
    "DenseDisperse", "DenseDisperseSpec", "FrequencySweep", "Intermittent", "IntermittentSpec",
    "Mechanism", "Modifier", "ModulationSpec", "Needle", "Pattern", "PhaseSpec", "Prescription",
    "Preset", "Problem", "Program", "ProgramError", "Pulse", "Ramp", "RampSpec", "Relative",
    "Segment", "Segments", "Sensitivity", "SensitivityProfile", "Setting", "Shape", "Side", "Site",
    "StepSpec", "Stepwise", "SweepSpec", "ThresholdKind", "TimedSetting", "Waveform",
    "amplitude_ua", "burst", "energy_per_pulse_j", "mean_pulse_rate_hz", "merge",
    "net_charge_uc", "phase_charge_uc", "preset_program", "pulse_onsets_s", "recovery_charge_uc",
    "render", "rms_current_ma",
]
