"""The record heads a verifier asks the visit store for, read without SQLAlchemy.

`estim record verify` must answer in well under a second, and loading the database layer
alone takes longer than that budget on a clinic laptop. A SQLite store is therefore read
here with the standard library, read-only (a store that is not there is never created); a
store on PostgreSQL, or a SQLite store whose schema is not the current one, is read through
`VisitStore`. Both give the same `RecordHead`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from .values import RecordHead, StoreError
from .where import KNOWN_REVISIONS, SCHEMA_REVISION, default_url, sqlite_path

_COLUMNS = "record_id, path, count, last_hash, key_id, closed, signature, updated_at"


def open_heads(url: str | None) -> Any:
    """A reader of record heads (`get_record_head`, `record_at`, `close`) for the store at
    `url` (None: the default); raises StoreError when there is none or it cannot be read."""
    url = url or default_url()
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise StoreError(f"there is no visit store at {path}")
        reader = SqliteHeads(path)
        if reader.revision == SCHEMA_REVISION:
            return reader
        reader.close()
        if reader.revision not in KNOWN_REVISIONS:
            raise StoreError(f"the visit store at {path} was made by a newer estim (schema revision "
                             f"{reader.revision}); use that version, or update this one")
    from .store import VisitStore

    return VisitStore(url, create=False)


class SqliteHeads:
    def __init__(self, path: Any) -> None:
        self._path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            row = self._db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"the visit store at {path} cannot be read ({exc})") from None
        self.revision = row[0] if row else None

    def _one(self, sql: str, *args: Any) -> Any:
        try:
            return self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"the visit store at {self._path} cannot be read ({exc})") from None

    def get_record_head(self, record_id: str) -> RecordHead | None:
        row = self._one(f"SELECT {_COLUMNS} FROM record_heads WHERE record_id = ?", record_id)
        if row is None:
            return None
        updated = datetime.fromisoformat(row[7])
        return RecordHead(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6],
                          updated if updated.tzinfo else updated.replace(tzinfo=timezone.utc))

    def record_at(self, path: str) -> str | None:
        from pathlib import Path

        row = self._one("SELECT record_id FROM record_heads WHERE path = ? ORDER BY updated_at DESC LIMIT 1",
                        str(Path(path).resolve()))
        return None if row is None else row[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteHeads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
