"""`estim keys` and `estim record verify|show|anchor`: plain messages and the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.cli import main
from firmware_host.cli.anchoring import StoreAnchor
from firmware_host.sim.process import child_env
from safety import TreatmentRecord, read_entries
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


def test_keys_init_list_show_export_import_never_print_the_private_key(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    done = estim("keys", "init", "--label", "Room 2")
    assert done.returncode == 0 and "created record key k-" in done.stdout
    key_id = done.stdout.split("created record key ")[1].split()[0]
    again = estim("keys", "init")
    assert again.returncode == 0 and "already exists" in again.stdout and key_id in again.stdout
    listed = json.loads(estim("keys", "list", "--json").stdout)
    assert [(k["id"], k["label"], k["default"], k["signs_here"]) for k in listed] == [(key_id, "Room 2", True, True)]
    shown = estim("keys", "show", key_id)
    exported = estim("keys", "export", "--out", str(tmp_path / "public.json"))
    private = load_key(key_id).private.hex()
    assert shown.returncode == 0 and "Room 2" in shown.stdout and exported.returncode == 0
    assert all(private not in out.stdout for out in (done, again, shown, exported, estim("keys", "list")))
    assert private not in (tmp_path / "public.json").read_text()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "auditor"))        # another computer
    imported = estim("keys", "import", str(tmp_path / "public.json"))
    assert imported.returncode == 0 and f"trusted {key_id}" in imported.stdout
    assert not load_key(key_id).can_sign and "verifies only" in estim("keys", "list").stdout
    missing = estim("keys", "show", "k-0000000000000000")
    assert missing.returncode == 2 and "not on this computer" in missing.stderr and "Traceback" not in missing.stderr


def test_a_key_file_others_can_read_is_refused() -> None:
    key = create_key("loose")
    os.chmod(key_dir() / f"{key.key_id}.json", 0o644)
    with pytest.raises(RecordKeyError, match="chmod 600"):
        load_key(key.key_id)


def anchored(path: Path, **subject: object) -> TreatmentRecord:
    """A record anchored in this test's default visit store (its first head stored), one record more."""
    record = TreatmentRecord(path, anchor=StoreAnchor(None), **subject)
    assert record.wait_anchored(20.0), record.anchor_error
    record.append("stop", {"reason": "done"})
    return record


def test_verify_exit_codes(tmp_path: Path) -> None:
    closed = tmp_path / "closed.jsonl"
    anchored(closed).close()
    ok = estim("record", "verify", str(closed))
    record_id = next(e for e in read_entries(closed) if e["kind"] == "open")["data"]["record_id"]
    assert ok.returncode == 0 and record_id in ok.stdout                      # what `verify --id` takes
    other = create_key("other room", make_default=False)
    wrong = estim("record", "verify", str(closed), "--key", other.key_id)
    assert wrong.returncode == 6 and other.key_id in wrong.stdout
    lines = closed.read_bytes().split(b"\n")
    closed.write_bytes(b"\n".join(lines[:-2]) + b"\n")                  # the close line removed
    tail = estim("record", "verify", str(closed))
    assert tail.returncode == 6 and "removed from its end" in tail.stdout
    assert estim("record", "show", str(closed)).returncode == 6             # show carries the same verdict
    assert estim("record", "verify", str(closed), "--no-store").returncode == 5   # the signatures alone
    closed.unlink()                                                      # the whole file deleted
    gone = estim("record", "verify", "--id", record_id)
    assert gone.returncode == 6 and "gone" in gone.stdout
    missing = estim("record", "verify", str(closed))
    assert missing.returncode == 7 and "--id" in missing.stderr

    killed = tmp_path / "killed.jsonl"
    record = anchored(killed)
    record._closing.set()
    os.close(record._fd)                                                 # the host died
    cut = estim("record", "verify", str(killed))
    assert cut.returncode == 5 and "not closed" in cut.stdout
    with open(killed, "ab") as f:
        f.write(b"[%d,[3" % killed.read_bytes().count(b"\n"))             # ... or in the middle of a line
    assert "not signed" in estim("record", "verify", str(killed)).stdout

    unanchored = tmp_path / "unanchored.jsonl"
    with TreatmentRecord(unanchored) as rec:
        rec.append("stop", {"reason": "done"})
    none = estim("record", "verify", str(unanchored))
    assert none.returncode == 7 and "no entry" in none.stdout
    (key_dir() / f"{rec.key_id}.json").unlink()
    nokey = estim("record", "verify", str(unanchored), "--no-store")
    assert nokey.returncode == 7 and "not on this computer" in nokey.stdout
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert estim("record", "verify", str(junk)).returncode == 6


