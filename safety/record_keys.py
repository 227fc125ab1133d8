"""Record keys: Ed25519 key pairs that sign treatment records, kept out of the record.

A computer signs its records with its private key; anyone holding the matching public
key can verify them and nobody can sign with it, so a clinic publishes its public keys
(`estim keys export`) and a second treatment room or an auditor verifies with those
alone (`estim keys import`). Keys live one file per key in the user's config directory
(`$XDG_CONFIG_HOME/estim/keys/` or `~/.config/estim/keys/`), the directory 0700 and each
file 0600: `k-….json` holds a key pair, `k-….pub.json` a public key only. The id is
derived from the public key (`k-` + 16 hex digits of a SHA-256), so a record names its key
without revealing anything and a key file cannot claim another key's id. One key is the
default (`default`): new records are signed with it. Rotating (`estim keys init --new`)
keeps every older key, so older records keep verifying.

The private key also derives, per record, the short MAC key that authenticates lines
written between two signatures (see `record`): only the computer that wrote a record can
recover lines a killed writer left unsigned.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ALGORITHM = "ed25519"
PUBLIC_SUFFIX = ".pub.json"


class RecordKeyError(LookupError):
    """A record key is missing, unreadable, too widely readable or malformed."""


def key_dir() -> Path:
    """Where keys live: `$XDG_CONFIG_HOME/estim/keys`, else `~/.config/estim/keys`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "estim" / "keys"


def key_id_of(public: bytes) -> str:
    return "k-" + hashlib.sha256(b"estim record key id\x00" + public).hexdigest()[:16]


@dataclass(frozen=True)
class RecordKey:
    """A public key that verifies records, with its private half when this computer signs
    with it; the private half never appears in repr, a record or a public key file."""

    key_id: str
    public: bytes
    label: str = ""
    created: str = ""
    private: bytes | None = field(default=None, repr=False)

    @property
    def can_sign(self) -> bool:
        return self.private is not None

    def sign(self, message: bytes) -> bytes:
        if self.private is None:
            raise RecordKeyError(f"record key {self.key_id} is a public key only: it verifies, it cannot sign")
        return _private(self).sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            _public(self).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def tail_mac_key(self, record_id: str) -> bytes:
        """The per-record key of the short MACs between signatures (private half only)."""
        if self.private is None:
            raise RecordKeyError(f"record key {self.key_id} is a public key only")
        return hmac.new(self.private, b"estim record tail mac\x00" + record_id.encode(), hashlib.sha256).digest()

    def public_document(self) -> dict[str, Any]:
        return {"id": self.key_id, "algorithm": ALGORITHM, "public": self.public.hex(), "label": self.label,
                "created": self.created}


_LOADED: dict[tuple[str, bytes], Any] = {}


def _public(key: RecordKey) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    cached = _LOADED.get(("pub", key.public))
    if cached is None:
        cached = _LOADED[("pub", key.public)] = Ed25519PublicKey.from_public_bytes(key.public)
    return cached


def _private(key: RecordKey) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert key.private is not None
    cached = _LOADED.get(("priv", key.private))
    if cached is None:
        cached = _LOADED[("priv", key.private)] = Ed25519PrivateKey.from_private_bytes(key.private)
    return cached


