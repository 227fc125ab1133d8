"""The treatment record: append-only JSON lines, hash-chained, signed with the clinic's key.

Line format (format 3), byte for byte (canonical JSON, no spaces):

    [I, EVENT, EVENT, ..., "AUTH"]

`I` counts lines from 0; each `EVENT` is one appended record in the compact encoding of
`record_codec` (its kind, time, and what changed). Every line is chained: its hash is
SHA-256 of the previous line's hash and the line without its `AUTH`. `AUTH` is either an
Ed25519 signature (86 base64url characters) under the record key of the record id, the
line's index, its hash and whether it is the close, or a 64-bit MAC (11 characters) under
a per-record key only the signing computer can derive. Verifying needs the public key only:
a signature vouches for every line up to it. The first line (`open`: format, record id,
key id, wall-clock time, patient and visit), the close and any `resume` are signed, and so
is the first line written at least `SIGN_S` after the last signature. A line after the
last signature is not data: it stays out of every report until the computer that wrote it
checks its MAC and signs it (`resume`, written when a record is continued or sealed).

Durability: an event is written in the next line. Refusals, stops, faults, a command
going to the wire (`consumed`) and everything else a person needs written now are
written, with every event waiting before them, and fsynced before `append` returns (one
writer at a time writes all that waits: group commit). Telemetry, approvals, their
warnings and acknowledgements wait (they never wait for the disk) until then, or until the
background flusher writes them within `FLUSH_S`: an approval is always on disk, and
authenticated, before its command reaches the wire. A killed host loses at most the last
second of readings and acknowledgements, never a command, refusal or stop. A write failure
latches `RecordWriteError`: it is raised by the next `append` or `close`.

Reopening a record that was not closed (a restarted host continuing the session) writes a
signed `resume` that names, by SHA-256 and length, everything after the last line it can
vouch for (a partial line, or lines whose MAC does not check): those bytes are never data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import SafetyError
from .record_anchor import Anchorer, AnchorSink, Head
from .record_codec import Encoder
from .record_keys import RecordKey, default_key_or_create, load_key

log = logging.getLogger(__name__)

FORMAT = 3
GENESIS = hashlib.sha256(b"estim treatment record, format 3").digest()
FLUSH_S = 1.0
"""Longest time a waiting event (a reading, an approval, an ACK) stays in memory."""
SIGN_S = 1.0
"""Longest time between two signatures while events are written."""
_FLUSH_TICK_S = 0.25
MAC_CHARS, SIG_CHARS = 11, 86

KINDS: dict[str, str] = {
    # written by the record itself
    "open": "the record begins: format, record id, signing key, wall-clock time, patient and visit",
    "resume": "a restarted host continues this record, or seals it; names the bytes it cannot vouch for",
    "close": "the record ends cleanly; nothing may follow",
    # the session (interlock, supervisor, stimulator)
    "session_setup": "channels, who is connected and their envelope, prescription, needles and sites",
    "caution": "a screening caution the clinician was shown at set-up",
    "session_start": "first output enabled: the session clock starts",
    "session_end": "the prescribed session time is over",
    "identity": "the device's IDENTITY: serial, firmware, channels, limits",
    "approved": "a command the interlock approved",
    "warning": "a warning attached to an approved command",
    "consumed": "an approved command went to the wire",
    "ack": "the device acknowledged a command",
    "ack_after_stop": "an acknowledgement that arrived after a stop",
    "nak": "the device refused a command",
    "refusal": "the interlock refused a command: rule, value, limit",
    "state_error": "a command out of sequence, refused",
    "stop": "the session stopped (e-stop, fault, link lost): reason",
    "estop": "an e-stop was sent: reason, acknowledged or not",
    "cleared": "a person cleared a stop",
    "device_zeroed": "the device zeroed a channel itself",
    "hold": "a channel is held at zero by supervision",
    "action": "the supervisor acted: stop, zero a channel, notify",
    "fault": "a fault the device reported",
    "link_lost": "the link to the device was lost",
    "telemetry": "one device reading",
    "session_closed": "the host closed the device session: link statistics",
    "not_started": "the session never reached the device: refused, or the device could not be reached; why",
    # the clinician (command line, console)
    "session_plan": "operator, patient, visit, target mechanism, sensitivity, thresholds, integration plan",
    "threshold_mark": "a threshold marked during titration",
    "thresholds": "a channel's measured sensory, motor and tolerance thresholds",
    "patient_feedback": "what the patient said (too strong, can't feel it) and what followed",
    "intensity": "an intensity change asked for at the console",
    "operator_stop": "the operator pressed STOP",
}
"""Every kind of record, with what it means. `append` refuses a kind not listed here."""

WRITER_KINDS = frozenset({"open", "resume", "close"})
WAITING_KINDS = frozenset({"telemetry", "approved", "warning", "ack"})
"""Kinds written with the next line rather than at once (see the module text)."""


class UnknownRecordKind(ValueError):
    """`append` of a kind not in `KINDS`: register it there, with what it means."""


class RecordWriteError(SafetyError):
    """The treatment record can no longer be written (disk full, file too large, I/O error).

    Latched: once a write failed, every later `append` raises it again at once, because a
    chain with a gap cannot be trusted. Treatment that cannot be documented does not go on,
    so the session stops; the stop itself never waits for, or depends on, the record.
    """


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain(prev: bytes, body: bytes) -> bytes:
    """The hash of a line: SHA-256 of the previous line's hash and the line without its AUTH."""
    return hashlib.sha256(prev + body).digest()


