"""The treatment record writer: format, kinds, compact events, durability, failures, resuming."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety import (KINDS, RecordStatus, RecordWriteError, TreatmentRecord, UnknownRecordKind, read_entries,
                    read_readings, read_record, verify_record)
from safety.record_codec import Decoder, Encoder
from safety.record_keys import default_key_id, import_public, key_dir, load_key

pytestmark = pytest.mark.timeout(30)


def write(path, n=5, **kw):
    with TreatmentRecord(path, **kw) as rec:
        for i in range(n):
            rec.append("refusal", {"n": i, "text": "µA"})
    return path


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def reading(t, ch, **extra):
    return {"device_time_ms": t, "channel": ch, "flags": 1, "latched_faults": 0, "amplitude_ua": 2000,
            "frequency_mhz": 2000, "phase_us": 200, "load_ohm": 1000, "charge_total_uc": t // 50, **extra}


def test_chain_verifies_and_is_closed(tmp_path):
    verdict = verify_record(write(tmp_path / "r.jsonl", patient="P1", visit=7))
    assert verdict.status is RecordStatus.CLOSED and verdict.records == 7 and verdict.key_id == default_key_id()
    assert (verdict.patient, verdict.visit) == ("P1", 7)
    first = json.loads(lines(tmp_path / "r.jsonl")[0])
    assert first[0] == 0 and first[1][0] == "open" and len(first[-1]) == 86        # signed
    assert [e["kind"] for e in read_entries(tmp_path / "r.jsonl")] == ["open", *["refusal"] * 5, "close"]


def test_verifying_needs_only_the_public_key(tmp_path):
    """An auditor's computer holds the clinic's public key only: it verifies, and cannot sign."""
    path = write(tmp_path / "r.jsonl")
    key = load_key(default_key_id())
    auditor = tmp_path / "auditor-keys"
    public = import_public(key.public_document(), auditor)
    assert not public.can_sign and "private" not in (auditor / f"{key.key_id}.pub.json").read_text()
    verdict = verify_record(path, keys=lambda key_id: load_key(key_id, auditor))
    assert verdict.closed and verdict.key_id == key.key_id
    other = tmp_path / "other.jsonl"
    write(other, 1)
    with open(other, "r+b") as f:                                        # reopened: not closed any more
        f.truncate(len(b"\n".join(lines(other)[:-1])) + 1)
    with pytest.raises(ValueError, match="public key only"):
        TreatmentRecord(other, key=load_key(key.key_id, auditor))


def test_a_first_record_creates_the_key_0600(tmp_path):
    assert default_key_id() is None
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    rec.close()
    assert rec.key_created and default_key_id() == rec.key_id
    key_file = key_dir() / f"{rec.key_id}.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    assert json.loads(key_file.read_text())["private"] not in (tmp_path / "r.jsonl").read_text()


def test_unknown_and_writer_kinds_are_refused_at_append(tmp_path):
    with TreatmentRecord(tmp_path / "r.jsonl") as rec:
        with pytest.raises(UnknownRecordKind, match="not registered"):
            rec.append("forged", {})
        for kind in ("open", "close", "resume"):
            with pytest.raises(UnknownRecordKind, match="written by the record itself"):
                rec.append(kind, {})
        with pytest.raises(ValueError):
            rec.append("stop", {"x": float("nan")})
    assert all(isinstance(text, str) and text for text in KINDS.values())


def test_every_event_comes_back_and_the_record_is_compact(tmp_path):
    path = tmp_path / "r.jsonl"
    sent = []
    with TreatmentRecord(path) as rec:
        for k in range(50):
            for ch in range(4):
                r = reading(100 * k, ch, shape=k % 3, burst_pulses=7, asym_ratio=1, interphase_us=None)
                if k == 20:
                    r["frequency_mhz"] = 100_000
                sent.append(r)
                rec.append("telemetry", r)
            if k == 25:
                rec.append("stop", {"reason": "operator"})
        odd = {"device_time_ms": 9, "channel": 0, "amplitude_ua": 1.5}
        rec.append("telemetry", odd)
        sent.append(odd)
    assert list(read_readings(path)) == sent
    kinds = [e["kind"] for e in read_entries(path)]
    assert kinds.index("stop") == 1 + 26 * 4               # right after every reading appended before it
    verdict = read_record(path)[0]
    assert verdict.ok and verdict.readings == len(sent)
    assert path.stat().st_size < 20 * len(sent)              # a reading costs what changed in it


events = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                      allow_infinity=False) | st.text(max_size=5),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                  max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["telemetry", "approved", "ack", "stop"]), st.integers(0, 10**6),
                          st.dictionaries(st.sampled_from(["channel", "serial", "amplitude_ua", "reason"]), events,
                                          max_size=4)), max_size=25))
def test_the_event_encoding_is_exactly_reversible(stream):
    encoder, decoder = Encoder(), Decoder()
    for kind, mono_ms, data in stream:
        wire = json.loads(json.dumps(encoder.encode(kind, mono_ms, data)))
        assert decoder.decode(wire) == (kind, mono_ms, data)


def test_waiting_events_reach_the_disk_within_a_second(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("telemetry", reading(0, 0))
    rec.append("approved", {"serial": 1})
    deadline = time.monotonic() + 5
    while len(lines(path)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rec.close()


def test_an_approval_is_on_disk_before_its_command_goes_to_the_wire(tmp_path):
    path = tmp_path / "r.jsonl"
    with TreatmentRecord(path) as rec:
        rec.append("approved", {"serial": 1, "command": {"type": "SetOutputs", "enabled": [1]}})
        assert len(lines(path)) == 1                         # the approval waits ...
        rec.append("consumed", {"serial": 1})
        assert len(lines(path)) == 2                         # ... and is written with its command
        written = lines(path)[1]
        assert written.count(b"[") >= 3 and b"SetOutputs" in written


def test_wall_time_comes_from_open_plus_mono(tmp_path):
    now = [10.0]
    path = tmp_path / "r.jsonl"
    with TreatmentRecord(path, clock=lambda: now[0]) as rec:
        now[0] = 12.5
        rec.append("stop", {"reason": "x"})
    entries = list(read_entries(path))
    from datetime import datetime
    gap = datetime.fromisoformat(entries[1]["t"]) - datetime.fromisoformat(entries[0]["t"])
    assert gap.total_seconds() == pytest.approx(2.5)


def test_reopen_resumes_the_chain(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("refusal", {"n": 1})
    os.close(rec._fd)            # the host died at a line boundary (no close record)
    rec._fd = -1
    with TreatmentRecord(path) as again:
        again.append("stop", {"ok": True})
    verdict = verify_record(path)
    assert verdict.closed and [e["kind"] for e in read_entries(path)] == ["open", "refusal", "resume", "stop",
                                                                          "close"]
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["excluded_bytes"] == 0


def test_reopen_after_a_writer_killed_mid_line(tmp_path):
    path = write(tmp_path / "r.jsonl", 3)
    kept = lines(path)[:-1]                                   # drop the close, cut the last line
    path.write_bytes(b"\n".join(kept[:-1]) + b"\n" + kept[-1][:25])
    assert verify_record(path).status is RecordStatus.TRUNCATED
    with TreatmentRecord(path) as rec:
        rec.append("stop", {"ok": True})
    verdict = verify_record(path)
    assert verdict.closed, verdict.reason
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["excluded_bytes"] == len(kept[-1][:25]) + 1   # the partial line and its newline


def test_an_unclosed_record_of_one_patient_is_not_continued_for_another(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path, patient="P1")
    rec._closing.set()
    os.close(rec._fd)
    rec._fd = -1
    for other in ("P2", None):
        with pytest.raises(ValueError, match="belongs to patient P1"):
            TreatmentRecord(path, patient=other)
    TreatmentRecord(path, patient="P1").close()


KILLED_WRITER = textwrap.dedent("""
    import sys
    from safety import TreatmentRecord
    rec = TreatmentRecord(sys.argv[1], clock=lambda: 0.0)      # the clock never moves: no signature is due
    for serial in range(int(sys.argv[2])):
        rec.append("approved", {"serial": serial})
        rec.append("consumed", {"serial": serial})
    print("written", flush=True)
    sys.stdin.read()
