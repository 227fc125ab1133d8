"""Every tampering case, each detected: the record's lines, its signed head in the store,
copies and replaced files, lines added after the last signature.

The attacker here has the file, Python, this code and the clinic's public key, but not its
private key (except where a test says otherwise): they can recompute any hash, not a signature.
"""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from safety import (RecordStatus, TreatmentRecord, read_entries, read_readings, read_record, verify_anchored,
                    verify_record)
from safety.record import GENESIS, b64, canonical, chain, seal, signed_message
from safety.record_keys import create_key, load_key

pytestmark = pytest.mark.timeout(30)


class Heads:
    """An in-memory anchor sink with the visit store's contract (a head never moves back; a
    closed one never moves)."""

    def __init__(self):
        self.heads = {}
        self.reads = 0

    def put_record_head(self, record_id, path, count, last_hash, key_id, closed, signature):
        old = self.heads.get(record_id)
        if old is None or not old.closed and count > old.count:
            self.heads[record_id] = SimpleNamespace(record_id=record_id, path=str(Path(path).resolve()), count=count,
                                                    last_hash=last_hash, key_id=key_id, closed=closed,
                                                    signature=signature)

    def get_record_head(self, record_id):
        self.reads += 1
        return self.heads.get(record_id)

    def record_at(self, path):
        found = [h.record_id for h in self.heads.values() if h.path == str(Path(path).resolve())]
        return found[-1] if found else None


def session(path, anchor=None, key=None):
    """A small session a second apart per event (so most lines are signed): a refusal, a stop
    with its reason, readings, a close."""
    ticks = iter(range(1000))
    with TreatmentRecord(path, key=key, anchor=anchor, clock=lambda: float(next(ticks))) as rec:
        rec.append("session_plan", {"operator": "JD"})
        for k in range(6):
            rec.append("approved", {"serial": k, "command": {"type": "SetChannel", "amplitude_ua": 100 * k}})
            rec.append("consumed", {"serial": k})
            rec.append("telemetry", {"device_time_ms": 100 * k, "channel": 0, "amplitude_ua": 100 * k})
        rec.append("refusal", {"rule": "needle.shannon_k", "message": "charge density too high"})
        rec.append("stop", {"reason": "patient pressed the stop button"})
    return path


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def put(path, kept, tail=b""):
    path.write_bytes(b"\n".join(kept) + b"\n" + tail)


def reseal(path, key, edit, record_id=None):
    """Rewrite every line's events through `edit(line) -> line | None` (None drops it) and sign
    every line again with `key`: the best an attacker with that key can do."""
    out, prev, i = [], GENESIS, 0
    first = json.loads(lines(path)[0])
    rid = record_id or first[1][first[1].index(["record_id"]) + 1]
    for line in lines(path):
        events = edit(json.loads(line)[1:-1])
        if events is None:
            continue
        body = canonical([i, *events]).encode()
        prev = chain(prev, body)
        closes = isinstance(events[-1], list) and events[-1][0] == "close"
        out.append(seal(body, b64(key.sign(signed_message(rid, i, prev, closes)))).rstrip(b"\n"))
        i += 1
    put(path, out)


def soften(events):
    text = json.dumps(events)
    if "charge density too high" in text:
        return None
    return json.loads(text.replace("patient pressed the stop button", "session completed"))


def test_dropping_a_refusal_and_rewriting_the_stop_reason_resigned_with_another_key(tmp_path):
    path = session(tmp_path / "r.jsonl")
    attacker = create_key("attacker", tmp_path / "elsewhere", make_default=False)
    reseal(path, attacker, soften)                                  # keeps the clinic's key id in `open`
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 1
    assert "signature" in verdict.reason


def test_a_record_resigned_under_another_key_id_is_not_trusted(tmp_path):
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    clinic = verify_record(path).key_id
    attacker = create_key("attacker", make_default=False)          # even on this computer

    def edit(events):
        events = soften(events)
        if events is not None and events[0][0] == "open":
            events = json.loads(json.dumps(events).replace(clinic, attacker.key_id))
        return events

    reseal(path, attacker, edit)
    assert verify_record(path, expect_key=clinic).status is RecordStatus.ALTERED
    anchored = verify_record(path, anchors=heads)
    assert anchored.status is RecordStatus.ALTERED and "signed with key" in anchored.reason


