"""Hard safety interlock of the needle stimulator's host controller.

Plain settings and limits in, verdicts out; imports nothing from `firmware_host`.
See RULES.md for every rule and its source. Names are loaded on first use, so that reading
or verifying a treatment record (`safety.record_read`) does not pay for NumPy and pydantic.
"""

from __future__ import annotations

from .lazy import exports

__all__, __getattr__ = exports(__name__, {
    "errors": ("InterlockStateError", "Refusal", "SafetyError"),
    "approvals": ("APPROVAL_TTL_S", "ROUTINE_FAULTS", "Approved", "ClearFaults", "Command", "SetChannel", "SetOutputs",
                  "SimControl", "operator_name"),
    "dynamic": ("JITTER_S",),
    "envelope": ("Ceiling", "Envelope", "Subject", "stricter"),
    "history": ("AppliedDose",),
    "interlock": ("Expected", "Interlock", "SessionSetup"),
    "limits": ("NEEDLE_RULES", "SENSITIVITY_FACTORS", "STANDARD", "DeviceLimits", "EffectiveLimits", "Needle",
               "NeedleRules", "describe_sensitivity", "Prescription", "Sensitivity", "StandardLimits",
               "effective_limits"),
    "placement": ("ChannelPlacement", "NeedleSite", "Patient", "Region", "Side", "check_placement"),
    "record": ("KINDS", "RecordWriteError", "TreatmentRecord", "UnknownRecordKind"),
    "record_anchor": ("AnchorSink",),
    "record_keys": ("RecordKey", "RecordKeyError"),
    "record_read": ("RecordStatus", "RecordVerdict", "read_entries", "read_readings", "read_record",
                    "verify_anchored", "verify_record"),
    "screening": ("ENDS_VISIT", "PERSISTENT", "QUESTIONS", "Question", "Screening", "ScreeningVerdict",
                  "screen"),
    "report": ("ChannelSummary", "format_summary", "output_summary"),
    "rules": ("RULES", "ArrayVerdict", "LimitArrays", "SettingArrays", "Verdict", "check_setting", "evaluate_arrays"),
    "settings": ("ChannelReading", "ChannelSetting", "Shape"),
    "supervisor": ("Action", "ActionKind", "Supervisor"),
    "thresholds": ("ChannelThresholds", "ThresholdError", "TitrationWaveform"),
})
