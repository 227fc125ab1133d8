"""One output channel: its registers, the SET_CHANNEL range checks of ICD §4, and charge counting.

Charge is counted pulse by pulse, as firmware driving a pulse timer would: each pulse delivers
`amplitude_ua × phase_us` pC of cathodic (primary-phase) charge when it starts. The pulse train
restarts when the channel is enabled or its timing (frequency, burst) changes, not when only the
amplitude or phase changes, so a ramp does not add pulses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .options import DeviceOptions
from .protocol import SET_CHANNEL

MONOPHASIC = 2
US_PER_MHZ_PERIOD = 10**9  # one period of 1 mHz, in µs


@dataclass(frozen=True)
class Registers:
    """The SET_CHANNEL fields of one channel; all zero at power-on (ICD §3)."""

    shape: int = 0
    asym_ratio: int = 0
    burst_pulses: int = 0
    frequency_mhz: int = 0
    burst_rate_mhz: int = 0
    phase_us: int = 0
    interphase_us: int = 0
    amplitude_ua: int = 0

    @classmethod
    def from_body(cls, body: bytes) -> tuple[int, Registers]:
        """(channel, registers) from a 20-byte SET_CHANNEL body."""
        ch, shape, asym, burst, freq, rate, phase, gap, amp = SET_CHANNEL.unpack(body)
        return ch, cls(shape, asym, burst, freq, rate, phase, gap, amp)

    def bursting(self) -> bool:
        return self.burst_pulses >= 2

    def out_of_range(self, o: DeviceOptions) -> bool:
        """True when SET_CHANNEL must be NAKed OUT_OF_RANGE (ICD §4)."""
        rates_ok = o.min_frequency_mhz <= self.frequency_mhz <= o.max_frequency_mhz and (
            not self.bursting()
            or (
                o.min_frequency_mhz <= self.burst_rate_mhz <= o.max_frequency_mhz
                and self.burst_pulses * self.burst_rate_mhz <= self.frequency_mhz  # burst fits its period
            )
        )
        return not (
            rates_ok
            and self.shape <= MONOPHASIC
            and (self.shape == MONOPHASIC or self.asym_ratio >= 1)
            and self.phase_us <= o.max_phase_us
            and self.interphase_us <= o.max_phase_us
            and self.amplitude_ua <= o.max_amplitude_ua
            and self.amplitude_ua * self.phase_us <= o.max_phase_charge_nc * 1000
        )

    def same_timing(self, other: Registers) -> bool:
        return (self.frequency_mhz, self.burst_pulses, self.burst_rate_mhz) == (
            other.frequency_mhz,
            other.burst_pulses,
            other.burst_rate_mhz,
        )

    def pulses_before(self, elapsed_us: int) -> int:
        """Pulses started in [0, elapsed_us) of a train that began with a pulse at 0."""
        f, rate, n = self.frequency_mhz, self.burst_rate_mhz, self.burst_pulses
        if elapsed_us <= 0 or f == 0:
            return 0
        if not self.bursting():
            return _ceil_div(elapsed_us * f, US_PER_MHZ_PERIOD)
        bursts = _ceil_div(elapsed_us * rate, US_PER_MHZ_PERIOD)
        into_last = elapsed_us * rate - (bursts - 1) * US_PER_MHZ_PERIOD  # µs × rate
        return (bursts - 1) * n + min(n, _ceil_div(into_last * f, rate * US_PER_MHZ_PERIOD))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Channel:
    """Registers plus the state that output control, the ramp rules and charge counting need."""

    regs: Registers = field(default_factory=Registers)
    enabled: bool = False
    ramp_from_us: int = 0  # last accepted increase, or the enable
    train_start_us: int = 0
    pulses_counted: int = 0
    charge_pc: int = 0

    def settle(self, now_us: int) -> None:
        """Add the charge of the pulses delivered since the last call."""
        if self.enabled:
            pulses = self.regs.pulses_before(now_us - self.train_start_us)
            self.charge_pc += (pulses - self.pulses_counted) * self.regs.amplitude_ua * self.regs.phase_us
            self.pulses_counted = pulses

    def apply(self, regs: Registers, now_us: int) -> None:
        self.settle(now_us)
        restart = not regs.same_timing(self.regs)
        self.regs = regs
        if restart:
            self._restart_train(now_us)

    def enable(self, now_us: int) -> None:
        self.enabled = True
        self.ramp_from_us = now_us
        self._restart_train(now_us)

    def disable(self, now_us: int, zero: bool) -> bool:
        """Disable (and optionally zero the amplitude); True when the output was on."""
        self.settle(now_us)
        was_on, self.enabled = self.enabled, False
        if zero:
            self.regs = replace(self.regs, amplitude_ua=0)
        return was_on

    def _restart_train(self, now_us: int) -> None:
        self.train_start_us = now_us
        self.pulses_counted = 0
