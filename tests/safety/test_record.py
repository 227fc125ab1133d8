"""The treatment record writer: format, kinds, compact telemetry, durability, failures."""

import json
import os
import threading
import time

import pytest

from safety import (KINDS, RecordStatus, RecordWriteError, TreatmentRecord, UnknownRecordKind, read_entries,
                    read_readings, verify_record)
from safety.record_keys import default_key_id, key_dir

pytestmark = pytest.mark.timeout(30)


def write(path, n=5):
    with TreatmentRecord(path) as rec:
        for i in range(n):
            rec.append("approved", {"n": i, "text": "µA"})
    return path


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def reading(t, ch, **extra):
    return {"device_time_ms": t, "channel": ch, "flags": 1, "latched_faults": 0, "amplitude_ua": 2000,
            "frequency_mhz": 2000, "phase_us": 200, "load_ohm": 1000, "charge_total_uc": t // 50, **extra}


def test_chain_verifies_and_is_closed(tmp_path):
    verdict = verify_record(write(tmp_path / "r.jsonl"))
    assert verdict.status is RecordStatus.CLOSED and verdict.records == 7 and verdict.key_id == default_key_id()
    first = json.loads(lines(tmp_path / "r.jsonl")[0])
    assert list(first) == ["i", "kind", "mono", "data", "mac"] and first["kind"] == "open"
    assert first["data"]["key_id"] == verdict.key_id and first["data"]["record_id"] == verdict.record_id


def test_a_first_record_creates_the_key_0600(tmp_path):
    assert default_key_id() is None
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    rec.close()
    assert rec.key_created and default_key_id() == rec.key_id
    key_file = key_dir() / f"{rec.key_id}.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    assert key_file.read_text() not in (tmp_path / "r.jsonl").read_text()


def test_unknown_and_writer_kinds_are_refused_at_append(tmp_path):
    with TreatmentRecord(tmp_path / "r.jsonl") as rec:
        with pytest.raises(UnknownRecordKind, match="not registered"):
            rec.append("forged", {})
        for kind in ("open", "close", "resume", "telemetry_block"):
            with pytest.raises(UnknownRecordKind, match="written by the record itself"):
                rec.append(kind, {})
    assert all(isinstance(text, str) and text for text in KINDS.values())


def test_telemetry_is_stored_compactly_and_every_reading_comes_back(tmp_path):
    path = tmp_path / "r.jsonl"
    sent = []
    with TreatmentRecord(path) as rec:
        for k in range(50):
            for ch in range(4):
                r = reading(100 * k, ch, shape=k % 3, burst_pulses=7, asym_ratio=1)
                if k == 20:
                    r["frequency_mhz"] = 100_000
                sent.append(r)
                rec.append("telemetry", r)
            if k == 25:
                rec.append("stop", {"reason": "operator"})
        odd = {"device_time_ms": 9, "channel": 0, "amplitude_ua": 1.5}   # not all integers: kept as it is
        rec.append("telemetry", odd)
        sent.append(odd)
    assert list(read_readings(path)) == sent
    kinds = [e["kind"] for e in read_entries(path)]
    assert kinds.index("stop") == 1 + 26 * 4               # right after every reading appended before it
    verdict = verify_record(path)
    assert verdict.ok and verdict.readings == len(sent)
    assert path.stat().st_size < 60 * len(sent)              # far less than a line per reading


def test_a_new_field_set_starts_a_new_block(tmp_path):
    path = tmp_path / "r.jsonl"
    sent = [reading(0, 0), reading(100, 0), reading(200, 0, interphase_us=20), reading(300, 0, interphase_us=20),
            reading(400, 0, interphase_us=None, shape=None), reading(500, 0, interphase_us=None, shape=None)]
    with TreatmentRecord(path) as rec:
        for r in sent:
            rec.append("telemetry", r)
    assert list(read_readings(path)) == sent                 # a v1 reading's null v2 fields come back null
    assert sum(b'"kind":"telemetry_block"' in line for line in lines(path)) == 3


def test_buffered_telemetry_reaches_the_disk_within_a_second(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("telemetry", reading(0, 0))
    deadline = time.monotonic() + 5
    while not list(read_readings(path)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rec.close()


def test_wall_time_comes_from_open_plus_mono(tmp_path):
    clock = iter([10.0, 12.5, 13.0, 13.0]).__next__
    path = tmp_path / "r.jsonl"
    with TreatmentRecord(path, clock=clock) as rec:
        rec.append("stop", {"reason": "x"})
    entries = list(read_entries(path))
    from datetime import datetime
    gap = datetime.fromisoformat(entries[1]["t"]) - datetime.fromisoformat(entries[0]["t"])
    assert gap.total_seconds() == pytest.approx(2.5)


def test_reopen_resumes_the_chain(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("approved", {"n": 1})
    os.close(rec._fd)            # the host died at a record boundary (no close record)
    rec._fd = -1
    with TreatmentRecord(path) as again:
        again.append("ack", {"ok": True})
    verdict = verify_record(path)
    assert verdict.closed and [e["kind"] for e in read_entries(path)] == ["open", "approved", "resume", "ack",
                                                                          "close"]
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["fragment_sha256"] is None


def test_reopen_after_a_writer_killed_mid_line(tmp_path):
    path = tmp_path / "r.jsonl"
    write(path, 3)
    kept = lines(path)[:-1]                                   # drop the close, cut the last line
    path.write_bytes(b"\n".join(kept[:-1]) + b"\n" + kept[-1][:25])
    assert verify_record(path).status is RecordStatus.TRUNCATED
    with TreatmentRecord(path) as rec:
        rec.append("ack", {"ok": True})
    verdict = verify_record(path)
    assert verdict.closed, verdict.reason
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["fragment_bytes"] == 25


def test_a_closed_record_is_not_extended(tmp_path):
    path = write(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="closed"):
        TreatmentRecord(path)


def test_refuses_to_extend_a_tampered_record(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(lines(write(path))[:-1]).replace(b'"n":1', b'"n":9') + b"\n")
    with pytest.raises(ValueError, match="does not verify"):
        TreatmentRecord(path)


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
    verdict = verify_record(path)
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


def test_a_failed_telemetry_flush_surfaces_within_about_a_second(tmp_path, monkeypatch):
    disk = FailingDisk(monkeypatch)
    rec = TreatmentRecord(tmp_path / "r.jsonl")
    disk.failing = True
    rec.append("telemetry", reading(0, 0))                   # buffered: the flusher's write fails
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