def signed_message(record_id: str, index: int, digest: bytes, closed: bool) -> bytes:
    """What a signature covers: the record, the line's index and hash, and whether it closes."""
    return b"estim record 3\x00" + record_id.encode() + b"\x00" + index.to_bytes(8, "big") + digest + bytes([closed])


def line_mac(mac_key: bytes, index: int, digest: bytes) -> str:
    return b64(hmac.new(mac_key, index.to_bytes(8, "big") + digest, hashlib.sha256).digest()[:8])


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(body: bytes, auth: str) -> bytes:
    """The complete line (with its newline) from its body `[I,EVENT,...]` and its AUTH."""
    return body[:-1] + b',"' + auth.encode() + b'"]\n'


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class TreatmentRecord:
    """Thread-safe writer; refuses to extend a file that does not verify, that was closed,
    or that belongs to another patient.

    `key`: the record key (default: this computer's default key, created on first use).
    `anchor`: where the head is anchored (the visit store), or None.
    `patient`, `visit`: who and which visit the record belongs to (written in its first line).
    """

    def __init__(self, path: str | Path, clock: Any = time.monotonic, *, key: RecordKey | None = None,
                 anchor: AnchorSink | None = None, patient: str | None = None, visit: int | None = None) -> None:
        from .record_read import RecordStatus, scan_for_resume

        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()    # the chain, the waiting events and the lines not yet written
        self._io = threading.Lock()      # one writer at a time, in the order lines were sealed
        self._failed: RecordWriteError | None = None
        self._failure_raised = False
        self._events: list[list[Any]] = []
        self._oldest_event = 0.0
        self._pending: list[bytes] = []
        self._encoder = Encoder()
        self._last_sign = -float("inf")
        self._closed_sealed = False
        self._durable = Head(0, GENESIS.hex(), False, "")
        self._signed_head = self._durable
        self.key_created = False
        self.patient, self.visit = patient, visit
        resume: dict[str, Any] | None = None
        if self.path.exists() and self.path.stat().st_size:
            def lookup(key_id: str) -> RecordKey:
                return key if key is not None and key.key_id == key_id else load_key(key_id)

            found = scan_for_resume(self.path, lookup)
            verdict = found.verdict
            if verdict.status is RecordStatus.UNCHECKABLE:
                raise ValueError(f"{self.path}: cannot continue this record: {verdict.reason}")
            if not verdict.ok:
                raise ValueError(f"{self.path}: existing record does not verify (line {verdict.first_bad_line}: "
                                 f"{verdict.reason})")
            if verdict.closed:
                raise ValueError(f"{self.path}: this record was closed; a new session needs a new record file")
            if found.patient != patient:
                raise ValueError(f"{self.path}: this unfinished record belongs to "
                                 f"{'patient ' + found.patient if found.patient else 'no patient'}, not to "
                                 f"{'patient ' + patient if patient else 'a session without a patient'}")
            self._key = lookup(verdict.key_id or "")
            if not self._key.can_sign:
                raise ValueError(f"{self.path}: cannot continue this record: it was signed on another computer "
                                 f"(key {self._key.key_id} is a public key only here)")
            self.record_id = verdict.record_id or ""
            self._mac_key = self._key.tail_mac_key(self.record_id)
            self._next, self._prev, end = found.continue_after(self._mac_key)
            excluded = self.path.read_bytes()[end:]
            if excluded and not excluded.endswith(b"\n"):
                self._pending.append(b"\n")  # ends a killed writer's partial line
                excluded += b"\n"
            resume = {"t": now_iso(), "excluded_sha256": hashlib.sha256(excluded).hexdigest() if excluded else None,
                      "excluded_bytes": len(excluded)}
        else:
            if key is None:
                key, self.key_created = default_key_or_create()
                if self.key_created:
                    log.warning("created record key %s (no key existed)", key.key_id)
            self._key, self.record_id = key, uuid.uuid4().hex
            self._mac_key = key.tail_mac_key(self.record_id)
            self._next, self._prev = 0, GENESIS
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._anchorer = Anchorer(anchor, self.record_id, str(self.path.resolve()), self._key.key_id) \
            if anchor is not None else None
        with self._lock:
            if resume is None:
                self._event("open", {"format": FORMAT, "record_id": self.record_id, "key_id": self._key.key_id,
                                     "t": now_iso(), "patient": patient, "visit": visit})
            else:
                self._event("resume", resume)
            self._seal_line(sign=True)
        self._commit(reporting=True)
        self._closing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="record-flush", daemon=True)
        self._flusher.start()

    @property
    def failed(self) -> RecordWriteError | None:
        """The write failure that latched this record, or None while it is writable."""
        return self._failed

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def last_hash(self) -> str:
        """The hash of the last line on disk (hex)."""
        return self._durable.last_hash

    @property
    def count(self) -> int:
        """Lines on disk so far."""
        return self._durable.count

    @property
    def signed_head(self) -> Head:
        """The last signed line on disk: what the anchor keeps and a verifier can vouch for."""
        return self._signed_head

    def wait_anchored(self, timeout_s: float) -> bool:
        """Before a session starts: wait (at most `timeout_s`) until the anchor sink has the
        record's first head, so even a host killed at once leaves a record the store knows.
        False when there is no sink, it failed, or it did not answer in time."""
        return self._anchorer is not None and self._anchorer.wait_answered(timeout_s)

    @property
    def anchor_error(self) -> str | None:
        """Why the head could not be anchored in the visit store, or None."""
        return self._anchorer.error if self._anchorer is not None else None

    def append(self, kind: str, data: dict[str, Any]) -> None:
        """Record one event. Kinds in `WAITING_KINDS` wait for the next line (never for the
        disk); anything else is written, with everything waiting before it, and fsynced
        before this returns. Raises `RecordWriteError` (latched) when a write failed,
        `UnknownRecordKind` for a kind not in `KINDS`, ValueError for data JSON cannot hold."""
        if kind not in KINDS or kind in WRITER_KINDS:
            raise UnknownRecordKind(f"record kind {kind!r} is not registered in safety.record.KINDS"
                                    if kind not in KINDS else f"record kind {kind!r} is written by the record itself")
        canonical(data)  # NaN, infinities and the like are refused before anything is kept
        with self._lock:
            self._check_writable()
            self._event(kind, data)
            if kind in WAITING_KINDS:
                return
        self._commit(reporting=True)

    def close(self) -> None:
        """Write what waits and a signed `close`, anchor the final head, close the file.
        Raises the latched `RecordWriteError` if a write failed and no `append` has raised it
        yet (the file is closed anyway)."""
        if self._fd < 0:
            return
        self._closing.set()
        try:
            with self._lock:
                if self._failed is not None and self._failure_raised:
                    return
                self._check_writable()
                self._event("close", {})
                self._closed_sealed = True
                self._seal_line(sign=True)
            self._commit(reporting=True)
        finally:
            with self._io, self._lock:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
            if self._anchorer is not None:  # the last signed head on disk, closed or not
                self._anchorer.close(self._signed_head)

    def detach(self) -> None:
        """Stop writing without a close record (what waits is written, signed): for sealing a
        record whose session is over but did not close it (`seal_record`)."""
        if self._fd < 0:
            return
        self._closing.set()
        with self._lock:
            self._check_writable()
            self._seal_line(sign=True)
        try:
            self._commit(reporting=True)
        finally:
            with self._io, self._lock:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> TreatmentRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------

    def _check_writable(self) -> None:
        """With the state lock held."""
        if self._failed is not None:
            self._failure_raised = True
            raise self._failed
        if self._fd < 0:
            raise ValueError("treatment record is closed")

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        """With the state lock held: encode an event for the next line."""
        if not self._events:
            self._oldest_event = time.monotonic()
        self._events.append(self._encoder.encode(kind, round(self._clock() * 1000), data))

    def _seal_line(self, sign: bool = False) -> None:
        """With the state lock held: the waiting events become the next line."""
        if not self._events:
            return
        now = self._clock()
        sign = sign or now - self._last_sign >= SIGN_S
        body = canonical([self._next, *self._events]).encode()
        digest = chain(self._prev, body)
        if sign:
            auth = b64(self._key.sign(signed_message(self.record_id, self._next, digest, self._closed_sealed)))
            self._last_sign = now
        else:
            auth = line_mac(self._mac_key, self._next, digest)
        self._pending.append(seal(body, auth))
        self._next, self._prev, self._events = self._next + 1, digest, []
        self._sealed_head = Head(self._next, digest.hex(), self._closed_sealed, auth if sign else "")

    def _commit(self, reporting: bool) -> None:
        """Make every waiting event durable: one writer at a time seals what waits into a
        line and writes and fsyncs all that is queued (group commit), so an event another
        thread already wrote costs nothing. `reporting`: the caller raises a failure itself."""
        with self._io:
            with self._lock:
                if self._failed is not None:
                    if reporting:
                        self._failure_raised = True
                    raise self._failed
                self._seal_line()
                if not self._pending:
                    return
                batch, self._pending = b"".join(self._pending), []
                head = self._sealed_head
            try:
                view = memoryview(batch)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError as exc:
                with self._lock:
                    self._failed = RecordWriteError(
                        f"the treatment record {self.path} can no longer be written ({exc.strerror or exc}); "
                        f"free space or choose another place for records before the next session")
                    self._failure_raised = reporting
                raise self._failed from exc
            with self._lock:
                self._durable = head
                if head.signature:
                    self._signed_head = head
        if self._anchorer is not None and head.signature and not head.closed:
            self._anchorer.post(head)

    def _flush_loop(self) -> None:
        """Background flusher: waiting events reach the disk at least once a second."""
        while not self._closing.wait(_FLUSH_TICK_S):
            with self._lock:
                if (not self._events or self._fd < 0 or self._failed is not None
                        or time.monotonic() - self._oldest_event < FLUSH_S - _FLUSH_TICK_S):
                    continue
            try:
                self._commit(reporting=False)
            except RecordWriteError:
                continue  # latched: the next append or close raises it


def seal_record(path: str | Path, key: RecordKey | None = None) -> None:
    """Sign what a killed writer left after a record's last signature, on the computer that
    wrote it: a signed `resume` vouches for the lines whose MAC checks and names the rest;
    the record stays not closed (its session did not close it)."""
    from .record_read import scan_for_resume

    found = scan_for_resume(Path(path), load_key if key is None else (lambda _id: key))
    TreatmentRecord(path, key=key, patient=found.patient, visit=found.visit).detach()
