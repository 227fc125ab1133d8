"""The reliable ICD link: sequence numbers, an 8-frame window, go-back-N retransmission,
heartbeats, out-of-band ESTOP and event delivery. It knows bytes, not transports.

Threads: one named reader thread per link reads the transport, dispatches replies and
events, and runs the timers (retransmission, heartbeat). Callers' threads encode and write
their own commands under one lock so frames leave in sequence order. ESTOP never takes
that lock: it is written from the caller's thread at once, between any two frames.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safety.approvals import Approved
from safety.errors import InterlockStateError, Refusal

from . import icd, units
from .drivers.base import Transport
from .errors import (
    DeviceBusy,
    DeviceRebooted,
    EstimError,
    HandshakeFailed,
    LinkError,
    LinkTimeout,
    ProtocolMismatch,
    TransportClosed,
    TransportError,
    refusal_for,
)

if TYPE_CHECKING:
    from safety.interlock import Interlock

log = logging.getLogger(__name__)

_ESTOP_SEQ_OFFSET = 128  # far from every in-flight seq, so its ACK cannot be mistaken
_MAX_TIMER_WAIT = 0.05
_QUERIES = (icd.GetStatus, icd.Heartbeat)  # cannot change the output


@dataclass(frozen=True)
class LinkLost:
    """Delivered to subscribers once, when the link can no longer reach the device."""

    reason: LinkError


LinkEvent = icd.Telemetry | icd.Fault | LinkLost
Subscriber = Callable[[LinkEvent], None]


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    undecodable: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    out_of_order_naks: int = 0
    duplicate_replies: int = 0
    heartbeats: int = 0
    estops_sent: int = 0
    events_received: int = 0
    events_lost: int = 0
    subscriber_errors: int = 0


@dataclass
class _Pending:
    message: icd.Message
    seq: int = -1  # assigned when it enters the window, so cancelled commands use none
    frame: bytes = b""
    future: Future[icd.Message] = field(default_factory=Future)
    sent_at: float = 0.0


class Link:
    """A session with one device over one transport.

    `open()` performs the handshake; nothing but HELLO (and ESTOP, which only ever makes
    the device safer) is written before it succeeded. `bind()` then ties the link to the one
    interlock whose approvals it will carry. The transport is private: nothing outside the
    link writes frames.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        window: int = icd.RETRANSMIT_WINDOW,
        reply_timeout: float = 0.1,
        max_attempts: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= window <= icd.RETRANSMIT_WINDOW:
            raise ValueError(f"window {window} outside 1..{icd.RETRANSMIT_WINDOW}")
        self._transport = transport
        self.window = window
        self.reply_timeout = reply_timeout
        self.max_attempts = max_attempts
        self.stats = LinkStats()
        self.identity: icd.Identity | None = None
        self._clock = clock
        self._decoder = icd.FrameDecoder()
        self._lock = threading.Lock()  # sequencing state; taken before _write_lock
        self._write_lock = threading.Lock()
        self._send_order = threading.Lock()  # approvals redeemed and queued as one step
        self._next_seq = random.randrange(256)
        self._inflight: dict[int, _Pending] = {}  # insertion order = send order
        self._queue: deque[_Pending] = deque()
        self._stalls = 0  # go-backs in a row without progress
        self._last_go_back = float("-inf")
        self._session = False
        self._failed: LinkError | None = None
        self._closing = threading.Event()
        self._last_tx = 0.0
        self._heartbeat_interval = 0.075
        self._last_event_seq: int | None = None
        self._subscribers: list[Subscriber] = []
        self._estop_waiters: dict[int, threading.Event] = {}  # ESTOP seq -> its ACK
        self._hold_queue = threading.Event()
        self._interlock: Interlock | None = None
        self._lease_until: float | None = None  # heartbeats only until then, once leased
        self._reader = threading.Thread(target=self._read_loop, name=f"link-reader {transport.url}", daemon=True)

    # --- lifecycle ------------------------------------------------------------------

    def open(self, timeout: float = 2.0) -> icd.Identity:
        """Handshake: HELLO until IDENTITY; refuses a protocol version it does not know."""
        try:
            self._transport.discard_input()
            self._reader.start()
            reply = self._enqueue(icd.Hello(icd.PROTOCOL_VERSION), handshake=True).result(timeout)
        except TimeoutError:
            self.close()
            raise HandshakeFailed(f"{self._transport.url} did not answer as a stimulator within {timeout:.1f} s (no "
                                  "IDENTITY to HELLO): check that this is the stimulator's port and that it is "
                                  "switched on") from None
        except (EstimError, TransportError) as exc:
            self.close()
            if isinstance(exc, TransportClosed) or isinstance(exc.__cause__, TransportClosed):
                raise DeviceBusy(f"{self._transport.url}: the device closed the connection at once: it is in use "
                                 f"by another program (or is shutting down)") from exc
            raise HandshakeFailed(f"{self._transport.url}: handshake failed: {exc}") from exc
        if not isinstance(reply, icd.Identity):
            self.close()
            raise HandshakeFailed(f"{self._transport.url}: HELLO answered with {type(reply).__name__}")
        if reply.protocol_version not in icd.PROTOCOL_VERSIONS:
            self.close()
            raise ProtocolMismatch(
                f"{self._transport.url}: the device answered with protocol version {reply.protocol_version}; "
                f"this host works with versions {', '.join(map(str, sorted(icd.PROTOCOL_VERSIONS)))}"
            )
        if reply.telemetry_hz == 0 or reply.watchdog_ms == 0 or reply.channels == 0:
            self.close()  # nothing to supervise with, no watchdog to keep fed, or nothing to drive
            raise HandshakeFailed(
                f"{self._transport.url}: {reply.serial} reports {reply.channels} channels, a watchdog of "
                f"{reply.watchdog_ms} ms and telemetry at {reply.telemetry_hz} Hz: this host drives only a device "
                "with channels, a watchdog and telemetry, since it cannot otherwise keep the patient safe")
        self.identity = reply
        self._heartbeat_interval = reply.watchdog_ms / 4000.0
        with self._lock:
            self._session = True
        return reply

    @property
    def protocol_version(self) -> int:
        """The session's version (the lower of the host's and the device's), 0 before HELLO."""
        return self.identity.protocol_version if self.identity is not None else 0

    def close(self, bye_timeout: float = 0.5) -> None:
        """End the session and close the transport. Idempotent. A v2 session is ended with
        BYE (the device latches nothing); a v1 device has no end of session, so its watchdog
        will expire and latch WATCHDOG for the next session to clear."""
        if self.alive and self._session and self.protocol_version >= 2:
            try:
                self.wait(self._enqueue(icd.Bye()), "BYE", bye_timeout)
            except (EstimError, TransportError) as exc:
                log.warning("BYE to %s not acknowledged (%s): its watchdog will end the session", self.url, exc)
        self._closing.set()
        self._fail(LinkError("link closed"), notify=False)
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(timeout=1.0)
        self._transport.close()

    @property
    def url(self) -> str:
        return self._transport.url

    def bind(self, interlock: Interlock) -> None:
        """Carry approvals of `interlock` only, for as long as this link lives. Refused when
        the link is already bound, or when the interlock guards other device limits than
        this device reported in IDENTITY."""
        if self.identity is None:
            raise LinkError("no session: the handshake has not succeeded")
        if self._interlock is not None:
            raise InterlockStateError("this link already carries another session's approvals")
        reported = units.device_limits(self.identity)
        if interlock.setup.device != reported:
            raise Refusal("session.device_limits",
                          f"the session's device limits are not those {self.identity.serial} reports",
                          value=str(interlock.setup.device), limit=str(reported))
        if interlock.setup.channels and not interlock.setup.envelope.screened and not self._transport.simulated:
            raise Refusal("envelope.unscreened",
                          f"{self.identity.serial} at {self.url} is not the built-in simulated device, so a person may "
                          "be connected to it, and nobody was screened: start from the patient's screened visit, "
                          "or declare what is connected (a test load, or a participant screened under a research "
                          "protocol)", value=self.url, limit="a screened patient or a declared connection")
        self._interlock = interlock

    def lease_heartbeats(self, seconds: float) -> None:
        """Send heartbeats for `seconds` more, then stop unless leased again: the session's
        supervisor renews this as it runs, so a dead or stuck supervisor lets the device's
        watchdog make it safe."""
        self._lease_until = self._clock() + seconds

    @property
    def alive(self) -> bool:
        return self._failed is None and not self._closing.is_set()

    @property
    def failure(self) -> LinkError | None:
        return self._failed

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Deliver TELEMETRY, FAULT and LinkLost to `subscriber` on the reader thread.

        Subscribers must return quickly and never wait on the link themselves.
        """
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    # --- commands -------------------------------------------------------------------

    def send(self, approved: Approved) -> Future[icd.Message]:
        """Send a command the interlock approved; the only way a command that can change
        the output reaches the wire. Only approvals of the interlock bound to this link are
        taken; each is redeemed here (verified, single-use, unexpired), immediately before
        its frame is queued, after its message was encoded (so it cannot fail later)."""
        if type(approved) is not Approved:
            raise TypeError(f"the link sends only interlock approvals, not {type(approved).__name__}")
        if self._interlock is None or not approved.issued_by(self._interlock):
            raise InterlockStateError("approval refused: it was not issued by this session's interlock")
        approved.verify()
        message = units.command_to_wire(approved.command)
        message.body()  # raises ValueError for a field beyond the wire, before anything is redeemed
        with self._send_order:  # redeemed in the order they go out (the interlock checks that order)
            approved.consume()
            return self._enqueue(message)

    def query(self, message: icd.GetStatus | icd.Heartbeat) -> Future[icd.Message]:
        """Queue a command that cannot change the output (GET_STATUS, HEARTBEAT)."""
        if type(message) not in _QUERIES:
            raise TypeError(f"{type(message).__name__} changes the output: it needs an interlock approval")
        return self._enqueue(message)

    def wait(self, future: Future[icd.Message], what: str, timeout: float = 2.0) -> icd.Message:
        """The reply, or LinkTimeout naming `what` (DeviceRefused subclasses on NAK)."""
        try:
            return future.result(timeout)
        except TimeoutError:
            raise LinkTimeout(f"no reply to {what} within {timeout:.2f} s") from None

    def estop(self, timeout: float = 0.25, resend_every: float = 0.02) -> bool:
        """Write ESTOP now, out of band, and repeat until ACKed; True once the device ACKed
        this call's ESTOP (concurrent callers each wait for their own).

        Queued, unsent commands that could change the output are cancelled: nothing queued
        before a stop may run after it.
        """
        self._hold_queue.set()  # from now on nothing queued before the stop leaves
        seq = (self._next_seq + _ESTOP_SEQ_OFFSET) & 0xFF
        frame = icd.encode_frame(seq, icd.Estop())
        acked = self._estop_waiters.setdefault(seq, threading.Event())
        on_reader = threading.current_thread() is self._reader
        deadline = self._clock() + timeout
        try:
            while True:
                try:
                    self._write(frame)
                    self.stats.estops_sent += 1
                except TransportError as exc:
                    log.error("ESTOP could not be written: %s", exc)
                    break
                if on_reader or acked.wait(min(resend_every, max(deadline - self._clock(), 0))):
                    break
                if self._clock() >= deadline:
                    break
        finally:
            self._estop_waiters.pop(seq, None)
            self._cancel_queue(LinkError("cancelled by e-stop"))
            with self._lock:
                if not self._estop_waiters:
                    self._hold_queue.clear()
                    self._pump()  # queries held during the stop go out now
        return acked.is_set()

    # --- internals: sending ---------------------------------------------------------

    def _enqueue(self, message: icd.Message, handshake: bool = False) -> Future[icd.Message]:
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if not handshake and not self._session:
                raise LinkError("no session: the handshake has not succeeded")
            pending = _Pending(message)
            self._queue.append(pending)
            self._pump()
        return pending.future

    def _pump(self) -> None:
        """Send queued commands while they fit in the window (caller holds _lock).

        The window spans sequence numbers from the oldest unanswered command, not a count
        of unanswered ones: the device keeps only the last 8 replies, so a command whose
        reply was lost must stay within 8 of everything sent after it to be replayable.
        """
        while self._queue and not self._hold_queue.is_set():
            if self._inflight and (self._next_seq - next(iter(self._inflight))) & 0xFF >= self.window:
                return
            pending = self._queue.popleft()
            pending.seq, pending.frame = self._next_seq, icd.encode_frame(self._next_seq, pending.message)
            self._next_seq = (self._next_seq + 1) & 0xFF
            self._inflight[pending.seq] = pending
            self._send(pending)

    def _send(self, pending: _Pending) -> None:
        pending.sent_at = self._clock()
        self._write(pending.frame)

    def _write(self, frame: bytes) -> None:
        with self._write_lock:
            self._transport.write(frame)
            self._last_tx = self._clock()
            self.stats.frames_sent += 1

    def _go_back(self) -> None:
        """Resend every unacknowledged command, oldest first (caller holds _lock).

        The link gives up only after `max_attempts` go-backs in a row without any reply
        resolving a command: loss that still lets commands through is survived.
        """
        self._stalls += 1
        if self._stalls >= self.max_attempts:
            oldest = next(iter(self._inflight.values()))
            raise LinkTimeout(
                f"the device stopped answering ({type(oldest.message).__name__} seq {oldest.seq} unanswered "
                f"after {self._stalls} retransmissions)"
            )
        self._last_go_back = self._clock()
        for pending in list(self._inflight.values()):
            self.stats.retransmissions += 1
            self._send(pending)

    def _cancel_queue(self, reason: LinkError) -> None:
        """Fail every queued command that could change the output; queries stay queued."""
        with self._lock:
            kept = deque(p for p in self._queue if type(p.message) in _QUERIES)
            for pending in self._queue:
                if type(pending.message) not in _QUERIES:
                    pending.future.set_exception(reason)
            self._queue = kept

    # --- internals: receiving -------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._transport.read(self._timer_wait())
                if data:
                    bad_before = self._decoder.bad_frames
                    packets = self._decoder.feed(data)
                    self.stats.bad_frames += self._decoder.bad_frames - bad_before
                    for raw in packets:
                        self._dispatch(raw)
                self._run_timers()
            except LinkError as exc:
                self._fail(exc)
                return
            except TransportError as exc:
                if not self._closing.is_set():
                    lost = LinkError(str(exc))
                    lost.__cause__ = exc
                    self._fail(lost)
                return

    def _timer_wait(self) -> float:
        now = self._clock()
        wait = _MAX_TIMER_WAIT
        with self._lock:
            if self._inflight:
                oldest = next(iter(self._inflight.values()))
                wait = min(wait, oldest.sent_at + self.reply_timeout - now)
            if self._session:
                wait = min(wait, self._last_tx + self._heartbeat_interval - now)
        return max(wait, 0.0)

    def _run_timers(self) -> None:
        now = self._clock()
        with self._lock:
            if self._inflight:
                oldest = next(iter(self._inflight.values()))
                if now - oldest.sent_at >= self.reply_timeout:
                    self.stats.timeouts += 1
                    self._go_back()
            elif self._session and not self._queue and now - self._last_tx >= self._heartbeat_interval \
                    and (self._lease_until is None or now < self._lease_until):
                self.stats.heartbeats += 1
                self._queue.append(_Pending(icd.Heartbeat()))
                self._pump()

    def _dispatch(self, raw: icd.RawPacket) -> None:
        try:
            message = raw.message()
        except icd.BodyError:
            self.stats.undecodable += 1
            return
        self.stats.frames_received += 1
        # the session's version is its readings' version (known from IDENTITY: before it, a reading
        # still in the pipe is the previous session's)
        if isinstance(message, icd.Telemetry) and self.identity is not None \
                and (message.shape is None) != (self.protocol_version < 2):
            raise ProtocolMismatch(f"{self._transport.url}: a reading of {len(raw.body)} bytes in an ICD "
                                   f"v{self.protocol_version} session: the device does not speak the version it "
                                   "agreed to")
        if isinstance(message, (icd.Telemetry, icd.Fault)):
            self._deliver_event(raw.seq, message)
            return
        waiter = self._estop_waiters.get(raw.seq)
        if waiter is not None and isinstance(message, icd.Ack) and raw.seq not in self._inflight:
            waiter.set()
            return
        with self._lock:
            pending = self._inflight.get(raw.seq)
            if pending is None:
                self.stats.duplicate_replies += 1
                return
            if isinstance(message, icd.Nak) and message.code == icd.NakCode.OUT_OF_ORDER:
                self.stats.out_of_order_naks += 1
                # every frame behind a lost one is NAKed too: one go-back per round trip
                # answers them all; loss within the resent frames falls to the timeout
                if self._clock() - self._last_go_back >= self.reply_timeout:
                    self._go_back()
                return
            no_session = isinstance(message, icd.Nak) and message.code == icd.NakCode.NO_SESSION
            if no_session and isinstance(pending.message, icd.Bye):
                message = icd.Ack()  # a resent BYE whose ACK was lost: the session has ended
            elif no_session and self._session:
                raise DeviceRebooted(f"{self._transport.url}: the device lost the session (rebooted?)")
            del self._inflight[raw.seq]
            if isinstance(pending.message, icd.Bye) and isinstance(message, icd.Ack):
                self._session = False  # nothing is sent after BYE, heartbeats included
            self._stalls = 0
            if isinstance(message, icd.Nak):
                pending.future.set_exception(
                    refusal_for(type(pending.message).__name__, message.code, message.expected)
                )
            else:
                pending.future.set_result(message)
            self._pump()

    def _deliver_event(self, seq: int, message: icd.Telemetry | icd.Fault) -> None:
        self.stats.events_received += 1
        if self._last_event_seq is not None:
            self.stats.events_lost += (seq - self._last_event_seq - 1) & 0xFF
        self._last_event_seq = seq
        self._notify(message)

    def _notify(self, event: LinkEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a subscriber's bug must not kill the reader thread
                self.stats.subscriber_errors += 1
                log.exception("link subscriber failed on %s", type(event).__name__)

    def _fail(self, reason: LinkError, notify: bool = True) -> None:
        with self._lock:
            if self._failed is not None:
                return
            self._failed = reason
            self._session = False
            doomed = list(self._inflight.values()) + list(self._queue)
            self._inflight.clear()
            self._queue.clear()
        for pending in doomed:
            if not pending.future.done():
                pending.future.set_exception(reason)
        if notify:
            log.error("link to %s lost: %s", self._transport.url, reason)
            self._notify(LinkLost(reason))
