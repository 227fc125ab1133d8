"""Every tampering case of issue 15, each detected; keys and anchors.

The attacker here has the file, Python and this code, but not the clinic's key (except
where a test says otherwise): they can recompute any hash, not a mac.
"""

import hashlib
import json
from types import SimpleNamespace

import pytest

from safety import RecordStatus, TreatmentRecord, read_entries, verify_anchored, verify_record
from safety.record import encode_body, seal
from safety.record_keys import create_key, load_key

pytestmark = pytest.mark.timeout(30)


class Heads:
    """An in-memory anchor sink with the visit store's contract (never moves a head back)."""

    def __init__(self):
        self.heads = {}
        self.reads = 0

    def put_record_head(self, record_id, path, count, last_hash, key_id, closed):
        old = self.heads.get(record_id)
        if old is None or count > old.count or (count == old.count and closed and not old.closed):
            self.heads[record_id] = SimpleNamespace(record_id=record_id, path=path, count=count,
                                                    last_hash=last_hash, key_id=key_id, closed=closed)

    def get_record_head(self, record_id):
        self.reads += 1
        return self.heads.get(record_id)


def session(path, anchor=None, key=None):
    """A small session: a refusal, a stop with its reason, readings, a close."""
    with TreatmentRecord(path, key=key, anchor=anchor) as rec:
        rec.append("session_plan", {"operator": "JD"})
        for k in range(12):
            rec.append("approved", {"serial": k, "command": {"type": "SetChannel", "amplitude_ua": 100 * k}})
            rec.append("ack", {"serial": k})
            rec.append("telemetry", {"device_time_ms": 100 * k, "channel": 0, "amplitude_ua": 100 * k})
        rec.append("refusal", {"rule": "needle.shannon_k", "message": "charge density too high"})
        rec.append("stop", {"reason": "patient pressed the stop button"})
    return path


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def put(path, kept, tail=b""):
    path.write_bytes(b"\n".join(kept) + b"\n" + tail)


def reseal(path, key, edit):
    """Rewrite every record through `edit(kind, data) -> data | None` (None drops it) and
    recompute the whole chain with `key`: the best an attacker with that key can do."""
    out, prev, i = [], "0" * 32, 0
    for line in lines(path):
        rec = json.loads(line)
        data = edit(rec["kind"], rec["data"])
        if data is None:
            continue
        line, prev = seal(key, prev, encode_body(i, rec["kind"], rec["mono"], json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)))
        out.append(line.rstrip(b"\n"))
        i += 1
    put(path, out)


def drop_refusal_and_soften_the_stop(kind, data):
    if kind == "refusal":
        return None
    return {**data, "reason": "session completed"} if kind == "stop" else data


def test_deleting_a_refusal_and_rewriting_the_stop_reason_with_a_recomputed_chain(tmp_path):
    path = session(tmp_path / "r.jsonl")
    attacker = create_key("attacker", tmp_path / "elsewhere", make_default=False)
    reseal(path, attacker, drop_refusal_and_soften_the_stop)       # keeps the clinic's key id in `open`
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 1
    assert "mac" in verdict.reason


def test_a_record_resigned_under_another_key_id_is_not_trusted(tmp_path):
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    clinic = verify_record(path).key_id
    attacker = create_key("attacker", make_default=False)          # even on this computer

    def edit(kind, data):
        data = drop_refusal_and_soften_the_stop(kind, data)
        return {**data, "key_id": attacker.key_id} if kind == "open" else data

    reseal(path, attacker, edit)
    assert verify_record(path, expect_key=clinic).status is RecordStatus.ALTERED
    anchored = verify_record(path, anchors=heads)
    assert anchored.status is RecordStatus.ALTERED and "signed with key" in anchored.reason


