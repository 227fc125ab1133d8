"""The host API: one Stimulator per device session.

Every command that can change what the patient receives is approved by the session's
interlock and redeemed by the session's link at the wire (`Link.send` takes approvals of
that interlock only). Three threads, none waiting on another to stop the output:

- the link's reader puts telemetry, faults and link loss on a queue;
- the supervisor thread judges them and acts, and renews the link's heartbeat lease as it
  goes: if it dies or sticks, heartbeats stop and the device's watchdog makes it safe;
- a delivery thread hands events to subscribers (user code never runs on the supervisor).

Stopping depends on nothing but the wire: ESTOP is written first, then the interlock is
tripped, then the record is written, and a record that cannot be written stops the session
(with ESTOP) instead of stopping the stop. Leaving the `with` block always leaves the
device safe: outputs zeroed and disabled on a normal exit, an e-stop on an exception.
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
    Envelope,
    Interlock,
    Needle,
    Prescription,
    RecordWriteError,
    SessionSetup,
    Shape,
    Supervisor,
    TreatmentRecord,
)

from . import icd, units
from .drivers import open_transport
from .errors import DeviceRebooted, DeviceRefused, EstimError, LinkError
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


class _Delivery:
    """Hands session events to subscribers on a thread of its own, through a bounded queue:
    a slow or stuck subscriber loses the oldest events (counted), never holds up supervision."""

    MAX_QUEUED = 1000

    def __init__(self) -> None:
        self.subscribers: list[Callable[[SessionEvent], None]] = []
        self.dropped = 0
        self._queue: queue.Queue[SessionEvent | None] = queue.Queue(self.MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="stimulator-delivery", daemon=True)
        self._thread.start()

    def put(self, event: SessionEvent) -> None:
        if not self.subscribers:
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=0.5)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            for callback in list(self.subscribers):
                try:
                    callback(event)
                except Exception:
                    log.exception("session subscriber failed on %s", type(event).__name__)


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
        link.bind(self.interlock)
        self.supervisor = Supervisor(self.interlock, self.identity.telemetry_hz, clock)
        self.readings: dict[int, ChannelReading] = {}
        self._link = link
        self._clock = clock
        self._period_s = 1.0 / max(self.identity.telemetry_hz, 1)
        # heartbeats go on only while the supervisor runs: a second, or as long as telemetry may
        # be missing if that is longer (a slow disk or a busy machine must not starve the watchdog;
        # a stuck supervisor still lets the device make itself safe within that plus its watchdog);
        # commands from other threads are refused once it has not run for twice that
        self._lease_s = max(3.5 * self._period_s, 1.0)
        self._unsupervised_s = 2 * self._lease_s
        self._supervised_at = clock()
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._delivery = _Delivery()
        self._closed = threading.Event()
        self._device_safe = False  # known safe since the last trip (ESTOP written, a device-wide fault, a reboot)
        self._last_supervisor_estop = float("-inf")
        self._faults_cleared_before_s = float("-inf")  # device clock of the last clear
        self._log("identity", _plain(self.identity))
        latched = icd.faults_from_mask(self.identity.latched_faults)
        if latched:
            self.interlock.stop("faults latched at session start: " + ", ".join(sorted(f.name for f in latched)))
            self._device_safe = True  # the device is in its safe state already (HELLO)
        link.lease_heartbeats(self._lease_s)
        self._unsubscribe = link.subscribe(lambda event: self._events.put((self._clock(), event)))
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

    @property
    def connected(self) -> bool:
        """The link to the device still works (False once it was lost or closed)."""
        return self._link.alive

    @property
    def events_dropped(self) -> int:
        """Events a slow subscriber did not get (the oldest are dropped first)."""
        return self._delivery.dropped

    def enabled(self) -> frozenset[int]:
        return frozenset(ch for ch in self.channels if self.interlock.applied(ch)[1])

    def setting(self, channel: int) -> ChannelSetting | None:
        return self.interlock.applied(channel)[0]

    def subscribe(self, callback: Callable[[SessionEvent], None]) -> Callable[[], None]:
        """Readings, faults, notices and link loss, on a delivery thread of their own (a slow
        callback loses the oldest events; it never delays supervision)."""
        self._delivery.subscribers.append(callback)
        return lambda: self._delivery.subscribers.remove(callback)

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
        """Outputs off now: ESTOP goes to the wire first, then the session trips (latched
        until cleared), then the record is written. True once the device ACKed the ESTOP."""
        self._device_safe = True  # the FAULT ESTOP the device answers with is this stop's echo
        acked = self._link.estop()
        self.interlock.stop(reason)
        self._log("estop", {"reason": reason, "acked": acked})
        return acked

    def clear_faults(self, operator: str, named: frozenset[str] = frozenset()) -> frozenset[str]:
        """A person clears a stop (and the device's latched faults) with every output off;
        returns the faults the device had latched just before. A stop or a lost controller
        may be cleared in a session that treats; any other fault only in a session without
        channels, and only when the person names it in `named` (the interlock's rule).

        Faults the device reported before the clear began (the FAULT that follows every
        ESTOP, say) may still be on their way; they are recorded but no longer trip the
        session. The device's clock, read just before the clear, tells them apart.
        """
        before = self.status()
        approved = self.interlock.approve_clear_faults(operator, before.latched_faults, named)
        self._faults_cleared_before_s = before.device_time_s
        self._execute(approved)
        self._device_safe = False
        return before.latched_faults

    def safe_off(self) -> None:
        """Every channel to 0 mA, then every output disabled (decreases never wait)."""
        for channel in self.channels:
            setting = self.setting(channel)
            if setting is not None and setting.amplitude_ua > 0:
                self.apply(setting.with_amplitude(0))
        if self.enabled():
            self._execute(self.interlock.approve_outputs(()))

    def sim_control(self, op: icd.SimOp, channel: int = 0, value: int = 0) -> None:
        """Simulated-device control (load, fault injection, reboot); a real device NAKs it.
        A REBOOT's ACK trips the session; the device restarts in its safe state, so no ESTOP
        follows (it would only latch on the fresh device)."""
        rebooting = op == icd.SimOp.REBOOT
        if rebooting:
            self._device_safe = True
        try:
            self._execute(self.interlock.approve_sim_control(op, channel, value))
        except BaseException:
            if rebooting and self.interlock.tripped is None:  # not rebooted: nothing is known safe
                self._device_safe = False
            raise

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Leave the device safe, stop supervision, close the link. Idempotent."""
        if self._closed.is_set():
            return
        try:
            if self._link.alive and self.interlock.tripped is None:
                self.safe_off()
        except Exception as exc:  # whatever failed, the device must end safe
            log.error("safe shutdown failed (%s); sending ESTOP", exc)
            self._link.estop()
        finally:
            self._closed.set()
            self._unsubscribe()
            self._worker.join(timeout=1.0)
            self._delivery.close()
            self._log("session_closed", {"link": _plain(self._link.stats), "events_dropped": self.events_dropped})
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
        if threading.current_thread() is not self._worker and \
                self._clock() - self._supervised_at > self._unsupervised_s:
            self.interlock.note_rejected(approved, "supervision is not running")
            self._safe_estop("supervision stopped running; nothing more is sent")
            raise LinkError("supervision is not running: the session was stopped")
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
                self._safe_estop(f"link to the device lost: {exc}")
            raise
        self.interlock.note_acknowledged(approved)
        return reply

    def _supervise(self) -> None:
        while not self._closed.is_set():
            self._supervised_at = self._clock()
            self._link.lease_heartbeats(self._lease_s)
            self._guarded(self._drain_events)
            self._guarded(self._periodic)

    def _guarded(self, step: Callable[[], None]) -> None:
        """Supervision must outlive any single bad event: a step that fails stops the outputs."""
        try:
            step()
        except Exception:
            log.exception("supervision step failed; stopping outputs")
            self._safe_estop("internal supervision error")

    def _drain_events(self) -> None:
        """Judge everything that arrived (waiting up to half a period for the first) before time is."""
        try:
            self._handle(*self._events.get(timeout=self._period_s / 2))
            while True:
                self._handle(*self._events.get_nowait())
        except queue.Empty:
            pass

    def _handle(self, received_s: float, event: Any) -> None:
        if isinstance(event, icd.Telemetry):
            reading = units.reading_from_telemetry(event)
            self.readings[reading.channel] = reading
            self._act_all(self.supervisor.on_reading(reading, received_s))
            self._log("telemetry", _plain(event))
            self._delivery.put(reading)
        elif isinstance(event, icd.Fault):
            self._on_fault(_fault_event(event))
        elif isinstance(event, LinkLost):
            if isinstance(event.reason, DeviceRebooted):  # NO_SESSION: it is in its power-on safe state
                self._device_safe = True
                self.interlock.stop(f"the device restarted in the middle of the session ({event.reason})")
                self._delivery.put(Notice(None, self.interlock.tripped or ""))
            else:
                self._safe_estop(f"link to the device lost: {event.reason}")  # best effort: the byte path may still carry it
            self._log("link_lost", {"reason": str(event.reason)})
            self._delivery.put(event)

    def _periodic(self) -> None:
        """Once everything that arrived was judged: a trip that could not write the wire
        itself (a record that failed, say) gets its ESTOP; then staleness and the session timer."""
        if self.interlock.tripped is not None and not self._device_safe:
            self._safe_estop(self.interlock.tripped)
        if self._link.alive and self.interlock.tripped is None:
            self._act_all(self.supervisor.poll())
            for approved in self.interlock.session_tick():
                self._execute(approved)

    def _on_fault(self, fault: DeviceFault) -> None:
        # device time counts whole ms: an ESTOP's FAULT and the status read just before a clear
        # at machine speed can share one, and that FAULT is still from before the clear
        stale = fault.device_time_s <= self._faults_cleared_before_s
        actions = [] if stale else self.supervisor.on_fault(fault.code, fault.channel)
        for action in actions:
            if action.kind is ActionKind.ESTOP and fault.channel is None:
                # the device already latched it and is safe; an ESTOP back would only echo
                # (every ESTOP makes another FAULT): trip the session without one. The FAULT
                # ESTOP that answers our own ESTOP leaves the stop's reason to whoever sent it.
                echo = fault.code == "ESTOP" and self._device_safe
                self._device_safe = True
                if self.interlock.tripped is None and not echo:
                    self.interlock.stop(action.reason)
                    self._delivery.put(Notice(None, action.reason))
                self._log("action", {"kind": action.kind.value, "channel": None, "reason": action.reason})
            else:
                self._act(action)
        self._log("fault", {"code": fault.code, "channel": fault.channel, "device_time_s": fault.device_time_s,
                            "before_clear": stale})
        if not stale:
            self._delivery.put(fault)

    def _act_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._act(action)

    def _act(self, action: Action) -> None:
        """Carry out one action, the wire first; record it after."""
        if action.kind is ActionKind.ESTOP:
            self._safe_estop(action.reason)
            return
        if action.kind is ActionKind.ZERO_CHANNEL and action.channel is not None:
            setting = self.setting(action.channel)
            if setting is not None and setting.amplitude_ua > 0:
                self.apply(setting.with_amplitude(0))
            if action.channel in self.enabled():
                self.disable(action.channel)
        elif action.kind is ActionKind.NOTIFY:
            self._delivery.put(Notice(action.channel, action.reason))
        self._log("action", {"kind": action.kind.value, "channel": action.channel, "reason": action.reason})

    def _safe_estop(self, reason: str) -> None:
        """Supervisor stop: ESTOP on the wire, then trip, then tell the clinician and record.
        Repeats while the device still shows output are limited to one per telemetry period."""
        now = self._clock()
        first = self.interlock.tripped is None or not self._device_safe
        if first or now - self._last_supervisor_estop >= self._period_s:
            self._last_supervisor_estop = now
            self._link.estop()
            self._device_safe = True
        if self.interlock.tripped is None:
            self.interlock.stop(reason)
        if first:
            self._delivery.put(Notice(None, self.interlock.tripped or reason))
            self._log("action", {"kind": ActionKind.ESTOP.value, "channel": None, "reason": reason})

    def _log(self, kind: str, data: dict[str, Any]) -> None:
        """Record after acting; a record that can no longer be written stops the session."""
        if self.record is None:
            return
        try:
            self.record.append(kind, data)
        except RecordWriteError as exc:
            if self.interlock.tripped is None or not self._device_safe:
                self._link.estop()
                self._device_safe = True
                self.interlock.stop(str(exc))
                self._delivery.put(Notice(None, f"stimulation stopped: {exc}"))


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
    envelope: Envelope | None = None,
    record: TreatmentRecord | None = None,
    handshake_timeout: float = 2.0,
) -> Stimulator:
    """Open the device at `url`, handshake, and start a supervised session.

    `envelope` says who is connected and holds every limit that comes from them (see
    `safety.Envelope`); without one, only the built-in simulated device (`sim://`) accepts
    the session. Nothing is written to the device before the handshake succeeded; a safety
    refusal of the session set-up (placement, contraindication, prescription, an envelope
    the device does not accept) closes the link again.
    """
    link = connect(url, handshake_timeout)
    try:
        setup = SessionSetup(
            device=units.device_limits(link.identity),
            prescription=prescription,
            placements=dict(placements),
            needles=dict(needles or {}),
            envelope=envelope or Envelope.undeclared(),
        )
        return Stimulator(link, setup, record=record)
    except BaseException:
        link.close()
        raise
