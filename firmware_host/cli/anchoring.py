"""The visit store as the treatment record's anchor sink.

The store is opened on the record's anchoring thread at its first use, never on the
session's: opening a SQLite file (and migrating it) or reaching a PostgreSQL server takes
time and can fail, and neither may delay or stop a session. A store that cannot be
opened is reported like any anchoring failure (`TreatmentRecord.anchor_error`).
"""

from __future__ import annotations

import threading
from typing import Any


class StoreAnchor:
    """`put_record_head`/`get_record_head` of the visit store at `url` (None: the default)."""

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
                        closed: bool) -> None:
        self._open().put_record_head(record_id, path, count, last_hash, key_id, closed)

    def get_record_head(self, record_id: str) -> Any:
        return self._open().get_record_head(record_id)
