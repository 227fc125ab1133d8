"""Start-up options: every IDENTITY limit and every behaviour where a real device may differ.

Each field is one `--option-name VALUE` on the command line, generated from this dataclass so
the two never drift apart. Defaults are deliberately not the ICD simulator's (§7): a host that
hard-codes those values instead of reading IDENTITY fails against this device.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

OPEN = 0xFFFFFFFF


def _opt(default: Any, help_: str, *choices: str) -> Any:
    return field(default=default, metadata={"help": help_, "choices": choices})


@dataclass(frozen=True)
class DeviceOptions:
    protocol_version: int = _opt(2, "highest ICD version the device speaks (1 or 2)")
    channels: int = _opt(2, "number of output channels (1..8)")
    max_amplitude_ua: int = _opt(25000, "IDENTITY max_amplitude_ua")
    max_phase_us: int = _opt(500, "IDENTITY max_phase_us (also the interphase limit)")
    min_frequency_mhz: int = _opt(1000, "IDENTITY min_frequency_mhz (also the burst-rate floor)")
    max_frequency_mhz: int = _opt(150000, "IDENTITY max_frequency_mhz (also the burst-rate ceiling)")
    max_phase_charge_nc: int = _opt(10000, "IDENTITY max_phase_charge_nc")
    max_step_ua: int = _opt(500, "IDENTITY max_step_ua")
    max_slew_ua_per_s: int = _opt(2500, "IDENTITY max_slew_ua_per_s")
    compliance_mv: int = _opt(45000, "IDENTITY compliance_mv")
    watchdog_ms: int = _opt(500, "IDENTITY watchdog_ms (1..65535)")
    telemetry_hz: int = _opt(20, "IDENTITY telemetry_hz (1..255)")
    serial: str = _opt("NX2-004117", "IDENTITY serial, up to 12 ASCII characters")
    fw_major: int = _opt(3, "IDENTITY fw_major")
    fw_minor: int = _opt(7, "IDENTITY fw_minor")
    load_ohm: str = _opt("2000", "initial load in ohms: one value, or a comma list per channel; 'open' = open")
    output_off_amplitude: str = _opt(
        "zero", "what OUTPUT disabling a channel does to its amplitude register", "zero", "keep"
    )
    telemetry_schedule: str = _opt(
        "spread", "TELEMETRY of every channel at once each period, or spread over it", "spread", "burst"
    )
    reply_latency_ms: float = _opt(2.0, "processing time from a frame's arrival to its execution and reply")
    sim_control: str = _opt(
        "supported", "execute SIM_CONTROL, or NAK every one UNSUPPORTED like a real device", "supported", "unsupported"
    )
    event_counter_start: int = _opt(250, "event counter (seq of TELEMETRY/FAULT) at power-on and after REBOOT")
    nak_expected: str = _opt(
        "zero", "NAK `expected` for codes other than OUT_OF_ORDER: 0, or the device's expected seq", "zero", "expected"
    )
    v1_hello: str = _opt("keep", "as a v1 device: HELLO keeps or resets the channel registers", "keep", "reset")
    open_circuit: str = _opt(
        "enabled", "an open load trips a channel once enabled, or only once it drives current", "enabled", "driving"
    )

    def __post_init__(self) -> None:
        checks = {
            "protocol_version must be 1 or 2": self.protocol_version in (1, 2),
            "channels must be 1..8": 1 <= self.channels <= 8,
            "serial must be at most 12 ASCII characters": len(self.serial) <= 12 and self.serial.isascii(),
            "telemetry_hz must be 1..255": 1 <= self.telemetry_hz <= 255,
            "watchdog_ms must be 1..65535": 1 <= self.watchdog_ms <= 65535,
            "load_ohm needs one value or one per channel": len(self.loads()) == self.channels,
            "reply_latency_ms must be >= 0": self.reply_latency_ms >= 0,
            "event_counter_start must be 0..255": 0 <= self.event_counter_start <= 255,
            "max_phase_us must be 0..65535": 0 <= self.max_phase_us <= 65535,
            "fw_major and fw_minor must be 0..255": 0 <= self.fw_major <= 255 and 0 <= self.fw_minor <= 255,
            "limits must be 0..0xFFFFFFFF": all(
                0 <= getattr(self, f.name) <= 0xFFFFFFFF for f in fields(self) if f.type == "int"
            ),
        }
        for f in fields(self):
            choices = f.metadata["choices"]
            checks[f"{f.name} must be one of {choices}"] = not choices or getattr(self, f.name) in choices
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def loads(self) -> list[int]:
        """Initial load of each channel in ohms (OPEN = open circuit)."""
        values = [OPEN if v.strip() == "open" else int(v, 0) for v in self.load_ohm.split(",")]
        return values * self.channels if len(values) == 1 else values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--name VALUE` option per DeviceOptions field."""
    for f in fields(DeviceOptions):
        kinds: dict[str, Callable[[str], Any]] = {"int": lambda s: int(s, 0), "float": float}
        kind = kinds.get(str(f.type), str)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=f.default,
            choices=f.metadata["choices"] or None,
            help=f"{f.metadata['help']} (default: {f.default})",
        )


def from_arguments(args: argparse.Namespace) -> DeviceOptions:
    return DeviceOptions(**{f.name: getattr(args, f.name) for f in fields(DeviceOptions)})
