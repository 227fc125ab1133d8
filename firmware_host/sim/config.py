"""The simulated device's configuration: ICD section 7 defaults, overridable at start-up."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from firmware_host.icd import OPEN_CIRCUIT_OHM, PROTOCOL_VERSION, Identity

_U8, _U16, _U32 = 0xFF, 0xFFFF, 0xFFFFFFFF

# Inclusive (low, high) bounds per integer field: the wire width of the IDENTITY field it
# is reported in, raised where zero would make the model meaningless (a 0 Hz telemetry
# rate, a 0 ms watchdog). `channels` stops at 8 because OUTPUT's enable_mask is one byte.
_BOUNDS: dict[str, tuple[int, int]] = {
    "channels": (1, 8),
    "max_amplitude_ua": (0, _U32),
    "max_phase_us": (1, _U16),
    "min_frequency_mhz": (1, _U32),
    "max_frequency_mhz": (1, _U32),
    "max_phase_charge_nc": (0, _U32),
    "max_step_ua": (0, _U32),
    "max_slew_ua_per_s": (0, _U32),
    "compliance_mv": (0, _U32),
    "watchdog_ms": (1, _U16),
    "telemetry_hz": (1, _U8),
    "load_ohm": (0, _U32),
    "protocol_version": (0, _U8),
    "fw_major": (0, _U8),
    "fw_minor": (0, _U8),
    "link_latency_ms": (0, 1000),
}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What the simulated hardware is: the limits IDENTITY reports and the initial loads."""

    channels: int = 4
    max_amplitude_ua: int = 30000
    max_phase_us: int = 1000
    min_frequency_mhz: int = 500
    max_frequency_mhz: int = 200000
    max_phase_charge_nc: int = 20000
    max_step_ua: int = 1000
    max_slew_ua_per_s: int = 4000
    compliance_mv: int = 60000
    watchdog_ms: int = 300
    telemetry_hz: int = 10
    load_ohm: int = 1000  # on every channel at power-on; OPEN_CIRCUIT_OHM = open
    protocol_version: int = PROTOCOL_VERSION
    fw_major: int = 1
    fw_minor: int = 0
    serial: str = "SIM-0001"
    # Not device state but the byte path: how long the device's output takes to reach the
    # host, as a USB-serial adapter's latency timer adds (FTDI's default is 16 ms).
    link_latency_ms: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"simulator setting {name!r}: {value!r} is not an integer in {low}..{high}")
        if self.min_frequency_mhz > self.max_frequency_mhz:
            raise ValueError(
                f"simulator setting 'min_frequency_mhz': {self.min_frequency_mhz} exceeds "
                f"max_frequency_mhz {self.max_frequency_mhz}"
            )
        if not self.serial.isascii() or len(self.serial) > 12:
            raise ValueError(f"simulator setting 'serial': {self.serial!r} is not ASCII of at most 12 characters")

    def identity(self, latched_faults: int = 0, session_version: int | None = None) -> Identity:
        """The IDENTITY this hardware reports (also what `estim check` assumes by default);
        `session_version` is the version negotiated at HELLO (default: the device's own)."""
        return Identity(
            self.protocol_version if session_version is None else session_version, self.fw_major, self.fw_minor, self.channels, self.serial,
            self.max_amplitude_ua, self.max_phase_us, self.min_frequency_mhz, self.max_frequency_mhz,
            self.max_phase_charge_nc, self.max_step_ua, self.max_slew_ua_per_s, self.compliance_mv,
            self.watchdog_ms, self.telemetry_hz, latched_faults,
        )

    @classmethod
    def from_overrides(cls, overrides: dict[str, str]) -> SimConfig:
        """Defaults with `key=value` strings applied (URL queries, `--set`); ValueError names the key.

        Integers may be decimal or 0x-prefixed hex; `load_ohm` also accepts `open`.
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, int | str] = {}
        for key, text in overrides.items():
            if key not in known:
                raise ValueError(f"unknown simulator setting {key!r} (known: {', '.join(sorted(known))})")
            values[key] = text if key == "serial" else _parse_int(key, text)
        return replace(cls(), **values)


def _parse_int(key: str, text: str) -> int:
    stripped = text.strip()
    if key == "load_ohm" and stripped.lower() == "open":
        return OPEN_CIRCUIT_OHM
    try:
        return int(stripped, 16) if stripped.lower().startswith("0x") else int(stripped, 10)
    except ValueError:
        raise ValueError(f"simulator setting {key!r}: {text!r} is not an integer") from None
