"""Supervision from telemetry and device faults: pure decisions, no side effects on the wire.

The supervisor turns readings, faults and the passing of time into `Action`s; the session
carries them out, writing ESTOP to the wire before anything else (the interlock is tripped
after, the record written last). What it compares, and why it cannot be blinded:

- Freshness: a channel's telemetry counts as fresh only when its device time advances
  beyond every earlier reading (modulo the u32 millisecond wrap): a device that repeats
  itself is stale. Three frames missing (3.5 periods, and at least half a second) stop
  everything.
- Commanded vs applied: each reading must match, as a whole, one setting the session may
  legitimately see: the applied one, one applied since the reading was sampled (plus two
  periods), or one in flight. Amplitude within 1 µA, frequency to the mHz, phase to the
  µs, output on/off; with ICD v2 telemetry also shape, asymmetry, burst count, burst rate
  and interphase. A channel this session has not configured may show any registers left
  over from before, as long as it is off at 0 mA. A reading's age comes from the device
  clock mapped to the host clock by a low quantile of the offsets seen over the last few
  seconds, and is never taken as more than the staleness limit: one reading stamped an
  hour ahead cannot widen what is accepted.
- Charge: the growth of the device's charge counter must lie within what the possible
  settings deliver (cathodic charge = amplitude × phase × mean pulse rate), with a stated
  tolerance: 1 µC of counter resolution at each end, two pulses at each end, and 10 %.
  More than that is judged at every reading; less, over windows of 2 s (up to 10 s for
  doses too small to judge sooner). This catches a waveform the host did not command even
  on a v1 device (bursts dropped, a frame the host never approved).
- Loads: open circuit, below 100 Ω (needles touching) or above compliance zero the channel.
- Device-wide faults stop everything until a person clears them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .interlock import Interlock
from .settings import ChannelReading, ChannelSetting

STALE_PERIODS = 3
STALE_MIN_S = 0.5        # and never less than this: a busy host must not stop a fast-reporting device
READING_AGE_PERIODS = 2  # a reading may show a state applied up to this long ago
OFFSET_WINDOW_S = 3.0    # the device-to-host clock offset is estimated over this long...
OFFSET_DISCARD = 0.1     # ...as its minimum after the lowest 10 % (at least one) are set aside
MIN_LOAD_OHM = 100.0
AMPLITUDE_TOL_UA = 1
CHANNEL_FAULTS = frozenset({"OPEN_CIRCUIT", "COMPLIANCE"})   # device zeroes the channel itself
CHARGE_WINDOW_S = 2.0      # shortest charge comparison window (device time)
CHARGE_WINDOW_MAX_S = 10.0  # longest, for doses too small to judge in 2 s
CHARGE_REL_TOL = 0.10
CHARGE_RESOLUTION_UC = 1.0
_WRAP_S = 2 ** 32 / 1000   # device time is u32 milliseconds


class ActionKind(str, Enum):
    ESTOP = "estop"
    ZERO_CHANNEL = "zero_channel"
    NOTIFY = "notify"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    channel: int | None
    reason: str


@dataclass
class _ChargeWindow:
    start_t: float      # device time of the window's first reading
    start_q: float      # its charge counter (µC)
    last_t: float
    low_uc: float = 0.0
    high_uc: float = 0.0
    pulse_uc: float = 0.0  # largest charge of one pulse among the possible settings


class Supervisor:
    """Turns readings, faults and the passing of time into actions for the session."""

    def __init__(self, interlock: Interlock, telemetry_hz: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not telemetry_hz > 0:
            raise ValueError("telemetry_hz must be positive")
        self._interlock = interlock
        self._clock = clock
        # three frames missed: the third was due 3 periods after the last one; half a period
        # of grace keeps an on-time but jittered frame from counting as missing; at 20 Hz and
        # more that is under a fifth of a second, which a loaded host can lose to scheduling alone
        self._stale_after_s = max((STALE_PERIODS + 0.5) / telemetry_hz, STALE_MIN_S)
        self._reading_age_s = READING_AGE_PERIODS / telemetry_hz
        self._offsets: deque[tuple[float, float]] = deque()  # (host time, host - device time)
        start = clock()
        self._last_seen = {ch: start for ch in interlock.setup.channels}
        self._newest_device_t: dict[int, float] = {}
        self._charge: dict[int, _ChargeWindow] = {}
        self._stale_reported = False

    def on_reading(self, r: ChannelReading, received_s: float | None = None) -> list[Action]:
        """Judge one reading; `received_s` is when it arrived from the device (host clock), so a
        reading that waited behind others for the supervisor still counts as fresh when it came."""
        now = self._clock() if received_s is None else received_s
        if r.channel not in self._last_seen:
            if r.enabled or r.amplitude_ma > 0:
                return self._estop(f"channel {r.channel} is delivering current although this session never "
                                   f"switched it on. Check the device before clearing the stop")
            return []
        if self._advances(r):
            self._last_seen[r.channel] = now
            self._stale_reported = False
        sampled_ago_s = self._sampled_ago(r, now)
        mismatch = self._mismatch(r, sampled_ago_s) or self._charge_mismatch(r, sampled_ago_s)
        if mismatch:
            return self._estop(f"channel {r.channel} {mismatch}. Check the device before clearing the stop")
        if not r.enabled:
            return []
        ch, compliance_v = r.channel, self._interlock.limits(r.channel).compliance_v
        if r.load_ohm is None:
            return self._zero(ch, f"the needle circuit on channel {ch} is open. Check the needles and the lead, "
                                  f"then start the channel again from 0 mA")
        if r.load_ohm < MIN_LOAD_OHM:
            return self._zero(ch, f"load on channel {ch} is {r.load_ohm:.0f} Ω (below {MIN_LOAD_OHM:.0f} Ω): the "
                                  f"needles may be touching. Separate them, then start again from 0 mA")
        if r.compliance_limited or r.amplitude_ma * r.load_ohm / 1000 > compliance_v:
            return self._zero(ch, f"load on channel {ch} is {r.load_ohm:.0f} Ω, too high for "
                                  f"{r.amplitude_ma:g} mA within {compliance_v:g} V. Check the needles' contact, "
                                  f"then start again from 0 mA")
        return []

    def on_fault(self, code: str, channel: int | None) -> list[Action]:
        if channel is not None and code in CHANNEL_FAULTS and channel in self._last_seen:
            self._interlock.note_device_zeroed(channel, code)
            text = "open circuit" if code == "OPEN_CIRCUIT" else "output voltage at its compliance limit"
            return [Action(ActionKind.NOTIFY, channel, f"the device stopped channel {channel}: {text}. Check the "
                                                       f"needles and the lead, then start again from 0 mA")]
        where = "device-wide" if channel is None else f"on channel {channel}"
        return self._estop(f"device fault {code} ({where}). Everything is stopped; find the cause, then clear "
                           f"the stop with your name")

    def poll(self) -> list[Action]:
        """Call at least once per telemetry period: stale telemetry stops everything."""
        now = self._clock()
        stale = [ch for ch, t in self._last_seen.items() if now - t > self._stale_after_s]
        if not stale or self._stale_reported:
            return []
        self._stale_reported = True
        return self._estop(f"no new telemetry from channel {stale[0]} for {now - self._last_seen[stale[0]]:.2f} s. "
                           f"Check the connection to the device before clearing the stop")

    # --- freshness and time -------------------------------------------------------------

    def _advances(self, r: ChannelReading) -> bool:
        """True when the reading's device time is beyond every earlier one of its channel."""
        newest = self._newest_device_t.get(r.channel)
        if newest is not None and not 0 < (r.device_time_s - newest) % _WRAP_S < _WRAP_S / 2:
            return False
        self._newest_device_t[r.channel] = r.device_time_s
        return True

    def _sampled_ago(self, r: ChannelReading, now: float) -> float:
        """How long ago (host clock) the device sampled this reading. Host-minus-device time at
        its low end is the link's latency floor; it is a low quantile of the last few seconds
        of readings, not their minimum, so a reading stamped far ahead cannot drag it down, and
        the age is never taken as more than the staleness limit."""
        offset = now - r.device_time_s
        self._offsets.append((now, offset))
        while self._offsets[0][0] < now - OFFSET_WINDOW_S:
            self._offsets.popleft()
        ordered = sorted(o for _, o in self._offsets)
        floor = ordered[min(len(ordered) - 1, max(1, int(OFFSET_DISCARD * len(ordered))))]
        return min(max(0.0, offset - floor), self._stale_after_s)

    # --- commanded vs applied -------------------------------------------------------------

    def _mismatch(self, r: ChannelReading, sampled_ago_s: float) -> str:
        exp = self._interlock.expected(r.channel, within_s=sampled_ago_s + self._reading_age_s)
        if r.enabled not in exp.enabled:
            return f"output is {'on' if r.enabled else 'off'}, not as commanded"
        if any(_matches(r, s) for s in exp.settings):
            return ""
        closest = min((s for s in exp.settings if s is not None), default=None,
                      key=lambda s: abs(s.amplitude_ua - round(r.amplitude_ma * 1000)))
        return _difference(r, closest)

    def _charge_mismatch(self, r: ChannelReading, sampled_ago_s: float) -> str:
        window = self._charge.get(r.channel)
        if window is None or not 0 < r.device_time_s - window.last_t < _WRAP_S / 2:
            if window is None or r.device_time_s != window.last_t:  # first reading, or time ran backwards
                self._charge[r.channel] = _ChargeWindow(r.device_time_s, r.charge_total_uc, r.device_time_s)
            return ""
        dt = r.device_time_s - window.last_t
        exp = self._interlock.expected(r.channel, within_s=sampled_ago_s + dt + self._reading_age_s)
        rates = [_charge_rate(s) if on else 0.0 for s in exp.settings for on in exp.enabled]
        window.low_uc += min(rates) * dt
        window.high_uc += max(rates) * dt
        window.pulse_uc = max([window.pulse_uc] + [s.phase_charge_uc for s in exp.settings if s is not None])
        window.last_t = r.device_time_s
        span = r.device_time_s - window.start_t
        grown = (r.charge_total_uc - window.start_q) % 2 ** 32
        tolerance = 2 * CHARGE_RESOLUTION_UC + 4 * window.pulse_uc + CHARGE_REL_TOL * window.high_uc
        judged = span >= CHARGE_WINDOW_MAX_S or (span >= CHARGE_WINDOW_S and window.high_uc >= 10 * tolerance)
        if judged:
            self._charge[r.channel] = _ChargeWindow(r.device_time_s, r.charge_total_uc, r.device_time_s)
        # more than commanded is judged at every reading; less only over a whole window
        if grown > window.high_uc + tolerance or (judged and grown < window.low_uc - tolerance):
            self._charge[r.channel] = _ChargeWindow(r.device_time_s, r.charge_total_uc, r.device_time_s)
            return (f"delivered {grown:.0f} µC in {span:.1f} s where the commanded setting delivers "
                    f"{window.low_uc:.0f} to {window.high_uc:.0f} µC (tolerance {tolerance:.0f} µC): the device is "
                    f"not delivering what was commanded")
        return ""

    # --- actions ------------------------------------------------------------------------

    def _estop(self, reason: str) -> list[Action]:
        return [Action(ActionKind.ESTOP, None, reason)]

    def _zero(self, channel: int, reason: str) -> list[Action]:
        self._interlock.hold(channel, reason)
        return [Action(ActionKind.ZERO_CHANNEL, channel, reason), Action(ActionKind.NOTIFY, channel, reason)]


