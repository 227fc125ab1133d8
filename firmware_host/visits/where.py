"""Where the visit store is (its URL) and which schema this estim keeps it at: light enough
for `estim record verify` to know without loading the database layer."""

from __future__ import annotations

import os
from pathlib import Path

STORE_URL_ENV = "ESTIM_STORE_URL"
SCHEMA_REVISION = "0003"
KNOWN_REVISIONS = ("0001", "0002", "0003")
"""The newest migration shipped, and every one (a test checks both against the migrations)."""


def default_url() -> str:
    """ESTIM_STORE_URL, else a SQLite file in the user's data directory."""
    if os.environ.get(STORE_URL_ENV):
        return os.environ[STORE_URL_ENV]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'estim' / 'visits.sqlite3'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL, or None for anything else."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url[len("sqlite:///"):]
    return Path(path) if path and path != ":memory:" else None