def test_a_key_id_changed_in_line_one_is_an_alteration(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    anchored(path).close()
    text = path.read_text()
    key_id = json.loads(text.splitlines()[0])[1][7]
    path.write_text(text.replace(key_id, "k-0000000000000000", 1))
    done = estim("record", "verify", str(path))
    assert done.returncode == 6 and "k-0000000000000000" in done.stdout


def test_verify_never_makes_a_store_and_a_bad_one_is_a_plain_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with TreatmentRecord(path) as rec:
        rec.append("stop", {"reason": "done"})
    nowhere = tmp_path / "nowhere.sqlite3"
    done = estim("record", "verify", str(path), "--store", f"sqlite:///{nowhere}")
    assert done.returncode == 7 and "no visit store" in done.stdout and not nowhere.exists()
    newer = tmp_path / "newer.sqlite3"
    from firmware_host.visits import VisitStore

    VisitStore(f"sqlite:///{newer}").close()
    import sqlite3

    with sqlite3.connect(newer) as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    for args in (["record", "verify", str(path)], ["patient", "show", "P1"], ["record", "show", str(path)]):
        done = estim(*args, "--store", f"sqlite:///{newer}")
        assert "Traceback" not in done.stderr and done.returncode in (2, 7) and "newer estim" in done.stdout + done.stderr


def test_a_store_password_never_reaches_the_record(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    url = f"sqlite:///{tmp_path / 'v.sqlite3'}"
    done = subprocess.run([sys.executable, "-m", "firmware_host", "run", "--channel", "1", "--frequency", "2",
                           "--pulse-width", "200", "--amplitude", "0.5", "--seconds", "0.2", "--sites",
                           "left:forearm,left:forearm", "--inserted", "10", "--record", str(record), "--store",
                           url.replace("sqlite:///", "sqlite://user:hunter2@/")], capture_output=True, text=True,
                          env=child_env(), timeout=50)
    assert "hunter2" not in record.read_text() and "hunter2" not in done.stdout + done.stderr
    assert "hunter2" not in estim("record", "show", str(record), "--no-store").stdout


def test_the_log_is_readable_by_its_user_only() -> None:
    subprocess.run([sys.executable, "-m", "firmware_host", "keys", "list"], capture_output=True, env=child_env(),
                   timeout=30)
    log = Path(child_env()["XDG_STATE_HOME"]) / "estim" / "estim.log"
    assert log.stat().st_mode & 0o777 == 0o600


def test_a_non_utf8_argument_is_refused_in_plain_words(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "firmware_host", "visit", "start", "P1", "--no", "all",
                           "--operator", b"J\xe9r\xf4me".decode("utf-8", "surrogateescape")], capture_output=True,
                          text=True, env=child_env(), timeout=50)
    assert done.returncode == 2 and "not UTF-8" in done.stderr and "Traceback" not in done.stderr


def test_records_written_while_the_store_is_down_are_said_and_anchored_later(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("")                                               # a file where the store's folder should be
    down = f"sqlite:///{blocked / 'visits.sqlite3'}"
    record = tmp_path / "r.jsonl"
    run = [sys.executable, "-m", "firmware_host", "run", "--channel", "1", "--frequency", "2", "--pulse-width", "200",
           "--amplitude", "0.5", "--seconds", "0.2", "--sites", "left:forearm,left:forearm", "--inserted", "10"]
    done = subprocess.run([*run, "--record", str(record), "--store", down], capture_output=True, text=True,
                          env=child_env(), timeout=50)
    assert done.returncode == 0 and "did not take this record's final head" in done.stderr
    assert estim("record", "verify", str(record)).returncode == 7               # the store never saw it
    later = subprocess.run([*run, "--record", str(tmp_path / "next.jsonl")], capture_output=True, text=True,
                           env=child_env(), timeout=50)                         # the next session reaches the store
    assert later.returncode == 0 and f"{record}, written while the visit store was out of reach" in later.stderr
    assert estim("record", "verify", str(record)).returncode == 0
    third = tmp_path / "third.jsonl"
    subprocess.run([*run, "--record", str(third), "--store", down], capture_output=True, env=child_env(), timeout=50)
    anchored_now = estim("record", "anchor", str(third))
    assert anchored_now.returncode == 0 and "anchored" in anchored_now.stdout
    assert estim("record", "verify", str(third)).returncode == 0
