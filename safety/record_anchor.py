"""Anchoring: the record's signed head (line count, last hash, signature) kept outside the record.

A chain that verifies shows nothing was changed inside it, but not that nothing was cut
off its end or that the file still exists. The writer therefore hands its last signed head
to an anchor sink (the visit store) when the record opens, at most every
`ANCHOR_INTERVAL_S` while it grows, and when it closes; `verify` compares the file with
the anchored head. A head is the record's own signature of its line count and hash (and
of whether it closed), so whoever can write the store cannot forge one or move a closed
head: `verify` checks it with the record key's public half.

The sink is called on a thread of its own: a slow or failing store never blocks an
`append`, a stop, or a close for longer than `CLOSE_WAIT_S`. A failure is kept in
`Anchorer.error` (the command line prints it) and never raised into the session.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

ANCHOR_INTERVAL_S = 5.0
CLOSE_WAIT_S = 2.0


class AnchorSink(Protocol):
    """The visit store's record-head API: an upsert that never moves a head backwards nor a
    closed head at all, the head as stored (an object with the attributes of
    `put_record_head`'s arguments), or None, and the record the store keeps at a path."""

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool, signature: str) -> None: ...

    def get_record_head(self, record_id: str) -> Any: ...

    def record_at(self, path: str) -> str | None: ...


@dataclass(frozen=True)
class Head:
    count: int
    last_hash: str      # hex
    closed: bool
    signature: str      # base64url Ed25519 signature of the line at count - 1 ("" when not signed)


class Anchorer:
    """Posts a record's latest signed head to a sink from a background thread."""

    def __init__(self, sink: AnchorSink, record_id: str, path: str, key_id: str,
                 interval_s: float = ANCHOR_INTERVAL_S) -> None:
        self._sink, self._record_id, self._path, self._key_id = sink, record_id, path, key_id
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._pending: Head | None = None
        self._anchored: Head | None = None
        self._stopping = False
        self.error: str | None = None
        self._answered = threading.Event()   # the sink accepted or refused a head at least once
        self._thread = threading.Thread(target=self._run, name="record-anchor", daemon=True)
        self._thread.start()

    def post(self, head: Head) -> None:
        """Queue the newest head (older queued heads are superseded). Never blocks on the sink."""
        with self._cond:
            self._pending = head
            self._cond.notify()

    def wait_answered(self, timeout_s: float) -> bool:
        """Wait until the sink has answered once (accepted or failed); True when a head is anchored."""
        self._answered.wait(timeout_s)
        return self._anchored is not None

    @property
    def anchored(self) -> Head | None:
        """The newest head the sink accepted."""
        return self._anchored

    def close(self, head: Head, wait_s: float = CLOSE_WAIT_S) -> None:
        """Post the final head and wait up to `wait_s` for it (`error` says why it was not anchored)."""
        with self._cond:
            self._pending, self._stopping = head, True
            self._cond.notify()
        self._thread.join(wait_s)
        if self._thread.is_alive() and self.error is None:
            self.error = f"the visit store did not answer within {wait_s:g} s"

    def _run(self) -> None:
        first = True
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if not first and not self._stopping:  # rate limit the intermediate heads
                    self._cond.wait_for(lambda: self._stopping, self._interval_s)
                head, self._pending, stopping = self._pending, None, self._stopping
            first = False
            if head is not None:
                self._put(head)
            if stopping:
                with self._cond:
                    if self._pending is None:
                        return

    def _put(self, head: Head) -> None:
        try:
            self._sink.put_record_head(self._record_id, self._path, head.count, head.last_hash, self._key_id,
                                       head.closed, head.signature)
        except Exception as exc:  # the store is outside the session: report, never raise
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("record %s: anchoring the head in the visit store failed: %s", self._record_id, exc)
        else:
            self._anchored, self.error = head, None
        self._answered.set()
