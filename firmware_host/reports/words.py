"""A record's facts in the words a clinician reads, shared by `estim record show` and the PDF
report: settings, not message class names; caps per channel, not Python dicts; a stop as a
person says it. The JSON output keeps the raw fields and rule ids."""

from __future__ import annotations

from typing import Any

NOT_RECORDED = "not recorded"
STOP_WORDS = {"KeyboardInterrupt": "Ctrl-C (e-stop)", "Terminated": "SIGTERM (e-stop)"}
COMMAND_WORDS = {"SetChannel": "settings", "SetOutputs": "output switchings", "ClearFaults": "stops cleared",
                 "SimControl": "simulator controls"}


def stop_text(reason: str) -> str:
    """A stop as a person says it (an interrupted program's exception name is not that)."""
    for name, words in STOP_WORDS.items():
        if reason.startswith(name):
            return words
    return reason


def commands_text(counts: dict[str, int]) -> str:
    """`41 settings, 2 output switchings`, or `none`."""
    return ", ".join(f"{n} {COMMAND_WORDS.get(k, k)}" for k, n in sorted(counts.items())) or "none"


def prescription_text(rx: dict[str, Any]) -> str:
    if not rx:
        return f"prescription: {NOT_RECORDED}"
    caps = rx.get("max_amplitude_ma")
    cap = ", ".join(f"channel {ch} {v:g} mA" for ch, v in sorted(caps.items(), key=lambda kv: int(kv[0])))  \
        if isinstance(caps, dict) else (f"{caps:g} mA" if isinstance(caps, (int, float)) else NOT_RECORDED)
    return (f"prescription: cap {cap}; ramp {_num(rx.get('ramp_ma_per_s'), 'mA/s')}; "
            f"{_range(rx.get('frequency_hz'), 'Hz')}; {_range(rx.get('pulse_width_us'), 'µs')}; "
            f"at most {_minutes(rx.get('max_session_minutes'))}")


def ma(value: Any) -> str:
    return "-" if value is None else f"{value:g} mA"


def _num(value: Any, unit: str) -> str:
    return f"{value:g} {unit}" if isinstance(value, (int, float)) else NOT_RECORDED


def _range(value: Any, unit: str) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:g} {unit}" if value[0] == value[1] else f"{value[0]:g}-{value[1]:g} {unit}"
    return _num(value, unit)


def _minutes(value: Any) -> str:
    return f"{value:.1f} min" if isinstance(value, (int, float)) else NOT_RECORDED
