"""Supervision from telemetry and device faults.

Tolerances: the applied amplitude may differ from the commanded one by at most 1 µA
(the device's resolution, absorbing float conversion); frequency must match to the mHz
and phase width to the µs. A reading may match the applied state, a state applied within
the last two telemetry periods (it was sampled before the newest ACK arrived), or a
command still in flight. Every ESTOP also trips the interlock at once; ZERO_CHANNEL also holds the channel
so it cannot be raised again until it has been brought to 0 mA and disabled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .interlock import Interlock
from .record import TreatmentRecord
from .settings import ChannelReading

STALE_PERIODS = 3
READING_AGE_PERIODS = 2  # a reading may show a state applied up to this long ago
MIN_LOAD_OHM = 100.0
AMPLITUDE_TOL_UA = 1
CHANNEL_FAULTS = frozenset({"OPEN_CIRCUIT", "COMPLIANCE"})   # device zeroes the channel itself


class ActionKind(str, Enum):
    ESTOP = "estop"
    ZERO_CHANNEL = "zero_channel"
    NOTIFY = "notify"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    channel: int | None
    reason: str


class Supervisor:
    """Turns readings, faults and the passing of time into actions for the link."""

    def __init__(self, interlock: Interlock, telemetry_hz: float, clock: Callable[[], float] = time.monotonic,
                 record: TreatmentRecord | None = None) -> None:
        if not telemetry_hz > 0:
            raise ValueError("telemetry_hz must be positive")
        self._interlock = interlock
        self._clock = clock
        self._record = record
        # three frames missed: the third was due 3 periods after the last one; half a period
        # of grace keeps an on-time but jittered frame from counting as missing
        self._stale_after_s = (STALE_PERIODS + 0.5) / telemetry_hz
        self._reading_age_s = READING_AGE_PERIODS / telemetry_hz
        self._offset_s = float("inf")  # host clock minus device clock, at its smallest
        start = clock()
        self._last_seen = {ch: start for ch in interlock.setup.channels}
        self._stale_reported = False

    def on_reading(self, r: ChannelReading) -> list[Action]:
        if r.channel not in self._last_seen:
            return self._estop(f"telemetry for channel {r.channel}, which is not part of this session")
        self._last_seen[r.channel] = self._clock()
        self._stale_reported = False
        mismatch = self._mismatch(r)
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
        if channel is not None and code in CHANNEL_FAULTS:
            self._interlock.note_device_zeroed(channel, code)
            text = "open circuit" if code == "OPEN_CIRCUIT" else "output voltage at its compliance limit"
            return self._notify(channel, f"the device stopped channel {channel}: {text}. Check the needles and "
                                         f"the lead, then start again from 0 mA")
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
        return self._estop(f"no telemetry from channel {stale[0]} for {now - self._last_seen[stale[0]]:.2f} s. "
                           f"Check the connection to the device before clearing the stop")

    def _mismatch(self, r: ChannelReading) -> str:
        # How long ago (host clock) the device sampled this reading: the smallest host-minus-
        # device time seen is the link's latency floor, so a reading that waited in a queue is
        # judged against the states applied since it was taken, not only the latest one.
        now = self._clock()
        self._offset_s = min(self._offset_s, now - r.device_time_s)
        sampled_ago_s = max(0.0, now - (r.device_time_s + self._offset_s))
        exp = self._interlock.expected(r.channel, within_s=sampled_ago_s + self._reading_age_s)
        amp_ua = round(r.amplitude_ma * 1000)
        if r.enabled not in exp.enabled:
            return f"output is {'on' if r.enabled else 'off'}, not as commanded"
        if min(abs(amp_ua - a) for a in exp.amplitudes_ua) > AMPLITUDE_TOL_UA:
            return f"amplitude {r.amplitude_ma:g} mA differs from the commanded amplitude"
        if exp.frequencies_mhz and round(r.frequency_hz * 1000) not in exp.frequencies_mhz:
            return f"frequency {r.frequency_hz:g} Hz differs from the commanded frequency"
        if exp.phases_us and round(r.pulse_width_us) not in exp.phases_us:
            return f"phase width {r.pulse_width_us:g} µs differs from the commanded phase width"
        return ""

    def _estop(self, reason: str) -> list[Action]:
        if not self._interlock.tripped:      # already latched: only repeat the ESTOP to the link
            self._interlock.stop(reason)
        return self._emit([Action(ActionKind.ESTOP, None, reason)])

    def _zero(self, channel: int, reason: str) -> list[Action]:
        self._interlock.hold(channel, reason)
        return self._emit([Action(ActionKind.ZERO_CHANNEL, channel, reason),
                           Action(ActionKind.NOTIFY, channel, reason)])

    def _notify(self, channel: int, reason: str) -> list[Action]:
        return self._emit([Action(ActionKind.NOTIFY, channel, reason)])

    def _emit(self, actions: list[Action]) -> list[Action]:
        if self._record is not None:
            for a in actions:
                self._record.append("action", {"kind": a.kind.value, "channel": a.channel, "reason": a.reason})
        return actions
