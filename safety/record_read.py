"""Reading a treatment record: strict verification, and every entry and reading back.

`verify_record` accepts a line only if it is exactly what the writer would have written
(canonical bytes, no duplicated key, a registered kind, the right index) and its mac
checks under the key the record names; a line that is not a record is accepted only as
the partial final line of a killed writer (a true prefix of the line due there), or when
the very next record is a `resume` naming it. With an anchor source (the visit store),
the file must also reach, and agree with, the head anchored there.

`read_entries` and `read_readings` are for reports: they read what parses, so a damaged
record can still be looked at (verification is what judges it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from .record import FORMAT, GENESIS, KINDS, canonical, encode_body
from .record_anchor import AnchorSink
from .record_keys import RecordKey, RecordKeyError, load_key
from .record_telemetry import decode_block

_MAC_TAIL = len(',"mac":"') + 32 + len('"}')


class RecordStatus(Enum):
    CLOSED = "intact and closed"
    OPEN = "intact, not closed (cut at a record boundary)"
    TRUNCATED = "intact, not closed (cut mid-line)"
    ALTERED = "altered, or not a treatment record"
    UNCHECKABLE = "cannot be checked"


@dataclass(frozen=True)
class RecordVerdict:
    status: RecordStatus
    records: int                 # records (lines) that verified
    first_bad_line: int | None   # 1-based line of the first failure, or of the partial final line
    reason: str
    readings: int = 0            # telemetry readings in the verified records
    record_id: str | None = None
    key_id: str | None = None
    key_label: str | None = None
    last_hash: str = GENESIS
    anchor: str | None = None    # what the visit store said, when it was asked
    fragment: bytes = b""        # the partial final line left by a killed writer

    @property
    def ok(self) -> bool:
        """Nothing in the file was altered (closed or not)."""
        return self.status in (RecordStatus.CLOSED, RecordStatus.OPEN, RecordStatus.TRUNCATED)

    @property
    def closed(self) -> bool:
        return self.status is RecordStatus.CLOSED

    @property
    def truncated_tail(self) -> bool:
        return self.status is RecordStatus.TRUNCATED


class _BadLine(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise _BadLine(f"key {k!r} appears twice")
        seen[k] = v
    return seen


def _no_constant(name: str) -> Any:
    raise _BadLine(f"{name} is not a number a record may hold")


def parse_line(line: bytes) -> tuple[int, str, float, dict[str, Any], bytes, str]:
    """(i, kind, mono, data, body, mac) of a line in canonical form; raises ValueError."""
    if len(line) <= _MAC_TAIL or not line.endswith(b'"}') or line[-_MAC_TAIL:-34] != b',"mac":"':
        raise _BadLine("not a record line (no mac at its end)")
    mac = line[-34:-2].decode("ascii", "replace")
    if any(c not in "0123456789abcdef" for c in mac):
        raise _BadLine("its mac is not 32 hex digits")
    body = line[:-_MAC_TAIL] + b"}"
    try:
        rec = json.loads(body, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except _BadLine:
        raise
    except ValueError as exc:
        raise _BadLine(f"not valid JSON ({exc.args[0].split(':')[0]})") from None
    if not isinstance(rec, dict) or list(rec) != ["i", "kind", "mono", "data"]:
        raise _BadLine("not a record (its members are not i, kind, mono, data, mac)")
    i, kind, mono, data = rec["i"], rec["kind"], rec["mono"], rec["data"]
    if type(i) is not int or not isinstance(kind, str) or type(mono) not in (int, float) \
            or not isinstance(data, dict):
        raise _BadLine("a member has the wrong type")
    try:
        again = encode_body(i, kind, mono, canonical(data))
    except ValueError:
        again = b""
    if again != body:
        raise _BadLine("not in canonical form (spacing, key order, escapes or number format changed)")
    return i, kind, mono, data, body, mac


def _fragment_ok(fragment: bytes, count: int) -> bool:
    """A partial line a killed writer can have left: a prefix of the line due at `count`."""
    head = b'{"i":%d,"kind":"' % count
    return bool(fragment) and (head.startswith(fragment) or fragment.startswith(head))


KeyLookup = Callable[[str], RecordKey]


def verify_record(path: str | Path, *, keys: KeyLookup = load_key, expect_key: str | None = None,
                  anchors: AnchorSink | None = None) -> RecordVerdict:
    """Check a record line by line under its key, and against its anchored head if given.

    `keys` finds a key by id (default: this computer's key directory); `expect_key`
    insists on one key id. Raises OSError when the file cannot be read.
    """
    lines = Path(path).read_bytes().split(b"\n")
    tail = lines.pop()

    def verdict(status: RecordStatus, reason: str, bad: int | None = None, **kw: Any) -> RecordVerdict:
        return RecordVerdict(status, count, bad, reason, readings, record_id, key_id, label, prev, **kw)

    count, readings, prev = 0, 0, GENESIS
    record_id = key_id = label = None
    if not lines:
        return verdict(RecordStatus.ALTERED, "the file holds no complete record: not a treatment record", 1)
    try:
        _, kind, _, first, _, _ = parse_line(lines[0])
    except ValueError as exc:
        return verdict(RecordStatus.ALTERED, f"line 1 is not the start of a treatment record ({exc})", 1)
    if kind != "open" or first.get("format") != FORMAT or not isinstance(first.get("key_id"), str) \
            or not isinstance(first.get("record_id"), str):
        return verdict(RecordStatus.ALTERED, "line 1 is not the start of a treatment record of this version", 1)
    record_id, key_id = first["record_id"], first["key_id"]
    if expect_key is not None and key_id != expect_key:
        return verdict(RecordStatus.ALTERED, f"the record names key {key_id}, not key {expect_key}: "
                                             f"it was not signed with the key you asked for", 1)
    try:
        key = keys(key_id)
    except RecordKeyError as exc:
        return verdict(RecordStatus.UNCHECKABLE, str(exc))
    label = key.label
    head, anchor_mac = None, None
    if anchors is not None:
        head, unreadable = _stored_head(anchors, record_id)
        if unreadable:
            return verdict(RecordStatus.UNCHECKABLE, unreadable)
    fragment: bytes | None = None
    fragment_problem = ""
    last_kind = ""
    for n, line in enumerate(lines, start=1):
        try:
            i, kind, _, data, body, mac = parse_line(line)
            if key.mac(prev.encode() + body).hex() != mac:
                raise _BadLine(f"it does not carry key {key_id}'s mac: it was changed, moved, or written "
                               "with another key")
            problem = _sequence_problem(i, kind, data, count, last_kind, fragment)
            if problem:
                raise _BadLine(problem)
        except ValueError as exc:
            if fragment is not None:  # only the resume naming it could have excused that line
                return verdict(RecordStatus.ALTERED, f"line {n - 1} is not a valid record: {fragment_problem}",
                               n - 1)
            if n < len(lines) and last_kind != "close" and _fragment_ok(line, count):
                fragment, fragment_problem = line, str(exc)
                continue
            return verdict(RecordStatus.ALTERED, f"line {n} is not a valid record: {exc}", n)
        fragment = None
        if kind == "telemetry_block":
            readings += len(data.get("rows", ()))
        elif kind == "telemetry":
            readings += 1
        prev, count, last_kind = mac, count + 1, kind
        if head is not None and count == head.count:
            anchor_mac = mac
    status = RecordStatus.CLOSED if last_kind == "close" else RecordStatus.OPEN
    cut: bytes = b""
    if tail:
        if last_kind == "close" or not _fragment_ok(tail, count):
            return verdict(RecordStatus.ALTERED, f"line {len(lines) + 1} (the last) is not a record", len(lines) + 1)
        status, cut = RecordStatus.TRUNCATED, tail
    if head is None:
        return verdict(status, status.value, len(lines) + 1 if cut else None, fragment=cut)
    seen = _seen(head)
    if head.key_id is not None and head.key_id != key_id:
        return verdict(RecordStatus.ALTERED, f"{seen}, signed with key {head.key_id}, not {key_id}", anchor=seen)
    if head.count > count:
        return verdict(RecordStatus.ALTERED, f"{seen}; the file has {count}: records were removed from its end",
                       anchor=seen)
    if anchor_mac != head.last_hash:
        return verdict(RecordStatus.ALTERED, f"{seen}; record {head.count} in the file is not the one it saw",
                       head.count, anchor=seen)
    if head.closed and status is not RecordStatus.CLOSED:
        return verdict(RecordStatus.ALTERED, f"{seen}; the file's end is missing", anchor=seen)
    if head.count < count:
        seen += f" of {count} (the last anchoring did not reach it)"
    return verdict(status, status.value, len(lines) + 1 if cut else None, anchor=seen + ": they match",
                   fragment=cut)


def verify_anchored(record_id: str, anchors: AnchorSink, *, keys: KeyLookup = load_key) -> RecordVerdict:
    """Check the record the anchor store knows by this id, at the path it was written to:
    a file that is gone is reported as altered (deleted), not as merely missing."""
    head, unreadable = _stored_head(anchors, record_id)
    if unreadable:
        return RecordVerdict(RecordStatus.UNCHECKABLE, 0, None, unreadable, record_id=record_id)
    try:
        return verify_record(head.path, keys=keys, anchors=_HeadAlreadyRead(record_id, head, anchors))
    except FileNotFoundError:
        seen = f"{_seen(head)} at {head.path}"
        return RecordVerdict(RecordStatus.ALTERED, 0, None, f"{seen}; that file is gone (deleted or moved)",
                             record_id=record_id, key_id=head.key_id, last_hash=head.last_hash, anchor=seen)


def _stored_head(anchors: AnchorSink, record_id: str) -> tuple[Any, str | None]:
    """The head the store keeps for `record_id`, or why there is none to check against."""
    try:
        head = anchors.get_record_head(record_id)
    except Exception as exc:  # a store we cannot read is not evidence either way
        return None, f"the visit store could not be read ({exc})"
    return head, None if head is not None else f"the visit store has no entry for record {record_id}"


def _seen(head: Any) -> str:
    return f"the visit store saw {head.count} record(s){' and the close' if head.closed else ''}"


@dataclass(frozen=True)
class _HeadAlreadyRead:
    """`anchors` with one record's head already read, so verifying that record asks the store once."""

    record_id: str
    head: Any
    anchors: AnchorSink

    def get_record_head(self, record_id: str) -> Any:
        return self.head if record_id == self.record_id else self.anchors.get_record_head(record_id)

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool) -> None:
        self.anchors.put_record_head(record_id, path, count, last_hash, key_id, closed)


