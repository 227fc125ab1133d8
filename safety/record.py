"""Append-only, hash-chained treatment record (JSON lines).

Each line is the canonical JSON (sorted keys, compact, UTF-8) of
`{"i", "t", "mono", "kind", "data", "prev", "hash"}`: `hash` is the SHA-256 of the
canonical JSON of the record without `hash`; `prev` is the previous record's `hash`
(64 zeros for the first). Every record is written with O_APPEND, flushed and fsynced.
Reopening resumes the chain. A partial last line left by a killed process is reported as
`truncated_tail`; if the file is reopened after that, the fragment is closed off and
named (by its SHA-256) in a `resume` record, so the chain still verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import SafetyError

GENESIS = "0" * 64


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class RecordVerdict:
    ok: bool
    records: int                 # complete records that verified
    first_bad_line: int | None   # 1-based line number of the first failure
    reason: str
    truncated_tail: bool         # a partial final line (killed writer); records before it verified
    closed: bool = False         # the last record is a `close` record
    last_hash: str = GENESIS


def verify_record(path: str | Path) -> RecordVerdict:
    """Check every line's hash, index and link to the previous line."""
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()                       # b"" when the file ends with a newline
    prev, count, kind = GENESIS, 0, ""
    pending_fragment: bytes | None = None
    for n, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
            ok_shape = isinstance(rec, dict) and set(rec) == {"i", "t", "mono", "kind", "data", "prev", "hash"}
        except ValueError:
            ok_shape = False
        if not ok_shape:
            if pending_fragment is None and n < len(lines):   # may be a fragment named by the next line
                pending_fragment = line
                continue
            return RecordVerdict(False, count, n, "line is not a complete record", False, last_hash=prev)
        if pending_fragment is not None:
            named = rec["kind"] == "resume" and rec["data"].get("fragment_sha256") == \
                hashlib.sha256(pending_fragment).hexdigest()
            if not named:
                return RecordVerdict(False, count, n - 1, "line is not a complete record", False, last_hash=prev)
            pending_fragment = None
        if rec["i"] != count:
            return RecordVerdict(False, count, n, f"index {rec['i']} where {count} was expected", False,
                                 last_hash=prev)
        if rec["prev"] != prev:
            return RecordVerdict(False, count, n, "link to the previous record is broken", False, last_hash=prev)
        if _digest(rec) != rec["hash"]:
            return RecordVerdict(False, count, n, "record hash does not match its content", False, last_hash=prev)
        prev, count, kind = rec["hash"], count + 1, rec["kind"]
    if tail:
        return RecordVerdict(True, count, len(lines) + 1, "truncated final line (writer stopped mid-record)",
                             True, last_hash=prev)
    return RecordVerdict(True, count, None, "ok", False, closed=kind == "close", last_hash=prev)


class RecordWriteError(SafetyError):
    """The treatment record can no longer be written (disk full, file too large, I/O error).

    Latched: once a write failed, every later `append` raises it again at once, because a
    chain with a gap cannot be trusted. Treatment that cannot be documented does not go on,
    so the session stops; the stop itself never waits for, or depends on, the record.
    """


class TreatmentRecord:
    """Thread-safe writer; refuses to extend a file whose chain does not verify."""

    def __init__(self, path: str | Path, clock: Any = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: RecordWriteError | None = None
        fragment = b""
        if self.path.exists() and self.path.stat().st_size:
            verdict = verify_record(self.path)
            if not verdict.ok:
                raise ValueError(f"{self.path}: existing record does not verify (line {verdict.first_bad_line}: "
                                 f"{verdict.reason})")
            if verdict.truncated_tail:
                fragment = self.path.read_bytes().rsplit(b"\n", 1)[-1]
            self._next, self._prev = verdict.records, verdict.last_hash
        else:
            self._next, self._prev = 0, GENESIS
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fragment:
            self._write(b"\n")
            self.append("resume", {"fragment_sha256": hashlib.sha256(fragment).hexdigest(),
                                   "fragment_bytes": len(fragment)})

    @property
    def failed(self) -> RecordWriteError | None:
        """The write failure that latched this record, or None while it is writable."""
        return self._failed

    @property
    def last_hash(self) -> str:
        """Hash of the last record: keep it elsewhere to detect removal of whole final lines."""
        return self._prev

    def append(self, kind: str, data: dict[str, Any]) -> str:
        """Write one record durably; returns its hash. Raises `RecordWriteError` (latched)
        when the write fails."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._fd < 0:
                raise ValueError("treatment record is closed")
            rec = {"i": self._next, "t": datetime.now(timezone.utc).isoformat(), "mono": self._clock(),
                   "kind": kind, "data": data, "prev": self._prev}
            rec["hash"] = _digest(rec)
            try:
                self._write(_canonical(rec) + b"\n")
            except OSError as exc:
                self._failed = RecordWriteError(
                    f"the treatment record {self.path} can no longer be written ({exc.strerror or exc}); "
                    f"free space or choose another place for records before the next session")
                raise self._failed from exc
            self._next, self._prev = self._next + 1, rec["hash"]
            return rec["hash"]

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        """Write a `close` record (so a clean end is visible) and close the file."""
        if self._fd >= 0:
            try:
                if self._failed is None:
                    self.append("close", {})
            finally:
                with self._lock:
                    os.close(self._fd)
                    self._fd = -1

    def __enter__(self) -> TreatmentRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
