"""The interlock: the only maker of `Approved` commands.

Two views of each channel are kept. The *applied* view advances only when the link
reports the device's ACK (`note_acknowledged`), because a NAKed or lost command never
reached the patient. The *worst-case* view adds every approved command still in flight,
because it may reach the patient at any moment; zero start, step and ramp checks use the
worst case, and one increase per channel may be in flight at a time. What may rise, and
how fast, is `dynamic.py`: amplitude, strength (threshold multiples) and r.m.s. current each
on a ramp clock that runs from the device's ACKs, so the host is never faster than its check.

Every limit that comes from the person connected (thresholds and the ceilings they set on
each waveform, the sensitivity, screening and placement across every channel) is the
session's `Envelope`, fixed at set-up and asked on every SET_CHANNEL, whoever built it.

Stopping never needs approval: `stop()` latches the trip at once (the caller writes ESTOP
to the wire first); only `approve_clear_faults` with a person's name, then its ACK,
unlatches. The treatment record is written after every decision; a record that can no
longer be written trips the interlock (treatment that cannot be documented does not go
on) and never stops a stop.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .approvals import (APPROVAL_TTL_S, MINT, Approved, ClearFaults, Command, SetChannel, SetOutputs,
                        SimControl, clear_refusal, command_json, operator_name)
from .dynamic import RAMP_TICK_S, ChannelDynamics, refusal_text
from .errors import InterlockStateError, Refusal
from .history import AppliedDose, AppliedHistory
from .journal import journaled
from .envelope import ChannelGuard, Envelope, stricter
from .limits import DeviceLimits, EffectiveLimits, Needle, Prescription, effective_limits
from .placement import ChannelPlacement
from .record import RecordWriteError, TreatmentRecord
from .rules import check_setting
from .settings import ChannelSetting, exact_int

SIM_REBOOT = 3         # SimControl op that restarts the simulated device in its safe state


@dataclass(frozen=True)
class SessionSetup:
    """Everything fixed for the session; channels are those with a declared placement. The
    envelope holds every limit that comes from the person connected (`safety.envelope`)."""

    device: DeviceLimits
    prescription: Prescription
    placements: Mapping[int, ChannelPlacement]
    needles: Mapping[int, Needle] = field(default_factory=dict)
    envelope: Envelope = field(default_factory=Envelope.undeclared)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(sorted(self.placements))

    def needle(self, channel: int) -> Needle:
        return self.needles.get(channel, Needle())


@dataclass(frozen=True)
class Expected:
    """States telemetry may legitimately show on a channel: the applied state, states applied
    since the reading was sampled, and commands in flight. `settings` holds whole settings
    (None: a channel this session has not configured, whose registers it does not own)."""

    settings: frozenset[ChannelSetting | None]
    enabled: frozenset[bool]


@dataclass
class _Channel:
    limits: EffectiveLimits
    dynamics: ChannelDynamics
    guard: ChannelGuard
    setting: ChannelSetting | None = None
    enabled: bool = False
    hold: str | None = None


class Interlock:
    """Approves commands against the layered limits and the dynamic rules; records everything."""

    def __init__(self, setup: SessionSetup, clock: Callable[[], float] = time.monotonic,
                 record: TreatmentRecord | None = None) -> None:
        self.setup = setup
        self._clock = clock
        self._record = record
        self._lock = threading.RLock()
        self._journal = threading.local()  # entries a journaled call writes after releasing the lock
        self._tripped: str | None = None
        self._epoch = 0
        envelope = setup.envelope
        self.sensitivity = stricter(setup.prescription.sensitivity, envelope.sensitivity)
        prescription = setup.prescription.model_copy(update={"sensitivity": self.sensitivity})
        refusals, self.cautions = envelope.setup_verdict(setup.placements, self.sensitivity)
        channels: dict[int, _Channel] = {}
        for ch in setup.channels:
            try:
                limits = effective_limits(setup.device, prescription, ch, setup.needle(ch))
                channels[ch] = _Channel(limits, ChannelDynamics(limits), ChannelGuard(envelope, setup.placements[ch]))
            except Refusal as refusal:
                refusals.append(refusal)
        self._channels = channels
        self._serials = itertools.count(1)
        self._outstanding: dict[int, Approved] = {}   # minted, not yet consumed
        self._in_flight: dict[int, Approved] = {}     # SetChannel/SetOutputs approved, not yet ACK/NAK
        self._awaiting: dict[int, Approved] = {}      # consumed, waiting for ACK/NAK
        self._last_sent = 0                            # serial of the newest approval consumed
        self._session_start: float | None = None
        self._session_ended = False
        self._history = AppliedHistory(channels)
        self._session_s = min(c.limits.session_s for c in channels.values()) if channels else 0.0
        for ch in channels:  # the power-on state is the first applied state
            self._applied_changed(ch, clock())
        self._log("session_setup", {"channels": list(setup.channels), "envelope": envelope.as_record(),
                                    "sensitivity": self.sensitivity.value,
                                    "prescription": setup.prescription.model_dump(mode="json"),
                                    "sites": {str(ch): [str(p.a), str(p.b)] for ch, p in setup.placements.items()},
                                    "needles": {str(ch): vars(setup.needle(ch)) for ch in setup.channels}})
        for caution in self.cautions:
            self._log("caution", {"message": caution})
        if refusals:
            for refusal in refusals:
                self._log("refusal", refusal.as_record())
            raise refusals[0]

    # ---- queries -------------------------------------------------------------------

    @property
    def tripped(self) -> str | None:
        """The reason of the latched trip, or None."""
        return self._tripped

    def limits(self, channel: int) -> EffectiveLimits:
        return self._state(channel).limits

    def applied(self, channel: int) -> tuple[ChannelSetting | None, bool]:
        """The device-acknowledged setting and output state of a channel."""
        state = self._state(channel)
        return state.setting, state.enabled

    def expected(self, channel: int, within_s: float = 0.0) -> Expected:
        """What telemetry may legitimately show: the applied state, any state applied in the
        last `within_s` seconds (a reading is a snapshot from the past), or a command in flight."""
        with self._lock:
            state = self._state(channel)
            settings = [state.setting] + [a.command.setting for a in self._pending(channel, SetChannel)]
            enabled = {state.enabled} | {channel in a.command.enabled for a in self._pending(channel, SetOutputs)}
            for setting, on in self._history.since(channel, self._clock() - within_s):
                settings.append(setting)
                enabled.add(on)
            return Expected(frozenset(settings), frozenset(enabled))

    def session_remaining_s(self) -> float:
        if self._session_start is None:
            return self._session_s
        return self._session_s - (self._clock() - self._session_start)

    def session_expired(self) -> bool:
        return self._session_start is not None and self.session_remaining_s() <= 0

    def applied_doses(self) -> list[AppliedDose]:
        """Total time per channel in each applied state, up to now (for the output summary)."""
        with self._lock:
            return self._history.doses(self._clock())

    def highest_amplitude_now(self, waveform: ChannelSetting) -> float:
        """The largest amplitude (mA) of `waveform` the ramp rules accept on its channel now:
        what a streaming engine may send without being refused (never above the static cap
        nor the patient's ceiling; 0 for a waveform the envelope refuses)."""
        with self._lock:
            state = self._state(waveform.channel)
            if self._pending(waveform.channel, SetChannel) or self._pending(waveform.channel, SetOutputs):
                return self._lowest_ua(waveform.channel) / 1000
            try:
                ceiling = state.guard.ceiling(waveform)
            except Refusal:
                return 0.0
            cap_ua = state.dynamics.highest_amplitude_ua(waveform, self._lowest_ua(waveform.channel), self._clock())
            caps = [cap_ua, int(state.limits.max_amplitude_ma * 1000)]
            if ceiling is not None:
                caps.append(round(ceiling.amplitude_ma * 1000) // waveform.asym_ratio * waveform.asym_ratio)
            return min(caps) / 1000

    def highest_allowed(self, waveform: ChannelSetting) -> tuple[float, Refusal | None]:
        """The highest amplitude of `waveform` the static rules and the envelope allow on its
        channel, and the refusal just above it (see `ChannelGuard.highest`)."""
        with self._lock:
            state = self._state(waveform.channel)
            return state.guard.highest(waveform, state.limits)

    # ---- approvals -----------------------------------------------------------------

    @journaled
    def approve_set_channel(self, setting: ChannelSetting) -> Approved:
        with self._lock:
            now = self._clock()
            self._purge(now)
            state = self._state(setting.channel, requested=setting)
            refusals, warnings = self._verdict(setting, state)
            if refusals:
                for refusal in refusals[1:]:
                    self._log("refusal", refusal.as_record())
                self._refuse(refusals[0])
            self._check_increase(setting, state, now)
            return self._mint(SetChannel(setting), now, warnings)

    def verdict(self, setting: ChannelSetting) -> tuple[list[Refusal], tuple[str, ...]]:
        """What every static rule and the patient's envelope say of `setting` (refusals, then
        warnings); the ramp rules are not asked: they depend on when it is sent."""
        with self._lock:
            return self._verdict(setting, self._state(setting.channel, requested=setting))

    @staticmethod
    def _verdict(setting: ChannelSetting, state: _Channel) -> tuple[list[Refusal], tuple[str, ...]]:
        static = check_setting(setting, state.limits)
        envelope = state.guard.refusal(setting)  # the patient's envelope, on every frame
        return [*static.refusals, *([envelope] if envelope else [])], static.warnings


    def _check_increase(self, setting: ChannelSetting, state: _Channel, now: float) -> None:
        ch = setting.channel
        # The device may be at the applied level or at any command still in flight when this
        # one arrives (in order, but some may be lost): an increase counts from the lowest.
        rises = state.dynamics.increases(setting, self._lowest_ua(ch), now)
        if not rises:
            return
        if self._tripped:
            self._state_error(f"increase on channel {ch} refused: session stopped ({self._tripped})")
        if not state.enabled or self._pending(ch, SetOutputs):
            self._refuse(Refusal("dynamic.zero_start",
                                 f"amplitude {setting.amplitude_ma:g} mA on a disabled channel {ch} is refused: "
                                 f"enable the channel at 0 mA, then ramp", value=setting.amplitude_ma, limit=0.0,
                                 channel=ch))
        if self.session_expired():
            self._refuse(Refusal("session.expired", f"session time is over: no increase on channel {ch}",
                                 value=self._session_s, limit=self._session_s, channel=ch))
        if state.hold:
            self._refuse(Refusal("supervision.hold", f"channel {ch} is held at zero ({state.hold}): "
                                 f"disable it and start again from 0 mA", value=setting.amplitude_ma,
                                 limit=0.0, channel=ch))
        if self._pending(ch, SetChannel):
            self._state_error(f"a change on channel {ch} is still waiting for the device")
        for rise in rises:
            if not (rise.too_large or rise.too_fast):
                continue
            if rise.quantity == "amplitude":
                rule = "device.max_step" if rise.too_large else f"{state.limits.sources['ramp']}.ramp_rate"
            else:
                rule = "dynamic.intensity_step" if rise.too_large else "dynamic.intensity_ramp"
            highest = state.dynamics.highest_amplitude_ua(setting, self._lowest_ua(ch), now) / 1000
            self._refuse(Refusal(rule, refusal_text(ch, setting, rise, highest), value=rise.size_ma,
                                 limit=rise.step_ma if rise.too_large else rise.allowed_ma, channel=ch,
                                 detail=rise.quantity))

    @journaled
    def approve_outputs(self, enabled: Iterable[int]) -> Approved:
        """Outputs enabled afterwards; enabling needs a configured channel at exactly 0 mA."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            target = frozenset(self._channel_number(ch) for ch in enabled)
            for ch in sorted(target):
                state = self._state(ch)
                if state.enabled and not any(ch not in a.command.enabled for a in self._pending(ch, SetOutputs)):
                    continue  # on in every state the device may be in: not a (re-)enable
                if self._tripped:
                    self._state_error(f"enabling channel {ch} refused: session stopped ({self._tripped})")
                if self.session_expired():
                    self._refuse(Refusal("session.expired", f"session time is over: channel {ch} stays off",
                                         value=self._session_s, limit=self._session_s, channel=ch))
                if state.setting is None:
                    self._refuse(Refusal("dynamic.not_configured", f"channel {ch} has no setting yet",
                                         value=None, limit="a setting", channel=ch))
                worst = self._worst_ua(ch)
                if worst:
                    self._refuse(Refusal("dynamic.zero_start", f"enabling channel {ch} at {worst / 1000:g} mA is "
                                         f"refused: outputs start at 0 mA", value=worst / 1000, limit=0.0,
                                         channel=ch))
            if self._session_start is None and target:
                self._session_start = now
                self._log("session_start", {"session_s": self._session_s})
            return self._mint(SetOutputs(target), now)

    @journaled
    def approve_clear_faults(self, operator: str, latched: Iterable[str] = (),
                             named: Iterable[str] = ()) -> Approved:
        """Only after a trip, with every output off, and with the person's name or initials.
        `latched` are the faults the device reports latched now. A stop or a lost controller
        may be cleared anywhere; any other fault only in a session that treats nobody (no
        channels, so nothing is switched on after it in that run), named by the person in
        `named` (`approvals.clear_refusal`)."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            if not self._tripped:
                self._state_error("there is no stop to clear")
            try:
                name = operator_name(operator)
            except Refusal as refusal:
                self._refuse(refusal)
            refusal = clear_refusal(frozenset(latched), frozenset(named), treating=bool(self._channels))
            if refusal is not None:
                self._refuse(refusal)
            if any(self._may_be_enabled(ch) for ch in self._channels):
                self._state_error("disable every output before clearing the stop")
            return self._mint(ClearFaults(name), now)

    @journaled
    def approve_sim_control(self, op: int, channel: int, value: int) -> Approved:
        """Simulated-device control: always approved, always recorded."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            numbers = [exact_int(v) for v in (op, channel, value)]
            if None in numbers:
                self._refuse(Refusal("setting.invalid_number", f"simulator control {op!r}, {channel!r}, {value!r} "
                                     "is not three whole numbers", value=(op, channel, value), limit="integers"))
            return self._mint(SimControl(*numbers), now)

    @journaled
    def ramp_plan(self, channel: int, target_ma: float, gentle_down: bool = False) -> list[tuple[float, float]]:
        """Steps to reach `target_ma`: (seconds to wait after the previous step's ACK, or from
        now for the first, then amplitude mA). A decrease is one immediate step, or with
        `gentle_down` steps at the ramp rate (comfort, not safety: any step may be cut short)."""
        with self._lock:
            state = self._state(channel)
            if state.setting is None:
                self._state_error(f"channel {channel} has no setting to ramp")
            goal = state.setting.with_amplitude(target_ma)
            refusals, _ = self._verdict(goal, state)
            if refusals:
                self._refuse(refusals[0])
            base_ua, target_ua = self._worst_ua(channel), goal.amplitude_ua
            lim, asym = state.limits, goal.asym_ratio
            step_ua = int(min(lim.max_step_ma, lim.ramp_ma_per_s * RAMP_TICK_S) * 1000) // asym * asym
            step_ua = max(step_ua, asym)
            if target_ua <= base_ua:
                if not gentle_down:
                    return [(0.0, target_ua / 1000)]
                levels = list(range(base_ua // asym * asym - step_ua, target_ua, -step_ua)) + [target_ua]
                return [(0.0 if i == 0 else (levels[i - 1] - ua) / 1000 / lim.ramp_ma_per_s, ua / 1000)
                        for i, ua in enumerate(levels)]
            # the first step waits for every ramp clock; each later one for its own size
            plan, level = [], base_ua
            while level < target_ua:
                nxt = min(target_ua, level // asym * asym + step_ua)
                if plan:
                    wait = (nxt - level) / 1000 / lim.ramp_ma_per_s
                else:
                    now = self._clock()
                    wait = state.dynamics.wait_s(goal.with_amplitude(nxt / 1000), self._lowest_ua(channel), now)
                    if wait == math.inf:  # never by waiting: say which rule stands in the way
                        self._check_increase(goal.with_amplitude(nxt / 1000), state, now)
                        self._state_error(f"channel {channel} cannot be ramped now")
                plan.append((wait, nxt / 1000))
                level = nxt
            return plan

    @journaled
    def session_tick(self) -> list[Approved]:
        """Call periodically: near the end ramps amplitudes down so they reach 0 at the end,
        then switches every output off."""
        with self._lock:
            if self._session_start is None:
                return []
            remaining = max(0.0, self.session_remaining_s())
            out = []
            for ch, state in self._channels.items():
                if state.setting is None or self._pending(ch, SetChannel):
                    continue
                asym = state.setting.asym_ratio
                ceiling_ua = int(state.limits.ramp_ma_per_s * remaining * 1000) // asym * asym
                if state.setting.amplitude_ua > ceiling_ua:
                    out.append(self.approve_set_channel(state.setting.with_amplitude(ceiling_ua / 1000)))
            if remaining <= 0 and not self._session_ended:
                self._session_ended = True
                self._log("session_end", {})
            if remaining <= 0 and any(self._may_be_enabled(ch) for ch in self._channels) \
                    and not any(isinstance(a.command, SetOutputs) for a in self._in_flight.values()):
                out.append(self.approve_outputs(()))
            return out

    # ---- events from the link and the supervisor -----------------------------------------

    def stop(self, reason: str) -> None:
        """Trip: latched until a person clears it. Pending approvals become void. The state
        changes first; recording it comes after and cannot undo it."""
        with self._lock:
            self._trip(reason, self._clock())
        self._log("stop", {"reason": reason})

    def note_acknowledged(self, approved: Approved) -> None:
        """The device ACKed this command: the applied view advances."""
        with self._lock:
            approved.verify()
            now = self._clock()
            if not approved.issued_by(self):
                raise InterlockStateError("approval belongs to another interlock")
            late = approved.epoch != self._epoch
            if not late:
                self._apply_acknowledged(approved, now)
        if late:  # recorded after letting go of the lock, like every other decision
            self._log("ack_after_stop", {"serial": approved.serial})
            return
        self._log("ack", {"serial": approved.serial})
        if isinstance(approved.command, ClearFaults):
            self._log("cleared", {"operator": approved.command.operator})

    def _apply_acknowledged(self, approved: Approved, now: float) -> None:
        """The applied view after the device ACKed `approved` (under the lock)."""
        if self._awaiting.pop(approved.serial, None) is None:
            raise InterlockStateError(f"approval {approved.serial} was not sent (or already acknowledged)")
        self._in_flight.pop(approved.serial, None)
        cmd = approved.command
        if isinstance(cmd, SetChannel):
            state = self._channels[cmd.setting.channel]
            before = state.setting.amplitude_ua if state.setting else 0
            state.setting = cmd.setting
            if state.enabled:
                state.dynamics.applied(cmd.setting, before, now)
            self._applied_changed(cmd.setting.channel, now)
        elif isinstance(cmd, SetOutputs):
            for ch, state in self._channels.items():
                if ch in cmd.enabled and not state.enabled:
                    state.dynamics.enabled(state.setting, now)
                elif ch not in cmd.enabled:
                    state.dynamics.disabled()
                state.enabled = ch in cmd.enabled
                self._applied_changed(ch, now)
        elif isinstance(cmd, ClearFaults):
            self._tripped = None
        elif cmd.op == SIM_REBOOT:
            self._trip("simulated device rebooted", now)

    def note_rejected(self, approved: Approved, reason: str = "") -> None:
        """The device NAKed (or never answered) this command: nothing changed."""
        with self._lock:
            approved.verify()
            self._in_flight.pop(approved.serial, None)
            self._awaiting.pop(approved.serial, None)
        self._log("nak", {"serial": approved.serial, "reason": reason})

    def note_device_zeroed(self, channel: int, reason: str) -> None:
        """The device itself set a channel to 0 mA and disabled it (open circuit, compliance)."""
        with self._lock:
            state = self._state(channel)
            state.setting = state.setting.with_amplitude(0) if state.setting else None
            state.enabled = False
            state.dynamics.disabled()
            self._applied_changed(channel, self._clock())
        self._log("device_zeroed", {"channel": channel, "reason": reason})

    def hold(self, channel: int, reason: str) -> None:
        """Refuse increases on a channel until it is back at 0 mA and disabled."""
        with self._lock:
            self._state(channel).hold = reason
        self._log("hold", {"channel": channel, "reason": reason})

    # ---- internals -----------------------------------------------------------------

    def _trip(self, reason: str, now: float) -> None:
        """Latch a stop (caller holds the lock): void every approval, every channel to its safe state."""
        if self._tripped is None:
            self._tripped = reason
        self._epoch += 1
        self._outstanding.clear()
        self._in_flight.clear()
        self._awaiting.clear()
        for ch, state in self._channels.items():
            state.setting = state.setting.with_amplitude(0) if state.setting else None
            state.enabled = False
            state.dynamics.disabled()
            self._applied_changed(ch, now)

    @journaled
    def _redeem(self, approved: Approved) -> None:
        with self._lock:
            if self._outstanding.get(approved.serial) is not approved:
                raise InterlockStateError(f"approval {approved.serial} is used, void or not from this interlock")
            del self._outstanding[approved.serial]
            if approved.serial < self._last_sent:
                # every check assumed approvals reach the device in the order they were given: one
                # given before an approval already sent (a decrease to 0, say) could now be a jump
                self._in_flight.pop(approved.serial, None)
                self._state_error(f"approval {approved.serial} was given before approval {self._last_sent}, which "
                                  f"has already been sent: it is void; ask for it again")
            self._last_sent = approved.serial
            age = self._clock() - approved.issued_s
            if age > APPROVAL_TTL_S:
                self._in_flight.pop(approved.serial, None)
                self._refuse(Refusal("approval.expired", f"approval {approved.serial} expired: unused for "
                                     f"{age:.2f} s (limit {APPROVAL_TTL_S:g} s)", value=age, limit=APPROVAL_TTL_S))
            self._awaiting[approved.serial] = approved
        self._log("consumed", {"serial": approved.serial})

    def _mint(self, command: Command, now: float, warnings: tuple[str, ...] = ()) -> Approved:
        """Record first: a command that cannot be documented is not approved."""
        approved = Approved(MINT, command, next(self._serials), now, self._epoch, self, warnings)
        for text in warnings:
            self._log("warning", {"serial": approved.serial, "message": text})
        self._log("approved", {"serial": approved.serial, "command": command_json(command)})
        self._outstanding[approved.serial] = approved
        if isinstance(command, (SetChannel, SetOutputs)):
            self._in_flight[approved.serial] = approved
        return approved

    def _purge(self, now: float) -> None:
        """Approvals that expired unused can no longer reach the device: stop counting them
        in the worst case (they stay outstanding so consume() reports the expiry)."""
        for serial, approved in self._outstanding.items():
            if now - approved.issued_s > APPROVAL_TTL_S:
                self._in_flight.pop(serial, None)

    def _pending(self, channel: int, kind: type) -> list[Approved]:
        return [a for a in self._in_flight.values() if isinstance(a.command, kind)
                and (kind is SetOutputs or a.command.setting.channel == channel)]

    def _levels_ua(self, channel: int) -> list[int]:
        state = self._channels[channel]
        return [state.setting.amplitude_ua if state.setting else 0] + [
            a.command.setting.amplitude_ua for a in self._pending(channel, SetChannel)]

    def _worst_ua(self, channel: int) -> int:
        return max(self._levels_ua(channel))

    def _lowest_ua(self, channel: int) -> int:
        return min(self._levels_ua(channel))

    def _may_be_enabled(self, channel: int) -> bool:
        return self._channels[channel].enabled or any(
            channel in a.command.enabled for a in self._pending(channel, SetOutputs))

    def _applied_changed(self, channel: int, now: float) -> None:
        state = self._channels[channel]
        if state.hold and not state.enabled and (state.setting is None or state.setting.amplitude_ua == 0):
            state.hold = None
        self._history.changed(channel, state.setting, state.enabled, now)

    def _channel_number(self, channel: Any) -> int:
        number = exact_int(channel)
        if number is None or number not in self._channels:
            self._refuse(Refusal("setup.channel", f"channel {channel!r} has no declared needles in this session",
                                 value=channel, limit=list(self._channels), channel=None))
        return number

    def _state(self, channel: int, requested: ChannelSetting | None = None) -> _Channel:
        state = self._channels.get(channel) if type(channel) is int else None
        if state is None:
            self._refuse(Refusal("setup.channel", f"channel {channel} has no declared needles in this session",
                                 value=channel, limit=list(self._channels), channel=None,
                                 detail=str(requested) if requested else ""))
        return state

    def _refuse(self, refusal: Refusal) -> Any:
        self._log("refusal", refusal.as_record())
        raise refusal

    def _state_error(self, message: str) -> Any:
        self._log("state_error", {"message": message})
        raise InterlockStateError(message)

    def _log(self, kind: str, data: dict[str, Any]) -> None:
        """Record now, or when the journaled call around this one has let go of the lock."""
        entries = getattr(self._journal, "entries", None)
        if entries is not None:
            entries.append((kind, data))
        else:
            self._write(kind, data)

    def _write_journal(self) -> bool:
        entries, self._journal.entries = self._journal.entries, None
        return all([self._write(kind, data) for kind, data in entries])

    def _write(self, kind: str, data: dict[str, Any]) -> bool:
        """Write to the record; False (and the session tripped) when it can no longer be written."""
        if self._record is None:
            return True
        try:
            self._record.append(kind, data)
            return True
        except RecordWriteError as exc:
            with self._lock:
                self._trip(str(exc), self._clock())
            return False
