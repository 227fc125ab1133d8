"""The visit store as the treatment record's anchor sink, and anchoring afterwards.

The store is opened on the record's anchoring thread at its first use, never on the
session's: opening a SQLite file (and migrating it) or reaching a PostgreSQL server takes
time and can fail, and neither may delay or stop a session. A store that cannot be
opened is reported like any anchoring failure (`TreatmentRecord.anchor_error`).

A record whose head the store did not take (it was down, or unreachable) is said so when
the record closes and remembered in `unanchored` in the user's data directory; the next
session that reaches the store anchors it, and `estim record anchor PATH` does it at once.
Anchoring afterwards puts the record's last signed head in the store and links the record
to the visit its first line names; on the computer that wrote it, lines a killed writer
left unsigned are first checked (MAC) and signed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from safety import TreatmentRecord

log = logging.getLogger(__name__)


class StoreAnchor:
    """`put_record_head`/`get_record_head`/`record_at` of the visit store at `url` (None: the default)."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                from ..visits import VisitStore

                self._store = VisitStore(self._url)
            return self._store

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool, signature: str) -> None:
        self._open().put_record_head(record_id, path, count, last_hash, key_id, closed, signature)

    def get_record_head(self, record_id: str) -> Any:
        return self._open().get_record_head(record_id)

    def record_at(self, path: str) -> str | None:
        return self._open().record_at(path)


class AnnouncedRecord(TreatmentRecord):
    """A record that says, when it closes, that the visit store did not take its final head
    (and remembers it, so it is anchored later)."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            anchorer = self._anchorer
            if anchorer is not None and (anchorer.anchored is None or anchorer.anchored != self.signed_head):
                why = self.anchor_error or "the visit store did not answer"
                remember_unanchored(self.path)
                print(f"notice: the visit store did not take this record's final head ({why}); it will be anchored "
                      f"by the next session that reaches the store, or now with `estim record anchor {self.path}`",
                      file=sys.stderr)


def _pending_file() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "estim" / "unanchored"


def remember_unanchored(path: Path) -> None:
    try:
        target = _pending_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (str(Path(path).resolve()) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("could not remember %s as unanchored: %s", path, exc)


def anchor_record(path: Path, store: Any) -> tuple[Any, str]:
    """Anchor one record in an open visit store: seal what this computer wrote unsigned,
    put its last signed head, link it to the visit it names. (verdict, what was done)."""
    from safety import RecordStatus, verify_record
    from safety.record import seal_record
    from safety.record_keys import RecordKeyError, load_key

    verdict = verify_record(path)
    done = []
    if verdict.status is RecordStatus.TRUNCATED:
        try:
            if load_key(verdict.key_id or "").can_sign:
                seal_record(path)
                verdict = verify_record(path)
                done.append("signed what its writer left unsigned")
        except RecordKeyError:
            pass
    if not verdict.ok or verdict.records == 0:
        return verdict, ""
    store.put_record_head(verdict.record_id, str(Path(path).resolve()), verdict.records, verdict.last_hash,
                          verdict.key_id, verdict.closed, verdict.last_signature)
    done.append(f"anchored at {verdict.records} line(s)" + (" and its close" if verdict.closed else ""))
    if verdict.visit is not None:
        store.link_record(verdict.visit, verdict.record_id, path)
        done.append(f"linked to visit {verdict.visit}")
    return verdict, "; ".join(done)


def anchor_pending(url: str | None) -> None:
    """Anchor the records remembered as unanchored, now that the store answers (quietly
    drops those that are gone; says what it anchored)."""
    pending = _pending_file()
    try:
        paths = list(dict.fromkeys(p for p in pending.read_text().splitlines() if p))
    except OSError:
        return
    from ..visits import StoreError, VisitStore

    left = []
    try:
        with VisitStore(url) as store:
            for text in paths:
                path = Path(text)
                if not path.is_file():
                    continue
                try:
                    verdict, done = anchor_record(path, store)
                except (StoreError, OSError, ValueError) as exc:
                    log.warning("anchoring %s later failed: %s", path, exc)
                    left.append(text)
                    continue
                if done:
                    print(f"notice: {path}, written while the visit store was out of reach: {done}", file=sys.stderr)
                else:
                    print(f"notice: {path} was not anchored: {verdict.reason}", file=sys.stderr)
    except StoreError:
        return
    tmp = pending.with_suffix(".tmp")
    tmp.write_text("".join(p + "\n" for p in left))
    os.chmod(tmp, 0o600)
    os.replace(tmp, pending)