def test_editing_a_signed_line_and_its_hash(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    stop = next(n for n, line in enumerate(kept) if b"patient pressed" in line)
    kept[stop] = kept[stop].replace(b"patient pressed the stop button", b"session completed.............")
    put(path, kept)
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == stop + 1
    assert [e["kind"] for e in read_entries(path)][-1] == "close"   # reading alone judges nothing: verify does


def test_deleting_the_tail_is_not_closed_and_the_anchor_catches_it(tmp_path):
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    put(path, lines(path)[:-3])
    alone = verify_record(path)
    assert alone.status is RecordStatus.OPEN and "signed line" in alone.reason
    anchored = verify_record(path, anchors=heads)
    assert anchored.status is RecordStatus.ALTERED and "removed from its end" in anchored.reason


def test_an_unsigned_line_added_to_an_unclosed_record_is_never_data(tmp_path):
    """The audit's case: after a crash anyone appends a telemetry line without a signature."""
    path = tmp_path / "r.jsonl"
    ticks = iter(range(100))
    rec = TreatmentRecord(path, patient="P1", clock=lambda: float(next(ticks)))
    rec.append("telemetry", {"device_time_ms": 0, "channel": 0, "amplitude_ua": 2000})
    rec.append("stop", {"reason": "x"})
    rec._closing.set()                                            # the host dies: no close record
    n = len(lines(path))
    # name 7 is the reading's kind, 8 its device time, 10 its amplitude: +100 ms, 2000 + 23000 µA
    forged = canonical([n, [7, 5, 8, 100, 10, 23000], "AAAAAAAAAAA"]).encode()
    with open(path, "ab") as f:
        f.write(forged + b"\n")
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.TRUNCATED and verdict.unsigned_lines == 1 and verdict.ok
    assert [r["amplitude_ua"] for r in read_readings(path)] == [2000]              # never shown as delivered
    TreatmentRecord(path, patient="P1").close()                   # a later session continues without it
    assert verify_record(path).closed and [r["amplitude_ua"] for r in read_readings(path)] == [2000]
    resume = next(e for e in read_entries(path) if e["kind"] == "resume")
    assert resume["data"]["excluded_bytes"] == len(forged) + 1


def test_junk_between_lines_is_an_alteration(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    put(path, kept[:3] + [b'{"kind":"refusal"}'] + kept[3:])
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 4


def test_a_resume_cannot_excuse_signed_lines(tmp_path):
    """Even a key holder's resume cannot name signed lines as left out."""
    path = tmp_path / "r.jsonl"
    ticks = iter(range(100))
    rec = TreatmentRecord(path, clock=lambda: float(next(ticks)))   # a second apart: the refusal line is signed
    rec.append("refusal", {"rule": "x"})
    rec._closing.set()
    key = load_key(rec.key_id)
    signed = lines(path)
    assert len(json.loads(signed[-1])[-1]) == 86
    excluded = signed[-1] + b"\n"
    body = canonical([1, ["resume", 0, ["excluded_bytes"], len(excluded), ["excluded_sha256"],
                          hashlib.sha256(excluded).hexdigest()]]).encode()
    first = chain(GENESIS, canonical(json.loads(signed[0])[:-1]).encode())
    with open(path, "ab") as f:
        f.write(seal(body, b64(key.sign(signed_message(rec.record_id, 1, chain(first, body), False)))))
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and "not after the last signed line" in verdict.reason


def test_a_duplicated_key_is_an_error_even_when_signed(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    n = next(n for n, line in enumerate(kept) if b"patient pressed" in line)
    raw = kept[n].replace(b'"patient pressed', b'"x"],1,["reason"],"patient pressed', 1)
    put(path, kept[:n] + [raw] + kept[n + 1:])
    assert verify_record(path).status is RecordStatus.ALTERED


@pytest.mark.parametrize("edit", [
    lambda line: line.replace(b",", b", ", 1),                                # spacing
    lambda line: line.replace(b'"JD"', b'"\\u004aD"'),                       # escape
    lambda line: line.replace(b'["operator"],', b'["operator"],"JD",["b"],1e0,["x"],', 1),   # number format
])
def test_non_canonical_encodings_are_errors(tmp_path, edit):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    kept[1] = edit(kept[1])
    put(path, kept)
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 2


def test_an_unknown_kind_signed_with_the_key_is_an_error_when_the_record_is_read(tmp_path):
    """A writer holding the key (a bug, say) that signs a kind nobody registered: the
    signatures hold, and reading the record (show, report, export) refuses it."""
    path = session(tmp_path / "r.jsonl")
    key = load_key(verify_record(path).key_id)
    reseal(path, key, lambda events: events)                        # the honest chain, signed again: fine
    assert read_record(path)[0].closed
    reseal(path, key, lambda events: json.loads(json.dumps(events).replace('"session_plan"', '"FORGED"')))
    verdict = read_record(path)[0]
    assert verdict.status is RecordStatus.ALTERED and "unknown record kind" in verdict.reason


def test_a_record_written_with_one_key_fails_with_another(tmp_path):
    first = create_key("room 1")
    path = session(tmp_path / "r.jsonl", key=first)
    second = create_key("room 2")
    assert verify_record(path, expect_key=second.key_id).status is RecordStatus.ALTERED
    assert verify_record(path, keys=lambda _id: second).status is RecordStatus.ALTERED
    ok = verify_record(path)
    assert ok.closed and ok.key_id == first.key_id and ok.key_label == "room 1"


def test_without_the_key_the_record_cannot_be_checked(tmp_path):
    path = session(tmp_path / "r.jsonl", key=create_key("elsewhere", tmp_path / "keys", make_default=False))
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.UNCHECKABLE and "not on this computer" in verdict.reason


def test_an_older_format_is_not_a_record_of_this_version(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text('{"i":0,"kind":"open","mono":1.0,"data":{"format":2},"mac":"' + "0" * 32 + '"}\n')
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and "of this version" in verdict.reason and "older" in verdict.reason


def test_anchor_agrees_with_an_intact_record_and_catches_whole_file_deletion(tmp_path):
    heads = Heads()
    early = TreatmentRecord(tmp_path / "early.jsonl", anchor=heads)
    assert early.wait_anchored(5.0) and heads.get_record_head(early.record_id).count == 1
    early.close()
    path = session(tmp_path / "r.jsonl", heads)
    verdict = verify_record(path, anchors=heads)
    assert verdict.closed and "match" in verdict.anchor
    head = heads.get_record_head(verdict.record_id)
    assert head.closed and head.count == verdict.records and head.last_hash == verdict.last_hash
    assert head.path == str(path.resolve())
    reads = heads.reads
    assert verify_anchored(verdict.record_id, heads).closed
    assert heads.reads == reads + 1  # one question to the store per record checked
    path.unlink()
    gone = verify_anchored(verdict.record_id, heads)
    assert gone.status is RecordStatus.ALTERED and "gone" in gone.reason and str(path.resolve()) in gone.reason
    assert verify_anchored("no-such-record", heads).status is RecordStatus.UNCHECKABLE


def test_a_copied_or_replaced_record_fails(tmp_path):
    """cp visit-1.jsonl visit-2.jsonl: each file is checked against the record the store keeps
    at its path and by its id."""
    heads = Heads()
    one, two = session(tmp_path / "visit-1.jsonl", heads), session(tmp_path / "visit-2.jsonl", heads)
    second = verify_record(two, anchors=heads).record_id
    two.write_bytes(one.read_bytes())
    copied = verify_record(two, anchors=heads)
    assert copied.status is RecordStatus.ALTERED and "copy" in copied.reason
    replaced = verify_anchored(second, heads)
    assert replaced.status is RecordStatus.ALTERED and "replaced" in replaced.reason
    elsewhere = tmp_path / "archive.jsonl"
    elsewhere.write_bytes(one.read_bytes())
    assert verify_record(elsewhere, anchors=heads).status is RecordStatus.ALTERED
    assert verify_record(elsewhere).closed                         # the signatures alone (another computer)


def test_a_forged_or_moved_head_in_the_store_is_caught(tmp_path):
    """Whoever can write the store cannot make a head: it is the record key's signature."""
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    record_id = verify_record(path).record_id
    good = heads.heads[record_id]
    put(path, lines(path)[:-4])                                    # a cut tail ...
    cut = verify_record(path)
    kept_hash = cut.last_hash
    heads.heads[record_id] = SimpleNamespace(**{**vars(good), "count": cut.records, "last_hash": kept_hash,
                                                "closed": False})  # ... hidden by rewriting the head
    assert "does not carry" in verify_record(path, anchors=heads).reason
    heads.heads[record_id] = SimpleNamespace(**{**vars(good), "signature": "A" * 86})
    assert verify_record(path, anchors=heads).status is RecordStatus.ALTERED


def test_no_anchor_entry_cannot_be_checked(tmp_path):
    path = session(tmp_path / "r.jsonl")
    verdict = verify_record(path, anchors=Heads())
    assert verdict.status is RecordStatus.UNCHECKABLE and "no entry" in verdict.reason


class BrokenStore(Heads):
    def put_record_head(self, *args):
        raise ConnectionError("database is locked")


def test_an_anchoring_failure_never_stops_the_session(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path, anchor=BrokenStore())
    assert rec.wait_anchored(5.0) is False                # answered, with a failure: the session goes on
    rec.append("stop", {"reason": "x"})
    rec.close()
    assert "database is locked" in rec.anchor_error
    assert verify_record(path).closed
    assert [e["kind"] for e in read_entries(path)] == ["open", "stop", "close"]
