"""The treatment record: append-only JSON lines, each authenticated with the clinic's key.

Line format (format 2), byte for byte:

    {"i":N,"kind":K,"mono":M,"data":D,"mac":"<32 hex>"}

`i` counts records from 0; `kind` is one of `KINDS`; `mono` is the host's monotonic clock
(s, 6 decimals); `data` is canonical JSON (sorted keys, no spaces, UTF-8, no NaN);
`mac` is HMAC-SHA256 (128 bits) under the record key of the previous line's mac (32 zeros
for the first) followed by the line without its `mac` member. So every line is bound to
its place, and nobody without the key can rewrite, drop, add or reorder lines, even
recomputing everything after. The first record (`open`) names the record's id and the key
that signs it; the wall-clock time of any record is the `open` (or `resume`) time plus its
`mono` offset. A clean end is a final `close` record; nothing may follow it.

Durability: every record but telemetry is written with O_APPEND and fsynced before
`append` returns. Telemetry is buffered into `telemetry_block` records (see
`record_telemetry`) written at least once a second (by a background flusher), before any
other record and at close: a killed host loses at most the last second of readings, never
a command, refusal or stop. A write failure latches `RecordWriteError`: it is raised by
the next `append` or `close` (within about a second for buffered telemetry).

Reopening a record that was not closed (a restarted host continuing the session) writes a
`resume` record that names a partial final line, if the killed writer left one, by its
SHA-256 and length; only a true prefix of the line that was due there can be named, so a
`resume` cannot excuse anything else.
"""

from __future__ import annotations

import hashlib
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
from .record_keys import RecordKey, default_key_or_create, load_key
from .record_telemetry import BlockBuilder, compactable, fields_of

log = logging.getLogger(__name__)

FORMAT = 2
GENESIS = "0" * 32
FLUSH_S = 1.0
"""Longest time a telemetry reading waits in memory before it is written and fsynced."""
_FLUSH_TICK_S = 0.25

KINDS: dict[str, str] = {
    # written by the record itself
    "open": "the record begins: format, record id, signing key, wall-clock time",
    "resume": "a restarted host continues this record; names a partial line a killed writer left",
    "close": "the record ends cleanly; nothing may follow",
    "telemetry_block": "device readings, per-channel deltas (see record_telemetry)",
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
    "telemetry": "one device reading (only when it cannot go into a telemetry block)",
    "session_closed": "the host closed the device session: link statistics",
    "not_started": "the session never reached the device: refused, or the device could not be reached; why",
    # the clinician (command line, console)
    "session_plan": "operator, target mechanism, sensitivity, thresholds, integration plan",
    "threshold_mark": "a threshold marked during titration",
    "thresholds": "a channel's measured sensory, motor and tolerance thresholds",
    "patient_feedback": "what the patient said (too strong, can't feel it) and what followed",
    "intensity": "an intensity change asked for at the console",
    "operator_stop": "the operator pressed STOP",
}
"""Every kind of record, with what it means. `append` refuses a kind not listed here."""

WRITER_KINDS = frozenset({"open", "resume", "close", "telemetry_block"})


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


def encode_body(i: int, kind: str, mono: float, data_json: str) -> bytes:
    """A line without its mac member (the bytes the mac covers, after the previous mac)."""
    return f'{{"i":{i},"kind":{json.dumps(kind)},"mono":{json.dumps(mono)},"data":{data_json}}}'.encode()