def _charge_rate(setting: ChannelSetting | None) -> float:
    """Cathodic charge per second (µC/s) a setting delivers while enabled."""
    return 0.0 if setting is None else setting.phase_charge_uc * setting.pulse_rate_hz


def _matches(r: ChannelReading, s: ChannelSetting | None) -> bool:
    """Whether one reading shows setting `s` (None: registers this session does not own,
    acceptable only at 0 mA)."""
    amp_ua = round(r.amplitude_ma * 1000)
    if s is None:
        return amp_ua == 0
    if abs(amp_ua - s.amplitude_ua) > AMPLITUDE_TOL_UA:
        return False
    if round(r.frequency_hz * 1000) != round(s.frequency_hz * 1000) or round(r.pulse_width_us) != round(
            s.pulse_width_us):
        return False
    if not r.whole_waveform:
        return True
    return (r.shape == int(s.shape) and r.asym_ratio == s.asym_ratio and r.burst_pulses == s.burst_pulses
            and round(r.interphase_us or 0) == round(s.interphase_us)
            and round((r.burst_rate_hz or 0) * 1000) == round(s.burst_rate_hz * 1000))


def _difference(r: ChannelReading, s: ChannelSetting | None) -> str:
    """The first field in which reading `r` differs from setting `s`, in plain words."""
    if s is None or abs(round(r.amplitude_ma * 1000) - s.amplitude_ua) > AMPLITUDE_TOL_UA:
        return f"amplitude {r.amplitude_ma:g} mA differs from the commanded amplitude"
    if round(r.frequency_hz * 1000) != round(s.frequency_hz * 1000):
        return f"frequency {r.frequency_hz:g} Hz differs from the commanded frequency"
    if round(r.pulse_width_us) != round(s.pulse_width_us):
        return f"phase width {r.pulse_width_us:g} µs differs from the commanded phase width"
    return (f"waveform (shape {r.shape}, asymmetry {r.asym_ratio}, burst {r.burst_pulses} at {r.burst_rate_hz:g} Hz, "
            f"interphase {r.interphase_us:g} µs) differs from the commanded one")
