"""What each channel has been in, over the session: the doses for the output summary, and
the recent states a telemetry snapshot from the past may still show.

Closed spans are folded into one total per distinct (channel, setting, enabled) state, so a
session of any length keeps memory flat; only the last `RECENT_S` of changes are kept in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .settings import ChannelSetting

RECENT_S = 5.0  # applied states kept for matching telemetry snapshots

State = tuple[ChannelSetting | None, bool]  # (setting, enabled)


@dataclass(frozen=True)
class AppliedDose:
    """How long a channel spent, in total, in one applied state."""

    channel: int
    setting: ChannelSetting | None
    enabled: bool
    seconds: float


class AppliedHistory:
    """Applied states per channel; the caller holds whatever lock guards it."""

    def __init__(self, channels: Iterable[int]) -> None:
        self._open: dict[int, tuple[float, ChannelSetting | None, bool]] = {}
        self._totals: dict[tuple[int, ChannelSetting | None, bool], float] = {}
        self._recent: dict[int, deque[tuple[float, ChannelSetting | None, bool]]] = {ch: deque() for ch in channels}

    def changed(self, channel: int, setting: ChannelSetting | None, enabled: bool, now: float) -> None:
        """The channel is in this state from `now` on."""
        if channel in self._open:
            start, before, on = self._open[channel]
            key = (channel, before, on)
            self._totals[key] = self._totals.get(key, 0.0) + max(0.0, now - start)
        self._open[channel] = (now, setting, enabled)
        recent = self._recent[channel]
        recent.append(self._open[channel])
        while len(recent) > 1 and recent[1][0] < now - RECENT_S:
            recent.popleft()

    def since(self, channel: int, cutoff: float) -> list[State]:
        """Every state in force at some instant from `cutoff` on (newest first)."""
        states = []
        for t, setting, on in reversed(self._recent[channel]):
            states.append((setting, on))
            if t < cutoff:  # the state in force at the cutoff: older ones cannot show
                break
        return states

    def doses(self, now: float) -> list[AppliedDose]:
        """Total time per channel in each applied state, up to `now`."""
        totals = dict(self._totals)
        for ch, (start, setting, on) in self._open.items():
            totals[(ch, setting, on)] = totals.get((ch, setting, on), 0.0) + max(0.0, now - start)
        return [AppliedDose(ch, setting, on, seconds) for (ch, setting, on), seconds in totals.items()]
