import json
import threading

import pytest

from safety import TreatmentRecord, verify_record


def write(path, n=5):
    with TreatmentRecord(path) as rec:
        for i in range(n):
            rec.append("command", {"n": i, "text": "µA"})
    return path


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def test_chain_verifies_and_is_closed(tmp_path):
    verdict = verify_record(write(tmp_path / "r.jsonl"))
    assert verdict.ok and verdict.records == 6 and verdict.closed and not verdict.truncated_tail
    first = json.loads(lines(tmp_path / "r.jsonl")[0])
    assert set(first) == {"i", "t", "mono", "kind", "data", "prev", "hash"} and first["prev"] == "0" * 64


def test_flipped_byte_is_detected(tmp_path):
    path = write(tmp_path / "r.jsonl")
    raw = bytearray(path.read_bytes())
    pos = raw.index(b'"n":3') + 4
    raw[pos] = ord("7")
    path.write_bytes(bytes(raw))
    verdict = verify_record(path)
    assert not verdict.ok and verdict.first_bad_line == 4 and verdict.records == 3


def test_deleted_line_is_detected(tmp_path):
    path = write(tmp_path / "r.jsonl")
    kept = lines(path)
    del kept[2]
    path.write_bytes(b"\n".join(kept) + b"\n")
    verdict = verify_record(path)
    assert not verdict.ok and verdict.first_bad_line == 3


def test_reordered_lines_are_detected(tmp_path):
    path = write(tmp_path / "r.jsonl")
    kept = lines(path)
    kept[1], kept[2] = kept[2], kept[1]
    path.write_bytes(b"\n".join(kept) + b"\n")
    assert not verify_record(path).ok


def test_truncated_tail_is_reported_and_the_rest_verifies(tmp_path):
    path = write(tmp_path / "r.jsonl")
    raw = path.read_bytes()
    path.write_bytes(raw[:-20])
    verdict = verify_record(path)
    assert verdict.ok and verdict.truncated_tail and verdict.records == 5 and verdict.first_bad_line == 6
    assert "truncated" in verdict.reason


def test_reopen_resumes_the_chain(tmp_path):
    path = write(tmp_path / "r.jsonl", 2)
    with TreatmentRecord(path) as rec:
        rec.append("reply", {"ok": True})
    verdict = verify_record(path)
    assert verdict.ok and verdict.records == 3 + 2


def test_reopen_after_a_killed_writer(tmp_path):
    path = write(tmp_path / "r.jsonl", 3)
    path.write_bytes(path.read_bytes()[:-15])
    with TreatmentRecord(path) as rec:
        rec.append("reply", {"ok": True})
    verdict = verify_record(path)
    assert verdict.ok and not verdict.truncated_tail and verdict.closed
    assert json.loads(lines(path)[4])["kind"] == "resume"


def test_resume_must_name_the_fragment(tmp_path):
    path = write(tmp_path / "r.jsonl", 3)
    path.write_bytes(path.read_bytes()[:-15])
    with TreatmentRecord(path) as rec:
        rec.append("reply", {})
    kept = lines(path)
    kept[3] = kept[3][:-3] + b'XYZ'                       # alter the fragment the resume record names
    path.write_bytes(b"\n".join(kept) + b"\n")
    assert not verify_record(path).ok


def test_refuses_to_extend_a_tampered_record(tmp_path):
    path = write(tmp_path / "r.jsonl")
    path.write_bytes(path.read_bytes().replace(b'"n":1', b'"n":9'))
    with pytest.raises(ValueError):
        TreatmentRecord(path)


def test_threads_share_one_chain(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TreatmentRecord(path)

    def worker(k):
        for i in range(10):
            rec.append("fault", {"k": k, "i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    assert verify_record(path).records == 41
    assert rec.last_hash == verify_record(path).last_hash