def seal(key: RecordKey, prev_mac: str, body: bytes) -> tuple[bytes, str]:
    """The complete line (with newline) and its mac."""
    mac = key.mac(prev_mac.encode() + body).hex()
    return body[:-1] + f',"mac":"{mac}"}}\n'.encode(), mac


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class TreatmentRecord:
    """Thread-safe writer; refuses to extend a file that does not verify or that was closed.

    `key`: the record key (default: this computer's default key, created on first use).
    `anchor`: where the head is anchored (the visit store), or None.
    """

    def __init__(self, path: str | Path, clock: Any = time.monotonic, *, key: RecordKey | None = None,
                 anchor: AnchorSink | None = None) -> None:
        from .record_read import RecordStatus, verify_record

        def lookup(key_id: str) -> RecordKey:
            return key if key is not None and key.key_id == key_id else load_key(key_id)

        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()    # the chain, the buffer and the lines not yet written
        self._io = threading.Lock()      # one writer at a time, in the order lines were sealed
        self._failed: RecordWriteError | None = None
        self._failure_raised = False
        self._block: BlockBuilder | None = None
        self._block_since = 0.0
        self._pending: list[bytes] = []
        self._closed_sealed = False
        self._durable = Head(0, GENESIS, False)
        self.key_created = False
        resume: dict[str, Any] | None = None
        if self.path.exists() and self.path.stat().st_size:
            verdict = verify_record(self.path, keys=lookup)
            if verdict.status is RecordStatus.UNCHECKABLE:
                raise ValueError(f"{self.path}: cannot continue this record: {verdict.reason}")
            if not verdict.ok:
                raise ValueError(f"{self.path}: existing record does not verify (line {verdict.first_bad_line}: "
                                 f"{verdict.reason})")
            if verdict.closed:
                raise ValueError(f"{self.path}: this record was closed; a new session needs a new record file")
            self.record_id, self._key = verdict.record_id or "", lookup(verdict.key_id or "")
            self._next, self._prev = verdict.records, verdict.last_hash
            fragment = verdict.fragment
            resume = {"t": now_iso(), "fragment_sha256": hashlib.sha256(fragment).hexdigest() if fragment else None,
                      "fragment_bytes": len(fragment)}
        else:
            if key is None:
                key, self.key_created = default_key_or_create()
                if self.key_created:
                    log.warning("created record key %s (no key existed)", key.key_id)
            self._key, self.record_id = key, uuid.uuid4().hex
            self._next, self._prev = 0, GENESIS
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._anchorer = Anchorer(anchor, self.record_id, str(self.path.resolve()), self._key.key_id) \
            if anchor is not None else None
        if resume is None:
            self._seal("open", {"format": FORMAT, "record_id": self.record_id, "key_id": self._key.key_id,
                                "t": now_iso()})
        else:
            if resume["fragment_bytes"]:
                self._pending.append(b"\n")  # ends the killed writer's partial line
            self._seal("resume", resume)
        self._commit(self._next, reporting=True)
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
        """The mac of the last record written (the head the anchor keeps)."""
        return self._durable.last_hash

    @property
    def count(self) -> int:
        """Records written so far (telemetry blocks count as one each)."""
        return self._durable.count

    def wait_anchored(self, timeout_s: float) -> bool:
        """Before a session starts: wait (at most `timeout_s`) until the anchor sink has the
        record's first head, so even a host killed at once leaves a record the store knows.
        False when there is no sink, it failed, or it did not answer in time."""
        return self._anchorer is not None and self._anchorer.wait_answered(timeout_s)

    @property
    def anchor_error(self) -> str | None:
        """Why the head could not be anchored in the visit store, or None."""
        return self._anchorer.error if self._anchorer is not None else None

    def append(self, kind: str, data: dict[str, Any]) -> str | None:
        """Record one event. Telemetry is buffered (see the module text) and never waits for
        the disk; anything else is written and fsynced before this returns, with its mac
        returned. Raises `RecordWriteError` (latched) when a write failed,
        `UnknownRecordKind` for a kind not in `KINDS`."""
        if kind not in KINDS or kind in WRITER_KINDS:
            raise UnknownRecordKind(f"record kind {kind!r} is not registered in safety.record.KINDS"
                                    if kind not in KINDS else f"record kind {kind!r} is written by the record itself")
        with self._lock:
            self._check_writable()
            if kind == "telemetry" and compactable(data):
                shape = fields_of(data)
                if self._block is not None and self._block.shape != shape:
                    self._seal_block()
                if self._block is None:
                    self._block, self._block_since = BlockBuilder(shape), time.monotonic()
                self._block.add(data)
                return None
            self._seal_block()
            mac = self._seal(kind, data)
            upto = self._next
        self._commit(upto, reporting=True)
        return mac

    def close(self) -> None:
        """Write buffered telemetry and a `close` record, anchor the final head, close the file.
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
                self._seal_block()
                self._seal("close", {})
                self._closed_sealed = True
                upto = self._next
            self._commit(upto, reporting=True)
        finally:
            with self._io, self._lock:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
            if self._anchorer is not None:  # the head as it is on disk, closed or not
                self._anchorer.close(self._durable)

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

    def _seal_block(self) -> None:
        """With the state lock held: buffered telemetry becomes the next line."""
        if self._block is not None:
            block, self._block = self._block, None
            self._seal("telemetry_block", block.data())

    def _seal(self, kind: str, data: dict[str, Any]) -> str:
        """With the state lock held: seal the next line, advance the chain, queue the line."""
        body = encode_body(self._next, kind, round(self._clock(), 6), canonical(data))
        line, mac = seal(self._key, self._prev, body)
        self._next, self._prev = self._next + 1, mac
        self._pending.append(line)
        return mac

    def _commit(self, upto: int, reporting: bool) -> None:
        """Make every line sealed up to record `upto` durable: one writer at a time writes
        and fsyncs all that is queued (group commit), so a line another thread already
        wrote costs nothing. `reporting`: the caller raises a failure to its own caller."""
        with self._io:
            with self._lock:
                if self._failed is not None:
                    if reporting:
                        self._failure_raised = True
                    raise self._failed
                if self._durable.count >= upto:
                    return
                batch, self._pending = b"".join(self._pending), []
                head = Head(self._next, self._prev, self._closed_sealed)
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
        if self._anchorer is not None and not head.closed:
            self._anchorer.post(head)

    def _flush_loop(self) -> None:
        """Background flusher: buffered telemetry reaches the disk at least once a second."""
        while not self._closing.wait(_FLUSH_TICK_S):
            with self._lock:
                if (self._block is None or self._fd < 0 or self._failed is not None
                        or time.monotonic() - self._block_since < FLUSH_S - _FLUSH_TICK_S):
                    continue
                self._seal_block()
                upto = self._next
            try:
                self._commit(upto, reporting=False)
            except RecordWriteError:
                continue  # latched: the next append or close raises it
