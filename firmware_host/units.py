"""The one place where physical units (mA, µs, Hz, 1-based channels) meet wire units
(µA, µs, mHz, 0-based channels). Settings are on the wire grid already (safety refuses
anything off it), so every conversion here is exact in both directions.
"""

from __future__ import annotations

from safety.approvals import ClearFaults, Command, SetChannel, SetOutputs, SimControl
from safety.limits import DeviceLimits
from safety.settings import ChannelReading, ChannelSetting, Shape

from . import icd

_SHAPE_TO_WIRE = {shape: icd.Shape[shape.name] for shape in Shape}
_SHAPE_FROM_WIRE = {wire: shape for shape, wire in _SHAPE_TO_WIRE.items()}


def _milli(value: float) -> int:
    return round(value * 1000)


def setting_to_wire(setting: ChannelSetting) -> icd.SetChannel:
    return icd.SetChannel(
        channel=setting.channel - 1,
        shape=_SHAPE_TO_WIRE[setting.shape],
        asym_ratio=setting.asym_ratio,
        burst_pulses=setting.burst_pulses,
        frequency_mhz=_milli(setting.frequency_hz),
        burst_rate_mhz=_milli(setting.burst_rate_hz),
        phase_us=round(setting.pulse_width_us),
        interphase_us=round(setting.interphase_us),
        amplitude_ua=_milli(setting.amplitude_ma),
    )


def setting_from_wire(message: icd.SetChannel) -> ChannelSetting:
    """Inverse of `setting_to_wire` (raises safety's Refusal for a shape it does not know)."""
    return ChannelSetting(
        channel=message.channel + 1,
        shape=_SHAPE_FROM_WIRE.get(message.shape, message.shape),
        frequency_hz=message.frequency_mhz / 1000,
        pulse_width_us=float(message.phase_us),
        amplitude_ma=message.amplitude_ua / 1000,
        asym_ratio=message.asym_ratio,
        interphase_us=float(message.interphase_us),
        burst_pulses=message.burst_pulses,
        burst_rate_hz=message.burst_rate_mhz / 1000,
    )


def mask_from_channels(channels: frozenset[int] | set[int]) -> int:
    mask = 0
    for channel in channels:
        mask |= 1 << (channel - 1)
    return mask


def channels_from_mask(mask: int) -> frozenset[int]:
    return frozenset(bit + 1 for bit in range(8) if mask & (1 << bit))


def device_limits(identity: icd.Identity) -> DeviceLimits:
    return DeviceLimits(
        channels=identity.channels,
        max_amplitude_ma=identity.max_amplitude_ua / 1000,
        max_phase_us=float(identity.max_phase_us),
        min_frequency_hz=identity.min_frequency_mhz / 1000,
        max_frequency_hz=identity.max_frequency_mhz / 1000,
        max_phase_charge_uc=identity.max_phase_charge_nc / 1000,
        max_step_ma=identity.max_step_ua / 1000,
        max_slew_ma_per_s=identity.max_slew_ua_per_s / 1000,
        compliance_v=identity.compliance_mv / 1000,
    )


def reading_from_telemetry(message: icd.Telemetry) -> ChannelReading:
    return ChannelReading(
        channel=message.channel + 1,
        device_time_s=message.device_time_ms / 1000,
        enabled=bool(message.flags & icd.Telemetry.FLAG_ENABLED),
        compliance_limited=bool(message.flags & icd.Telemetry.FLAG_COMPLIANCE_LIMITED),
        amplitude_ma=message.amplitude_ua / 1000,
        frequency_hz=message.frequency_mhz / 1000,
        pulse_width_us=float(message.phase_us),
        load_ohm=None if message.load_ohm == icd.OPEN_CIRCUIT_OHM else float(message.load_ohm),
        charge_total_uc=float(message.charge_total_uc),
        shape=message.shape,
        asym_ratio=message.asym_ratio,
        burst_pulses=message.burst_pulses,
        interphase_us=None if message.interphase_us is None else float(message.interphase_us),
        burst_rate_hz=None if message.burst_rate_mhz is None else message.burst_rate_mhz / 1000,
    )


def command_to_wire(command: Command) -> icd.Message:
    """The ICD message for an approved command (SimControl channels are 1-based; 0 = none)."""
    if isinstance(command, SetChannel):
        return setting_to_wire(command.setting)
    if isinstance(command, SetOutputs):
        return icd.Output(mask_from_channels(command.enabled))
    if isinstance(command, ClearFaults):
        return icd.ClearFault()
    if isinstance(command, SimControl):
        channel = command.channel - 1 if command.channel >= 1 else icd.DEVICE_WIDE
        return icd.SimControl(command.op, channel, command.value)
    raise TypeError(f"no wire form for {type(command).__name__}")
