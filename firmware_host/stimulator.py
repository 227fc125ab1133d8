"""The host API: one Stimulator per device session.

Every command that can change what the patient receives is approved by the session's
interlock and redeemed by the link at the wire (`Link.send` takes nothing else). Telemetry
and faults run through the safety supervisor on a thread of their own, so a slow caller
never delays a stop. Leaving the `with` block always leaves the device safe: outputs
zeroed and disabled on a normal exit, an e-stop on an exception or Ctrl-C.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any

from safety import (
    Action,
    ActionKind,
    Approved,
    ChannelPlacement,
    ChannelReading,
    ChannelSetting,
    DeviceLimits,
    Interlock,
    Needle,
    Patient,
    Prescription,
    SessionSetup,
    Shape,
    Supervisor,
    TreatmentRecord,
)

from . import icd, units
from .drivers import open_transport
from .errors import DeviceRefused, EstimError, LinkError
from .link import Link, LinkLost, LinkStats

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class DeviceFault:
    """A FAULT the device sent, in plain terms; channel None means device-wide."""

    code: str
    channel: int | None
    device_time_s: float


@dataclass(frozen=True)
class Notice:
    """Something the clinician must be told, in plain words, with what to do next."""

    channel: int | None
    text: str


@dataclass(frozen=True)
class DeviceStatus:
    device_time_s: float
    latched_faults: frozenset[str]
    enabled: frozenset[int]
    rx_frames: int
    rx_bad_frames: int
    rx_out_of_order: int
    tx_frames: int


SessionEvent = ChannelReading | DeviceFault | Notice | LinkLost


class Stimulator:
    """A handshaken device session guarded by an interlock and a supervisor."""

    def __init__(
        self,
        link: Link,
        setup: SessionSetup,
        *,
        record: TreatmentRecord | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if link.identity is None:
            raise LinkError("the link has no session: open() it (handshake) first")
        self.identity = link.identity
        self.record = record
        self.interlock = Interlock(setup, clock=clock, record=record)
        self.supervisor = Supervisor(self.interlock, self.identity.telemetry_hz, clock, record)
        self.readings: dict[int, ChannelReading] = {}
        self._link = link
        self._clock = clock
        self._subscribers: list[Callable[[SessionEvent], None]] = []
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._last_supervisor_estop = float("-inf")
        self._faults_cleared_before_s = float("-inf")  # device clock of the last clear
        self._log("identity", _plain(self.identity))
        latched = icd.faults_from_mask(self.identity.latched_faults)
        if latched:
            self.interlock.stop("faults latched at session start: " + ", ".join(sorted(f.name for f in latched)))
        self._unsubscribe = link.subscribe(self._events.put)
        self._worker = threading.Thread(target=self._supervise, name="stimulator-supervisor", daemon=True)
        self._worker.start()

    # --- identity and state ---------------------------------------------------------

    @property
    def limits(self) -> DeviceLimits:
        return self.interlock.setup.device

    @property
    def channels(self) -> tuple[int, ...]:
        """The channels this session declared needles for (1-based)."""
        return self.interlock.setup.channels

    @property
    def link_stats(self) -> LinkStats:
        return self._link.stats

    @property
    def tripped(self) -> str | None:
        """Why the session is stopped (latched until `clear_faults`), or None."""
        return self.interlock.tripped

    def enabled(self) -> frozenset[int]:
        return frozenset(ch for ch in self.channels if self.interlock.applied(ch)[1])

    def setting(self, channel: int) -> ChannelSetting | None:
        return self.interlock.applied(channel)[0]

    def subscribe(self, callback: Callable[[SessionEvent], None]) -> Callable[[], None]:
        """Readings, faults, notices and link loss, on the supervisor thread (keep it quick)."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def status(self) -> DeviceStatus:
        reply = self._link.wait(self._link.query(icd.GetStatus()), "GET_STATUS", REPLY_TIMEOUT_S)
        assert isinstance(reply, icd.Status)
        return DeviceStatus(
            device_time_s=reply.device_time_ms / 1000,
            latched_faults=frozenset(f.name for f in icd.faults_from_mask(reply.latched_faults)),
            enabled=units.channels_from_mask(reply.output_mask),
            rx_frames=reply.rx_frames,
            rx_bad_frames=reply.rx_bad_frames,
            rx_out_of_order=reply.rx_out_of_order,
            tx_frames=reply.tx_frames,
        )

    # --- commands -------------------------------------------------------------------

    def configure(
        self,
        channel: int,
        *,
        frequency_hz: float,
        pulse_width_us: float,
        shape: Shape = Shape.BIPHASIC,
        asym_ratio: int = 1,
        interphase_us: float = 0.0,
        burst_pulses: int = 0,
        burst_rate_hz: float = 0.0,
    ) -> None:
        """Set a channel's waveform at its present amplitude (0 mA before any ramp)."""
        current = self.setting(channel)
        amplitude = current.amplitude_ma if current else 0.0
        self.apply(ChannelSetting(channel, shape, frequency_hz, pulse_width_us, amplitude,
                                  asym_ratio, interphase_us, burst_pulses, burst_rate_hz))

    def apply(self, setting: ChannelSetting) -> None:
        """Send one complete channel setting (the interlock decides whether it may go)."""
        self._execute(self.interlock.approve_set_channel(setting))

    def enable(self, *channels: int) -> None:
        self._execute(self.interlock.approve_outputs(self.enabled() | set(channels)))

    def disable(self, *channels: int) -> None:
        self._execute(self.interlock.approve_outputs(self.enabled() - set(channels)))

    def set_amplitude(self, channel: int, amplitude_ma: float) -> None:
        """One step; increases must respect the ramp rate, decreases are immediate."""
        current = self._require_setting(channel)
        self.apply(current.with_amplitude(amplitude_ma))

    def ramp(
        self,
        channel: int,
        target_ma: float,
        cancel: threading.Event | None = None,
        on_step: Callable[[float], None] | None = None,
        gentle_down: bool = True,
    ) -> None:
        """Ramp to `target_ma` in steps the interlock plans within the prescription's rate and
        the device's step and slew; each step's wait counts from the previous step's ACK.
        Down-ramps are gentle too unless `gentle_down` is False (a stop never ramps).
        `cancel` ends the ramp where it stands; `on_step` sees each amplitude sent."""
        for wait_s, amplitude_ma in self.interlock.ramp_plan(channel, target_ma, gentle_down):
            if cancel is not None:
                if cancel.wait(wait_s):
                    return
            elif wait_s > 0:
                time.sleep(wait_s)
            self.set_amplitude(channel, amplitude_ma)
            if on_step is not None:
                on_step(amplitude_ma)

    def estop(self, reason: str = "operator e-stop") -> bool:
        """Outputs off now: ESTOP goes out of band; the session stays stopped until cleared."""
        self.interlock.stop(reason)
        acked = self._link.estop()
        self._log("estop", {"reason": reason, "acked": acked})
        return acked

    def clear_faults(self, operator: str) -> None:
        """A person clears a stop (and the device's latched faults) with every output off.

        Faults the device reported before the clear began (the FAULT that follows every
        ESTOP, say) may still be on their way; they are recorded but no longer trip the
        session. The device's clock, read just before the clear, tells them apart.
        """
        approved = self.interlock.approve_clear_faults(operator)
        self._faults_cleared_before_s = self.status().device_time_s
        self._execute(approved)

    def safe_off(self) -> None:
        """Every channel to 0 mA, then every output disabled (decreases never wait)."""
        for channel in self.channels:
            setting = self.setting(channel)
            if setting is not None and setting.amplitude_ua > 0:
                self.apply(setting.with_amplitude(0))
        if self.enabled():
            self._execute(self.interlock.approve_outputs(()))

    def sim_control(self, op: icd.SimOp, channel: int = 0, value: int = 0) -> None:
        """Simulated-device control (load, fault injection, reboot); a real device NAKs it."""
        self._execute(self.interlock.approve_sim_control(op, channel, value))

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Leave the device safe, stop supervision, close the link. Idempotent."""
        if self._closed.is_set():
            return
        try:
            if self._link.alive:
                self.safe_off()
        except (EstimError, Exception) as exc:  # whatever failed, the device must end safe
            log.error("safe shutdown failed (%s); sending ESTOP", exc)
            self._link.estop()
        finally:
            self._closed.set()
            self._unsubscribe()
            self._worker.join(timeout=1.0)
            self._log("session_closed", {"link": _plain(self._link.stats)})
            self._link.close()

    def __enter__(self) -> Stimulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.estop(f"{exc_type.__name__} during the session")
        self.close()

    # --- internals ------------------------------------------------------------------

    def _require_setting(self, channel: int) -> ChannelSetting:
        setting = self.setting(channel)
        if setting is None:
            raise EstimError(f"channel {channel} has no waveform yet: configure() it first")
        return setting

    def _execute(self, approved: Approved) -> icd.Message:
        what = type(approved.command).__name__
        try:
            future: Future[icd.Message] = self._link.send(approved)
            reply = self._link.wait(future, what, REPLY_TIMEOUT_S)
        except DeviceRefused as exc:
            self.interlock.note_rejected(approved, str(exc))
            raise
        except LinkError as exc:
            self.interlock.note_rejected(approved, str(exc))
            if not self._link.alive:
                self.interlock.stop(f"link lost: {exc}")
            raise
        self.interlock.note_acknowledged(approved)
        return reply

    def _supervise(self) -> None:
        period = 1.0 / max(self.identity.telemetry_hz, 1)
        while not self._closed.is_set():
            try:
                event = self._events.get(timeout=period / 2)
            except queue.Empty:
                event = None
            try:
                self._handle(event)
            except Exception:  # supervision must outlive any single bad event
                log.exception("supervision step failed; stopping outputs")
                self._safe_estop("internal supervision error")

    def _handle(self, event: Any) -> None:
        actions: list[Action] = []
        if isinstance(event, icd.Telemetry):
            reading = units.reading_from_telemetry(event)
            self.readings[reading.channel] = reading
            self._log("telemetry", _plain(event))
            if reading.channel in self.channels:
                actions += self.supervisor.on_reading(reading)
            self._deliver(reading)
        elif isinstance(event, icd.Fault):
            fault = _fault_event(event)
            stale = fault.device_time_s < self._faults_cleared_before_s
            self._log("fault", {"code": fault.code, "channel": fault.channel, "device_time_s": fault.device_time_s,
                                "before_clear": stale})
            if not stale:
                for action in self.supervisor.on_fault(fault.code, fault.channel):
                    if action.kind is ActionKind.ESTOP and fault.channel is None:
                        # the device already latched it and is safe; an ESTOP back would only
                        # echo (every ESTOP makes another FAULT): the supervisor tripped the session
                        self._deliver(Notice(None, action.reason))
                    else:
                        actions.append(action)
                self._deliver(fault)
        elif isinstance(event, LinkLost):
            self._log("link_lost", {"reason": str(event.reason)})
            self.interlock.stop(f"link lost: {event.reason}")
            self._deliver(event)
        if self._link.alive and self.interlock.tripped is None:
            actions += self.supervisor.poll()
            for approved in self.interlock.session_tick():
                self._execute(approved)
        for action in actions:
            self._act(action)

    def _act(self, action: Action) -> None:
        if action.kind is ActionKind.ESTOP:
            self._safe_estop(action.reason)
        elif action.kind is ActionKind.ZERO_CHANNEL and action.channel is not None:
            setting = self.setting(action.channel)
            if setting is not None and setting.amplitude_ua > 0:
                self.apply(setting.with_amplitude(0))
            if action.channel in self.enabled():
                self.disable(action.channel)
        elif action.kind is ActionKind.NOTIFY:
            self._deliver(Notice(action.channel, action.reason))

    def _safe_estop(self, reason: str) -> None:
        """Supervisor stop: trip, ESTOP, tell the clinician. Repeats while the device still
        shows output are limited to one per telemetry period."""
        now = self._clock()
        first = self.interlock.tripped is None
        if first:
            self.interlock.stop(reason)
        if first or now - self._last_supervisor_estop >= 1.0 / max(self.identity.telemetry_hz, 1):
            self._last_supervisor_estop = now
            self._link.estop()
        if first:
            self._deliver(Notice(None, reason))

    def _deliver(self, event: SessionEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("session subscriber failed on %s", type(event).__name__)

    def _log(self, kind: str, data: dict[str, Any]) -> None:
        if self.record is not None:
            self.record.append(kind, data)


def _fault_event(message: icd.Fault) -> DeviceFault:
    try:
        code = icd.FaultCode(message.code).name
    except ValueError:
        code = f"UNKNOWN_{message.code}"
    channel = None if message.channel == icd.DEVICE_WIDE else message.channel + 1
    return DeviceFault(code, channel, message.device_time_ms / 1000)


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def connect(url: str = "sim://", handshake_timeout: float = 2.0) -> Link:
    """Open the byte path at `url` and handshake; nothing else is written before IDENTITY."""
    link = Link(open_transport(url))
    try:
        link.open(handshake_timeout)
    except BaseException:
        link.close()
        raise
    return link


def open(  # noqa: A001 - the natural name for the public entry point
    url: str = "sim://",
    *,
    prescription: Prescription,
    placements: Mapping[int, ChannelPlacement],
    needles: Mapping[int, Needle] | None = None,
    patient: Patient | None = None,
    record: TreatmentRecord | None = None,
    handshake_timeout: float = 2.0,
) -> Stimulator:
    """Open the device at `url`, handshake, and start a supervised session.

    Nothing is written to the device before the handshake succeeded; a safety refusal of
    the session set-up (placement, contraindication, prescription) closes the link again.
    """
    link = connect(url, handshake_timeout)
    try:
        setup = SessionSetup(
            device=units.device_limits(link.identity),
            prescription=prescription,
            placements=dict(placements),
            needles=dict(needles or {}),
            patient=patient or Patient(),
        )
        return Stimulator(link, setup, record=record)
    except BaseException:
        link.close()
        raise