def _write_private(path: Path, body: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder(directory: Path | None) -> Path:
    folder = directory or key_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def create_key(label: str = "", directory: Path | None = None, make_default: bool = True) -> RecordKey:
    """Create a new key pair (file 0600) and, by default, make it the key new records use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = _folder(directory)
    pair = Ed25519PrivateKey.generate()
    private = pair.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = pair.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = RecordKey(key_id_of(public), public, label, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    private)
    _write_private(folder / f"{key.key_id}.json",
                   json.dumps({**key.public_document(), "private": private.hex()}, indent=2) + "\n")
    if make_default:
        _write_default(folder, key.key_id)
    return key


def import_public(document: dict[str, Any], directory: Path | None = None) -> RecordKey:
    """Trust a public key (as `estim keys export` writes it) for verifying records."""
    key = _parse(document, "the public key", private=False)
    folder = _folder(directory)
    if (folder / f"{key.key_id}.json").exists() or (folder / f"{key.key_id}{PUBLIC_SUFFIX}").exists():
        return key
    _write_private(folder / f"{key.key_id}{PUBLIC_SUFFIX}", json.dumps(key.public_document(), indent=2) + "\n")
    return key


def _write_default(folder: Path, key_id: str) -> None:
    tmp = folder / f"default.{os.getpid()}.tmp"
    tmp.write_text(key_id + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, folder / "default")


def _parse(doc: Any, where: str, private: bool) -> RecordKey:
    """A key from its file's JSON; raises RecordKeyError when it is not a whole, consistent key."""
    try:
        if doc.get("algorithm") != ALGORITHM:
            raise RecordKeyError(f"{where} is not an {ALGORITHM} record key (algorithm "
                                 f"{doc.get('algorithm')!r}: a key of an older estim, whose records are not "
                                 "of this version)")
        public = bytes.fromhex(doc["public"])
        secret = bytes.fromhex(doc["private"]) if private else None
        if len(public) != 32 or key_id_of(public) != doc.get("id") or (secret is not None and len(secret) != 32):
            raise ValueError
        key = RecordKey(doc["id"], public, str(doc.get("label", "")), str(doc.get("created", "")), secret)
        if secret is not None and not key.verify(key.sign(b"check"), b"check"):
            raise ValueError
        return key
    except RecordKeyError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RecordKeyError(f"{where} is damaged (it is not a whole record key)") from None


def _read(path: Path, private: bool) -> RecordKey:
    if private:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise RecordKeyError(f"record key file {path} can be read by other users (mode {mode:o}); "
                                 f"run: chmod 600 {path}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise RecordKeyError(f"record key file {path} is damaged (it is not a whole record key)") from None
    key = _parse(doc, f"record key file {path}", private)
    if path.name != f"{key.key_id}{'.json' if private else PUBLIC_SUFFIX}":
        raise RecordKeyError(f"record key file {path} holds key {key.key_id}, not the key its name says")
    return key


def load_key(key_id: str, directory: Path | None = None) -> RecordKey:
    """The key with this id (its pair when this computer has it, else its trusted public
    key); raises `RecordKeyError` in plain words when it cannot be used."""
    folder = directory or key_dir()
    if not key_id.startswith("k-") or "/" in key_id:
        raise RecordKeyError(f"{key_id!r} is not a record key id (k- and 16 hex digits)")
    pair, public = folder / f"{key_id}.json", folder / f"{key_id}{PUBLIC_SUFFIX}"
    if pair.is_file():
        return _read(pair, private=True)
    if public.is_file():
        return _read(public, private=False)
    raise RecordKeyError(f"record key {key_id} is not on this computer (looked in {folder}); import the clinic's "
                         f"public key (`estim keys export` where it was made, then `estim keys import FILE` here)")


def list_keys(directory: Path | None = None) -> list[RecordKey]:
    """Every usable key in the directory (pairs and trusted public keys), oldest first."""
    folder = directory or key_dir()
    keys = {}
    for path in sorted(folder.glob("k-*.json")) if folder.is_dir() else []:
        key_id = path.name.removesuffix(PUBLIC_SUFFIX).removesuffix(".json")
        try:
            keys[key_id] = load_key(key_id, folder)
        except RecordKeyError:
            continue
    return sorted(keys.values(), key=lambda k: (k.created, k.key_id))


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
        folder = _folder(directory)
        with open(folder / "first-use.lock", "a") as lock:  # two sessions started at once on a new
            fcntl.flock(lock, fcntl.LOCK_EX)                 # computer make one key, not a torn default
            key_id = default_key_id(directory)
            if key_id is None:
                return create_key("created on first use", directory), True
    key = load_key(key_id, directory)
    if not key.can_sign:
        raise RecordKeyError(f"the default record key {key_id} is a public key only on this computer; "
                             "run `estim keys init --new` to make this computer's own")
    return key, False
