"""Record keys: the secret that authenticates treatment records, kept out of the record.

A key is 32 random bytes for HMAC-SHA256, stored one file per key in the user's config
directory (`$XDG_CONFIG_HOME/estim/keys/` or `~/.config/estim/keys/`), the directory 0700
and each file 0600. Its id is derived from the secret (`k-` + 16 hex digits of a SHA-256),
so a record names the key that signed it without revealing it, and a key file cannot
claim another key's id. One key is the default (`default` in the same directory): new
records are signed with it. HMAC was chosen over signatures so that verifying a
30-minute session stays well under a second; whoever can verify can also sign, so key
files are kept like any clinic secret (backed up, never mailed with a record).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ALGORITHM = "hmac-sha256"
SECRET_BYTES = 32


class RecordKeyError(LookupError):
    """A record key is missing, unreadable, too widely readable or malformed."""


def key_dir() -> Path:
    """Where keys live: `$XDG_CONFIG_HOME/estim/keys`, else `~/.config/estim/keys`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "estim" / "keys"


def key_id_of(secret: bytes) -> str:
    return "k-" + hashlib.sha256(b"estim record key id\x00" + secret).hexdigest()[:16]


@dataclass(frozen=True)
class RecordKey:
    """One clinic's or device's record key; `secret` never appears in repr or a record."""

    key_id: str
    secret: bytes = field(repr=False)
    label: str = ""
    created: str = ""

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data`, truncated to 128 bits (RFC 2104 §5, RFC 4868)."""
        return hmac.new(self.secret, data, hashlib.sha256).digest()[:16]


def create_key(label: str = "", directory: Path | None = None, make_default: bool = True) -> RecordKey:
    """Create a new key file (0600) and, by default, make it the key new records use."""
    folder = directory or key_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    secret = secrets.token_bytes(SECRET_BYTES)
    key = RecordKey(key_id_of(secret), secret, label,
                    datetime.now(timezone.utc).isoformat(timespec="seconds"))
    body = json.dumps({"id": key.key_id, "algorithm": ALGORITHM, "secret": secret.hex(), "label": label,
                       "created": key.created}, indent=2) + "\n"
    fd = os.open(folder / f"{key.key_id}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if make_default:
        _write_default(folder, key.key_id)
    return key


def _write_default(folder: Path, key_id: str) -> None:
    tmp = folder / "default.tmp"
    tmp.write_text(key_id + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, folder / "default")


def load_key(key_id: str, directory: Path | None = None) -> RecordKey:
    """The key with this id; raises `RecordKeyError` in plain words when it cannot be used."""
    folder = directory or key_dir()
    path = folder / f"{key_id}.json"
    if not key_id.startswith("k-") or "/" in key_id or not path.is_file():
        raise RecordKeyError(f"record key {key_id} is not on this computer (looked in {folder}); "
                             "copy that key file here, or verify on the computer that wrote the record")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RecordKeyError(f"record key file {path} can be read by other users (mode {mode:o}); "
                             f"run: chmod 600 {path}")
    try:
        doc = json.loads(path.read_text())
        secret = bytes.fromhex(doc["secret"])
        if doc.get("algorithm") != ALGORITHM or key_id_of(secret) != key_id or doc.get("id") != key_id:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise RecordKeyError(f"record key file {path} is damaged (it does not hold key {key_id})") from None
    return RecordKey(key_id, secret, str(doc.get("label", "")), str(doc.get("created", "")))


def list_keys(directory: Path | None = None) -> list[RecordKey]:
    """Every usable key in the directory, oldest first."""
    folder = directory or key_dir()
    keys = []
    for path in sorted(folder.glob("k-*.json")) if folder.is_dir() else []:
        try:
            keys.append(load_key(path.stem, folder))
        except RecordKeyError:
            continue
    return sorted(keys, key=lambda k: (k.created, k.key_id))


def default_key_id(directory: Path | None = None) -> str | None:
    path = (directory or key_dir()) / "default"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def default_key_or_create(directory: Path | None = None) -> tuple[RecordKey, bool]:
    """The key new records are signed with, creating one on a first run; `True` when it was
    just created."""
    key_id = default_key_id(directory)
    if key_id is None:
        return create_key("created on first use", directory), True
    return load_key(key_id, directory), False