""")


def test_a_killed_writer_loses_no_command(tmp_path):
    """Commands written after the last signature are not data until their writer's computer
    checks their MACs and signs them: reopening the record does that, and nothing is lost."""
    from firmware_host.sim.process import child_env

    path = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), "40"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=child_env(), text=True)
    assert proc.stdout.readline() == "written\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed = verify_record(path)
    assert killed.status is RecordStatus.TRUNCATED and killed.unsigned_lines == 40 and killed.records == 1
    assert [e["kind"] for e in read_entries(path)] == ["open"]   # unsigned: never shown
    last = json.loads(lines(path)[-1])
    forged = [last[0] + 1, *last[1:-1], "AAAAAAAAAAA"]                # someone adds a line of their own
    with open(path, "ab") as f:
        f.write(json.dumps(forged, separators=(",", ":")).encode() + b"\n")
    assert verify_record(path).unsigned_lines == 41
    TreatmentRecord(path).close()
    consumed = [e["data"]["serial"] for e in read_entries(path) if e["kind"] == "consumed"]
    assert consumed == list(range(40))
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["excluded_bytes"] > 0                    # the forged line, named and left out
    assert verify_record(path).closed


def test_a_closed_record_is_not_extended(tmp_path):
    path = write(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="closed"):
        TreatmentRecord(path)


def test_refuses_to_extend_a_tampered_record(tmp_path):
    path = tmp_path / "r.jsonl"
    seconds = iter(range(100))
    write(path, clock=lambda: float(next(seconds)))                 # a second apart: every line signed
    path.write_bytes(b"\n".join(lines(path)[:-1]).replace("µA".encode(), b"mA") + b"\n")
    with pytest.raises(ValueError, match="does not verify"):
        TreatmentRecord(path)


def test_tampered_unsigned_lines_are_left_out_when_the_record_is_continued(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(lines(write(path))[:-1]).replace("µA".encode(), b"mA") + b"\n")
    assert verify_record(path).status is RecordStatus.TRUNCATED      # the changed line is not signed
    TreatmentRecord(path).close()                                    # its MAC fails: it and all after are out
    assert [e["kind"] for e in read_entries(path)] == ["open", "resume", "close"]


def test_threads_share_one_chain(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)

    def worker(k):
        for i in range(10):
            rec.append("fault", {"k": k, "i": i})
            rec.append("telemetry", reading(100 * i, k))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    verdict = read_record(path)[0]
    assert verdict.readings == 40 and verdict.closed
    assert rec.last_hash == verdict.last_hash and rec.count == verdict.records


class FailingDisk:
    """os.write that fails (ENOSPC) after the record opened."""

    def __init__(self, monkeypatch):
        self.real = os.write
        monkeypatch.setattr(os, "write", self)
        self.failing = False

    def __call__(self, fd, data):
        if self.failing:
            raise OSError(28, "No space left on device")
        return self.real(fd, data)


def test_a_failed_write_latches_and_raises_at_the_next_append(tmp_path, monkeypatch):
    disk = FailingDisk(monkeypatch)
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    disk.failing = True
    with pytest.raises(RecordWriteError, match="No space left"):
        rec.append("stop", {"reason": "x"})
    assert rec.failed is not None
    with pytest.raises(RecordWriteError):
        rec.append("telemetry", reading(0, 0))
    rec.close()                                              # already reported: closes quietly


def test_a_failed_background_flush_surfaces_within_about_a_second(tmp_path, monkeypatch):
    disk = FailingDisk(monkeypatch)
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    disk.failing = True
    rec.append("telemetry", reading(0, 0))                   # waits: the flusher's write fails
    deadline = time.monotonic() + 5
    while rec.failed is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(RecordWriteError):
        rec.append("telemetry", reading(100, 0))


def test_a_failed_flush_nobody_saw_is_raised_by_close(tmp_path, monkeypatch):
    disk = FailingDisk(monkeypatch)
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    rec.append("telemetry", reading(0, 0))
    disk.failing = True
    with pytest.raises(RecordWriteError):
        rec.close()


@pytest.mark.timeout(60)
def test_sessions_started_at_once_on_a_new_computer_make_one_record_key(tmp_path):
    """Two rooms' first sessions on a computer with no key yet: one key is created and both sign
    with it (they raced to a torn `default` before: one session refused, keys multiplied)."""
    keys = tmp_path / "keys"
    code = ("import sys; from pathlib import Path; from safety.record_keys import default_key_or_create; "
            "key, created = default_key_or_create(Path(sys.argv[1])); print(key.key_id, created)")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(keys)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=root) for _ in range(8)]
    results = [p.communicate(timeout=50) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    said = [out.split() for out, _ in results]
    assert len({key_id for key_id, _ in said}) == 1 and [created for _, created in said].count("True") == 1
    assert len(list(keys.glob("k-*.json"))) == 1