def test_editing_the_last_line_and_its_hash(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    stop = next(n for n, line in enumerate(kept) if b'"kind":"stop"' in line)
    forged = kept[stop].replace(b"patient pressed the stop button", b"session completed")
    body = forged[:-42] + b"}"
    forged = forged[:-34] + hashlib.sha256(body).hexdigest()[:32].encode() + b'"}'
    put(path, kept[:stop] + [forged] + kept[stop + 1:])
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == stop + 1


def test_deleting_the_tail_is_not_closed_and_the_anchor_catches_it(tmp_path):
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    put(path, lines(path)[:-3])
    alone = verify_record(path)
    assert alone.status is RecordStatus.OPEN and "record boundary" in alone.reason
    anchored = verify_record(path, anchors=heads)
    assert anchored.status is RecordStatus.ALTERED and "removed from its end" in anchored.reason


def test_deleting_seven_records_and_appending_a_partial_line(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    put(path, kept[:-7], kept[-9][:40])
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == len(kept) - 6


def test_a_cut_to_a_real_prefix_is_truncated_and_the_anchor_still_counts(tmp_path):
    heads = Heads()
    path = session(tmp_path / "r.jsonl", heads)
    kept = lines(path)
    put(path, kept[:-7], kept[-7][:30])                     # exactly what a killed writer leaves
    assert verify_record(path).status is RecordStatus.TRUNCATED
    assert verify_record(path, anchors=heads).status is RecordStatus.ALTERED


def test_a_junk_line_followed_by_a_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("approved", {"serial": 1})
    rec._closing.set()
    junk = b'{"kind":"refusal","data":{"rule":"none"}}'
    with open(path, "ab") as f:
        f.write(junk + b"\n")
    # forge the resume as the writer would, with the clinic's key: still refused
    key = load_key(rec.key_id)
    body = encode_body(2, "resume", 1.0, json.dumps({"fragment_bytes": len(junk), "fragment_sha256":
                                                     hashlib.sha256(junk).hexdigest(), "t": "x"},
                                                    sort_keys=True, separators=(",", ":")))
    with open(path, "ab") as f:
        f.write(seal(key, rec.last_hash, body)[0])
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 3


def test_the_writer_will_not_excuse_junk_with_a_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)
    rec.append("approved", {"serial": 1})
    rec._closing.set()
    with open(path, "ab") as f:
        f.write(b"junk that no killed writer leaves")
    with pytest.raises(ValueError, match="does not verify"):
        TreatmentRecord(path)


def test_a_duplicated_key_is_an_error_even_with_a_valid_mac(tmp_path):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    n = next(n for n, line in enumerate(kept) if b'"kind":"stop"' in line)
    raw = kept[n].replace(b'"kind":"stop"', b'"kind":"FORGED","kind":"stop"')
    put(path, kept[:n] + [raw] + kept[n + 1:])
    plain = verify_record(path)
    assert plain.status is RecordStatus.ALTERED and plain.first_bad_line == n + 1 and "twice" in plain.reason
    # a writer holding the key (a bug, say) that emits a duplicated key is caught just the same
    key = load_key(plain.key_id)
    prev = json.loads(kept[n - 1])["mac"]
    body = raw[:-42] + b"}"
    resealed = seal(key, prev, body)[0].rstrip(b"\n")
    put(path, kept[:n] + [resealed] + kept[n + 1:])
    again = verify_record(path)
    assert again.status is RecordStatus.ALTERED and "twice" in again.reason


@pytest.mark.parametrize("edit", [
    lambda line: line.replace(b'"kind":', b'"kind": ', 1),                   # spacing
    lambda line: line.replace(b'"operator":"JD"', b'"operator":"\\u004aD"'),  # escape
    lambda line: line.replace(b'"data":{', b'"data":{"b":1e0,', 1),            # number format
])
def test_non_canonical_encodings_are_errors(tmp_path, edit):
    path = session(tmp_path / "r.jsonl")
    kept = lines(path)
    kept[1] = edit(kept[1])
    put(path, kept)
    verdict = verify_record(path)
    assert verdict.status is RecordStatus.ALTERED and verdict.first_bad_line == 2


def test_an_unknown_kind_is_an_error_even_with_a_valid_mac(tmp_path):
    path = session(tmp_path / "r.jsonl")
    key = load_key(verify_record(path).key_id)
    reseal(path, key, lambda kind, data: data)                      # the honest chain, recomputed: fine
    assert verify_record(path).closed
    kept = lines(path)
    prev = json.loads(kept[0])["mac"]
    kept[1] = seal(key, prev, encode_body(1, "FORGED", 1.0, "{}"))[0].rstrip(b"\n")
    put(path, kept[:2])
    verdict = verify_record(path)
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
