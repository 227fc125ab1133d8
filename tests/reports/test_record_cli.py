"""`estim keys` and `estim record verify`: plain messages and the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from firmware_host.cli import main
from firmware_host.cli.anchoring import StoreAnchor
from safety import TreatmentRecord
from safety.record_keys import RecordKeyError, create_key, key_dir, load_key

pytestmark = pytest.mark.timeout(60)
_capsys: pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _capture(capsys: pytest.CaptureFixture[str]) -> None:
    global _capsys
    _capsys = capsys


def estim(*args: str) -> subprocess.CompletedProcess[str]:
    """`estim ARGS` in this process (the command's own main, as the console script calls it)."""
    _capsys.readouterr()
    code = main(list(args))
    out = _capsys.readouterr()
    return subprocess.CompletedProcess(["estim", *args], code, out.out, out.err)


def test_keys_init_list_show_never_print_the_secret() -> None:
    done = estim("keys", "init", "--label", "Room 2")
    assert done.returncode == 0 and "created record key k-" in done.stdout
    key_id = done.stdout.split("created record key ")[1].split()[0]
    again = estim("keys", "init")
    assert again.returncode == 0 and "already exists" in again.stdout and key_id in again.stdout
    listed = json.loads(estim("keys", "list", "--json").stdout)
    assert [(k["id"], k["label"], k["default"]) for k in listed] == [(key_id, "Room 2", True)]
    shown = estim("keys", "show", key_id)
    secret = load_key(key_id).secret.hex()
    assert shown.returncode == 0 and "Room 2" in shown.stdout
    assert all(secret not in out.stdout for out in (done, again, shown, estim("keys", "list")))
    missing = estim("keys", "show", "k-0000000000000000")
    assert missing.returncode == 2 and "not on this computer" in missing.stderr and "Traceback" not in missing.stderr


def test_a_key_file_others_can_read_is_refused() -> None:
    key = create_key("loose")
    os.chmod(key_dir() / f"{key.key_id}.json", 0o644)
    with pytest.raises(RecordKeyError, match="chmod 600"):
        load_key(key.key_id)


def anchored(path: Path) -> TreatmentRecord:
    """A record anchored in this test's default visit store (its first head stored), one record more."""
    record = TreatmentRecord(path, anchor=StoreAnchor(None))
    assert record.wait_anchored(20.0), record.anchor_error
    record.append("stop", {"reason": "done"})
    return record


def test_verify_exit_codes(tmp_path: Path) -> None:
    closed = tmp_path / "closed.jsonl"
    anchored(closed).close()
    assert estim("record", "verify", str(closed)).returncode == 0
    other = create_key("other room", make_default=False)
    wrong = estim("record", "verify", str(closed), "--key", other.key_id)
    assert wrong.returncode == 6 and other.key_id in wrong.stdout
    lines = closed.read_bytes().split(b"\n")
    record_id = json.loads(lines[0])["data"]["record_id"]
    closed.write_bytes(b"\n".join(lines[:-2]) + b"\n")                  # the close record removed
    tail = estim("record", "verify", str(closed))
    assert tail.returncode == 6 and "removed from its end" in tail.stdout
    closed.unlink()                                                      # the whole file deleted
    gone = estim("record", "verify", "--id", record_id)
    assert gone.returncode == 6 and "gone" in gone.stdout
    missing = estim("record", "verify", str(closed))
    assert missing.returncode == 7 and "--id" in missing.stderr

    killed = tmp_path / "killed.jsonl"
    record = anchored(killed)
    os.close(record._fd)                                                 # the host died between records
    cut = estim("record", "verify", str(killed))
    assert cut.returncode == 5 and "record boundary" in cut.stdout
    with open(killed, "ab") as f:
        f.write(b'{"i":2,"kind":"tel')                                   # ... or in the middle of one
    assert "cut mid-line" in estim("record", "verify", str(killed)).stdout

    unanchored = tmp_path / "unanchored.jsonl"
    with TreatmentRecord(unanchored) as rec:
        rec.append("stop", {"reason": "done"})
    none = estim("record", "verify", str(unanchored))
    assert none.returncode == 7 and "no entry" in none.stdout
    (key_dir() / f"{rec.key_id}.json").unlink()
    nokey = estim("record", "verify", str(unanchored))
    assert nokey.returncode == 7 and "not on this computer" in nokey.stdout
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert estim("record", "verify", str(junk)).returncode == 6