def _sequence_problem(i: int, kind: str, data: dict[str, Any], count: int, last_kind: str,
                      fragment: bytes | None) -> str | None:
    """Why a well-formed, authentic line cannot stand here, or None."""
    if i != count:
        return f"index {i} where {count} was expected"
    if kind not in KINDS:
        return f"unknown record kind {kind!r}"
    if last_kind == "close":
        return "a record after the close record"
    if (kind == "open") != (count == 0):
        return "the open record must be first, and only first"
    if fragment is not None or kind == "resume":
        named = data.get("fragment_sha256"), data.get("fragment_bytes")
        want = (hashlib.sha256(fragment).hexdigest(), len(fragment)) if fragment else (None, 0)
        if kind != "resume" or named != want:
            return "a partial line stands here that no resume record names" if fragment else \
                "the resume record names a partial line that is not there"
    return None


# --- reading for reports -------------------------------------------------------------------


def read_entries(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every record that parses, in order, as {"i", "kind", "mono", "t", "data"}, with each
    telemetry block expanded into one "telemetry" entry per reading (in arrival order;
    a reading's own time is its `device_time_ms`). `t` is the wall-clock time (ISO 8601)
    from the last `open`/`resume` plus the `mono` offset."""
    base: tuple[datetime, float] | None = None
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
                kind, data, mono = rec["kind"], rec["data"], float(rec["mono"])
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(data, dict):
                continue
            if kind in ("open", "resume") and isinstance(data.get("t"), str):
                try:
                    base = (datetime.fromisoformat(data["t"]), mono)
                except ValueError:
                    pass
            t = (base[0] + timedelta(seconds=mono - base[1])).isoformat() if base else None
            if kind == "telemetry_block":
                try:
                    for reading in decode_block(data):
                        yield {"i": rec.get("i"), "kind": "telemetry", "mono": mono, "t": t, "data": reading}
                except (ValueError, KeyError, TypeError, IndexError):
                    continue
            else:
                yield {"i": rec.get("i"), "kind": kind, "mono": mono, "t": t, "data": data}


def read_readings(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every telemetry reading in the record, in order, as it was appended (wire units)."""
    return (e["data"] for e in read_entries(path) if e["kind"] == "telemetry")
