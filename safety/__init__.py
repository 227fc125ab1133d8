"""Hard safety interlock of the needle stimulator's host controller.

Plain settings and limits in, verdicts out; imports nothing from `firmware_host`.
See RULES.md for every rule and its source.
"""

from .errors import InterlockStateError, Refusal, SafetyError
from .approvals import APPROVAL_TTL_S, Approved, ClearFaults, Command, SetChannel, SetOutputs, SimControl, operator_name
from .dynamic import JITTER_S
from .history import AppliedDose
from .interlock import Expected, Interlock, SessionSetup
from .limits import (NEEDLE_RULES, SENSITIVITY_FACTORS, STANDARD, DeviceLimits, EffectiveLimits, Needle, NeedleRules,
                     describe_sensitivity,
                     Prescription, Sensitivity, StandardLimits, effective_limits)
from .placement import ChannelPlacement, NeedleSite, Patient, Region, Side, check_placement
from .record import KINDS, RecordWriteError, TreatmentRecord, UnknownRecordKind
from .record_anchor import AnchorSink
from .record_keys import RecordKey, RecordKeyError
from .record_read import (RecordStatus, RecordVerdict, read_entries, read_readings, read_record, verify_anchored,
                          verify_record)
from .screening import QUESTIONS, Question, Screening, ScreeningVerdict, screen
from .report import ChannelSummary, format_summary, output_summary
from .rules import RULES, ArrayVerdict, LimitArrays, SettingArrays, Verdict, check_setting, evaluate_arrays
from .settings import ChannelReading, ChannelSetting, Shape
from .supervisor import Action, ActionKind, Supervisor

__all__ = [
    "APPROVAL_TTL_S", "JITTER_S", "KINDS", "NEEDLE_RULES", "QUESTIONS", "RULES", "SENSITIVITY_FACTORS", "STANDARD",
    "Action", "ActionKind", "AnchorSink", "AppliedDose", "Approved", "ArrayVerdict", "ChannelPlacement",
    "ChannelReading", "ChannelSetting", "ChannelSummary", "ClearFaults", "Command", "DeviceLimits", "EffectiveLimits",
    "Expected", "Interlock", "InterlockStateError", "LimitArrays", "Needle", "NeedleRules", "NeedleSite", "Patient",
    "Prescription", "Question", "RecordKey", "RecordKeyError", "RecordStatus", "RecordVerdict", "RecordWriteError",
    "Refusal", "Region", "SafetyError", "Screening", "ScreeningVerdict", "Sensitivity", "SessionSetup", "SetChannel",
    "SetOutputs", "SettingArrays", "Shape", "SimControl", "Side", "StandardLimits", "Supervisor", "TreatmentRecord",
    "UnknownRecordKind", "Verdict", "check_placement", "check_setting", "describe_sensitivity", "effective_limits",
    "evaluate_arrays", "format_summary", "operator_name", "output_summary", "read_entries", "read_readings", "read_record",
    "screen",
    "verify_anchored", "verify_record",
]
