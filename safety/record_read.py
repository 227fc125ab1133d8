"""Reading a treatment record: strict verification with the public key, and every entry back.

`verify_record` accepts a record only if every line has the writer's shape (the right index,
a signature or MAC of the right length) and every signature checks under the public key the
record names: a signature vouches for every byte of every line before it through the hash
chain. Reading the record (`read_record`) also parses every line (no duplicated key, no NaN)
and decodes every event to a registered kind. What follows the last signature is not data
(`TRUNCATED`): lines a killed writer left (or anyone added), and a partial last line. A
`resume` may name, by SHA-256 and length, bytes after the last signature that it does not
vouch for; nothing else may be skipped. With an anchor source (the visit store), the file
must also be the record the store keeps at that path, and reach, and agree with, the
signed head anchored there.

`read_entries` and `read_readings` give what the signed part of a record holds (never the
unsigned end), for reports; `read_record` gives the verdict and the entries in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from .record import FORMAT, GENESIS, KINDS, MAC_CHARS, SIG_CHARS, chain, line_mac, signed_message, unb64
from .record_anchor import AnchorSink
from .record_codec import Decoder
from .record_keys import RecordKey, RecordKeyError, load_key

_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class RecordStatus(Enum):
    CLOSED = "intact and closed"
    OPEN = "intact, not closed (it ends at a signed line)"
    TRUNCATED = "intact up to its last signed line, not closed; what follows is not signed and is not data"
    ALTERED = "altered, or not a treatment record"
    UNCHECKABLE = "cannot be checked"


@dataclass(frozen=True)
class RecordVerdict:
    status: RecordStatus
    records: int                 # lines that verified (signed, or vouched for by a later signature)
    first_bad_line: int | None   # 1-based line of the first failure, or of the first unsigned line
    reason: str
    readings: int | None = None  # telemetry readings in the lines that verified (known when they were read)
    record_id: str | None = None
    key_id: str | None = None
    key_label: str | None = None
    last_hash: str = GENESIS.hex()
    anchor: str | None = None    # what the visit store said, when it was asked
    unsigned_lines: int = 0      # complete lines after the last signature (not data)
    unsigned_bytes: int = 0      # bytes after the last signature, partial line included
    patient: str | None = None
    visit: int | None = None
    last_signature: str = ""     # the signature of the last line that verified (what a head carries)

    @property
    def ok(self) -> bool:
        """Nothing in the signed part of the file was altered (closed or not)."""
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


def parse_line(raw: bytes) -> tuple[int, list[Any], str, bytes]:
    """(index, events, auth, body) of a line: JSON with no duplicated key and no NaN, of the
    writer's shape (its bytes are vouched for by the signatures over the chain); raises ValueError."""
    try:
        value = json.loads(raw, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except _BadLine:
        raise
    except ValueError as exc:
        raise _BadLine(f"not valid JSON ({exc.args[0].split(':')[0]})") from None
    if not isinstance(value, list) or len(value) < 3 or type(value[0]) is not int or value[0] < 0:
        raise _BadLine("not a record line ([index, event, ..., signature or mac])")
    auth, events = value[-1], value[1:-1]
    if not isinstance(auth, str) or len(auth) not in (MAC_CHARS, SIG_CHARS) or not set(auth) <= _B64:
        raise _BadLine("it ends in no signature or mac")
    if not all(isinstance(e, list) or type(e) is int for e in events):
        raise _BadLine("an event is not a list or a number")
    return value[0], events, auth, raw[:-(len(auth) + 3)] + b"]"


@dataclass(slots=True)
class _Line:
    index: int
    start: int
    end: int                     # offset after its newline
    digest: bytes
    auth: str
    signed: bool
    closes: bool
    kinds: list[str]
    entries: list[tuple[str, int, dict[str, Any]]]   # decoded only when the entries are read


@dataclass
class _Scan:
    """A record read front to back without any key: the chain, the lines it holds, what
    follows the last signed line, and the first thing that cannot stand."""

    lines: list[_Line] = field(default_factory=list)
    problem: tuple[int, str] | None = None          # (1-based line, why)
    junk_from: int | None = None                    # offset of bytes no resume excused
    tail: bytes = b""                               # a partial last line
    size: int = 0
    first: dict[str, Any] = field(default_factory=dict)

    @property
    def last_signed(self) -> int:
        """How many lines the last signature vouches for."""
        return next((n + 1 for n in range(len(self.lines) - 1, -1, -1) if self.lines[n].signed), 0)

    @property
    def covered(self) -> list[_Line]:
        return self.lines[:self.last_signed]

    def unsigned(self) -> tuple[int, int]:
        """(complete lines, bytes) after the last signature."""
        lines = self.lines[self.last_signed:]
        start = self.lines[self.last_signed - 1].end if self.last_signed else 0
        return len(lines), self.size - start


def _decode(decoder: Decoder, events: list[Any]) -> tuple[list[str], list[tuple[str, int, dict[str, Any]]]]:
    entries = [decoder.decode(event) for event in events]
    kinds = [kind for kind, _, _ in entries]
    unknown = next((kind for kind in kinds if kind not in KINDS), None)
    if unknown is not None:
        raise _BadLine(f"unknown record kind {unknown!r}")
    return kinds, entries


_LINE = re.compile(rb'\[(0|[1-9][0-9]*),(.+),"([A-Za-z0-9_-]{%d}|[A-Za-z0-9_-]{%d})"\]' % (MAC_CHARS, SIG_CHARS),
                   re.S)
_NONE: list[Any] = []  # the kinds and events of a line that was not decoded (shared, never changed)
_CLOSES = re.compile(rb'\["close",-?[0-9]+\]\]\Z')


def _split(raw: bytes) -> tuple[int, str, bytes]:
    """(index, auth, body) of a line by its shape alone: what chaining and signatures need."""
    match = _LINE.fullmatch(raw)
    if match is None:
        raise _BadLine("not a record line ([index, event, ..., signature or mac])")
    return int(match.group(1)), match.group(3).decode(), raw[:match.start(3) - 2] + b"]"


def _scan(data: bytes, full: bool = False) -> _Scan:
    """The record's lines, chained, by their shape; `full` also parses every line strictly
    and decodes its events (for reading). Verifying needs only the chain and the signatures
    over it: the first line, every `resume` and what follows the close are read in full."""
    scan = _Scan(size=len(data))
    pieces = data.split(b"\n")
    scan_tail = pieces.pop()
    prev, decoder = GENESIS, Decoder()
    signed_upto = 0                                 # lines up to the last signed one: a resume may not cut them
    closed = False
    pos = 0
    for n, raw in enumerate(pieces, start=1):
        start, end = pos, pos + len(raw) + 1
        pos = end
        try:
            index, auth, body = _split(raw)
            resuming = index > 0 and body.startswith(b'[%d,["resume",' % index)
            if resuming or index == 0 or full:
                _, events, _, _ = parse_line(raw)
            named = Decoder().decode(events[0])[2] if resuming else {}
        except ValueError as exc:
            if scan.junk_from is None:
                scan.junk_from, junk = start, (n, f"line {n} is not a valid record line: {exc}")
            continue
        if resuming:
            after = scan.lines[signed_upto - 1:] if signed_upto else []   # the last signed line and those after
            boundaries = {line.end: (k, line.digest) for k, line in enumerate(after, start=signed_upto)}
            why = "a resume record after the close record" if closed else \
                _resume_problem(data, start, index, events, auth, named, boundaries)
            if why:
                scan.problem = (n, why)
                return scan
            count, prev = boundaries[start - named["excluded_bytes"]]
            del scan.lines[count:]
            decoder, scan.junk_from = Decoder(), None
        elif scan.junk_from is not None or closed:
            if scan.junk_from is None:
                scan.junk_from, junk = start, (n, f"line {n} follows the close record")
            continue
        elif index != len(scan.lines):
            scan.junk_from, junk = start, (n, f"line {n} has index {index} where {len(scan.lines)} was expected")
            continue
        kinds: list[str] = _NONE
        entries: list[tuple[str, int, dict[str, Any]]] = _NONE
        try:
            if index == 0 or resuming or full:
                kinds, entries = _decode(decoder, events)
                _sequence_problem(index, kinds, resuming)
            if index == 0:
                scan.first = entries[0][2]
        except ValueError as exc:
            scan.problem = (n, f"line {n} is not a valid record line: {exc}")
            return scan
        prev = chain(prev, body)
        signed = len(auth) == SIG_CHARS
        closed = signed and _CLOSES.search(body) is not None
        scan.lines.append(_Line(index, start, end, prev, auth, signed, closed, kinds, entries if full else _NONE))
        if signed:
            signed_upto = len(scan.lines)
    if scan.junk_from is not None:
        scan.problem = junk
    elif scan_tail:
        due = b"[%d," % len(scan.lines)
        if closed or not (due.startswith(scan_tail) or scan_tail.startswith(due)):
            scan.problem = (len(pieces) + 1, f"line {len(pieces) + 1} (the last) is not a record line")
        scan.tail = scan_tail
    return scan


def _resume_problem(data: bytes, start: int, index: int, events: list[Any], auth: str, named: dict[str, Any],
                    boundaries: dict[int, tuple[int, bytes]]) -> str | None:
    """Why a `resume` line cannot stand where it is, or None."""
    length, digest = named.get("excluded_bytes"), named.get("excluded_sha256")
    if len(events) != 1 or len(auth) != SIG_CHARS or type(length) is not int or length < 0:
        return "a resume record that is not a signed line of its own"
    boundary = start - length
    if boundary not in boundaries:
        return "the resume record names bytes that are not after the last signed line"
    excluded = data[boundary:start]
    if (hashlib.sha256(excluded).hexdigest() if excluded else None) != digest:
        return "the resume record names bytes that are not there"
    if boundaries[boundary][0] != index:
        return f"the resume record has index {index} where {boundaries[boundary][0]} was expected"
    return None


def _sequence_problem(index: int, kinds: list[str], resuming: bool) -> None:
    if resuming:
        return
    if (index == 0) != ("open" in kinds) or "open" in kinds and kinds != ["open"]:
        raise _BadLine("the open record must be first, alone on line 1, and only there")
    if "resume" in kinds:
        raise _BadLine("a resume record that does not start a line of its own")
    if "close" in kinds[:-1]:
        raise _BadLine("a record after the close record")


KeyLookup = Callable[[str], RecordKey]


def _check_signatures(scan: _Scan, key: RecordKey, record_id: str) -> tuple[int, str] | None:
    """(1-based first line of the span, why) when a signature does not check, else None."""
    span_start = 0
    for n, line in enumerate(scan.lines):
        if not line.signed:
            continue
        if not key.verify(unb64(line.auth), signed_message(record_id, line.index, line.digest, line.closes)):
            first, last = span_start + 1, n + 1
            where = f"line {last}" if first == last else f"lines {first}-{last}"
            return first, (f"{where} do not carry key {key.key_id}'s signature: changed, moved, or written "
                           "with another key" if first != last else
                           f"{where} does not carry key {key.key_id}'s signature: changed, moved, or written "
                           "with another key")
        span_start = n + 1
    return None


def _readings(lines: list[_Line], full: bool) -> int | None:
    return sum(line.kinds.count("telemetry") for line in lines) if full else None


def verify_record(path: str | Path, *, keys: KeyLookup = load_key, expect_key: str | None = None,
                  anchors: AnchorSink | None = None, expect_record_id: str | None = None) -> RecordVerdict:
    """Check a record line by line under its public key, and against its anchored head if given.

    `keys` finds a key by id (default: this computer's key directory: its own keys and the
    public keys imported); `expect_key` insists on one key id; `expect_record_id` on one
    record (the one the store keeps at this path). Raises OSError when the file cannot be read.
    """
    return _verify(Path(path), Path(path).read_bytes(), keys, expect_key, anchors, expect_record_id)[0]


def read_record(path: str | Path, *, keys: KeyLookup = load_key, anchors: AnchorSink | None = None
                ) -> tuple[RecordVerdict, list[dict[str, Any]]]:
    """The verdict (as `verify_record`) and the entries of the signed part (as `read_entries`),
    reading the file once."""
    verdict, scan = _verify(Path(path), Path(path).read_bytes(), keys, None, anchors, None, full=True)
    return verdict, list(_entries(scan))


def _verify(path: Path, data: bytes, keys: KeyLookup, expect_key: str | None, anchors: AnchorSink | None,
            expect_record_id: str | None, full: bool = False) -> tuple[RecordVerdict, _Scan]:  # noqa: C901
    scan = _scan(data, full)
    first = scan.first
    record_id, key_id = first.get("record_id"), first.get("key_id")

    def verdict(status: RecordStatus, reason: str, bad: int | None = None, records: int | None = None,
                **kw: Any) -> tuple[RecordVerdict, _Scan]:
        covered = scan.covered if records is None else scan.lines[:records]
        lines, size = scan.unsigned()
        last = covered[-1] if covered else None
        return RecordVerdict(status, len(covered), bad, reason, _readings(covered, full), record_id, key_id,
                             kw.pop("label", None), last.digest.hex() if last else GENESIS.hex(),
                             unsigned_lines=lines, unsigned_bytes=size, patient=first.get("patient"),
                             visit=first.get("visit"), last_signature=last.auth if last and last.signed else "",
                             **kw), scan

    if not scan.lines or first.get("format") != FORMAT or not isinstance(record_id, str) \
            or not isinstance(key_id, str):
        old = data.startswith(b'{"i":0,"kind":"open"')
        return verdict(RecordStatus.ALTERED, "line 1 is not the start of a treatment record of this version" + (
            " (an older format, written before records were signed with public keys)" if old else ""), 1, 0)
    if expect_key is not None and key_id != expect_key:
        return verdict(RecordStatus.ALTERED, f"the record names key {key_id}, not key {expect_key}: "
                                             f"it was not signed with the key you asked for", 1, 0)
    if expect_record_id is not None and record_id != expect_record_id:
        return verdict(RecordStatus.ALTERED, f"the file at {path} is record {record_id}, not record "
                                             f"{expect_record_id}: it was replaced", 1, 0)
    head = None
    if anchors is not None:
        head, unreadable = _stored_head(anchors, record_id)
        if unreadable:
            return verdict(RecordStatus.UNCHECKABLE, unreadable, records=0)
        if head.key_id is not None and head.key_id != key_id:   # before looking for a key it may not have
            return verdict(RecordStatus.ALTERED, f"{_seen(head)}, signed with key {head.key_id}; the file names key "
                                                 f"{key_id}", 1, 0, anchor=_seen(head))
    try:
        key = keys(key_id)
    except RecordKeyError as exc:
        return verdict(RecordStatus.UNCHECKABLE, str(exc), records=0)
    label = key.label
    bad = _check_signatures(scan, key, record_id)
    if bad is not None:
        return verdict(RecordStatus.ALTERED, bad[1], bad[0], records=bad[0] - 1, label=label)
    if scan.problem is not None:
        return verdict(RecordStatus.ALTERED, scan.problem[1], scan.problem[0], label=label)
    unsigned_lines, unsigned_bytes = scan.unsigned()
    covered = scan.covered
    if unsigned_bytes:
        status = RecordStatus.TRUNCATED
        reason = (f"{status.value}: {unsigned_lines} line(s) and {unsigned_bytes} byte(s) after line "
                  f"{len(covered)} (a writer killed before it signed them, or added since); "
                  "`estim record anchor` on the computer that wrote it signs what it wrote")
    else:
        status = RecordStatus.CLOSED if covered[-1].closes else RecordStatus.OPEN
        reason = status.value
    first_unsigned = len(covered) + 1 if unsigned_bytes else None
    if head is None:
        return verdict(status, reason, first_unsigned, label=label)
    seen = _seen(head)
    here = str(path.resolve())
    if head.path != here:
        return verdict(RecordStatus.ALTERED, f"{seen} at {head.path}, not at {here}: this file is a copy of that "
                                             "record, or was moved", label=label, anchor=seen)
    try:
        expected = anchors.record_at(here)
    except Exception as exc:  # a store we cannot read is not evidence either way
        return verdict(RecordStatus.UNCHECKABLE, f"the visit store could not be read ({exc})", label=label)
    if expected not in (None, record_id):
        return verdict(RecordStatus.ALTERED, f"the visit store keeps record {expected} at {here}; this file is "
                                             f"record {record_id}: it was replaced", label=label, anchor=seen)
    if not _head_signed(head, key, record_id):
        return verdict(RecordStatus.ALTERED, f"the visit store's entry for this record does not carry key {key_id}'s "
                                             "signature: the store was changed", label=label, anchor=seen)
    if head.count > len(scan.lines):
        return verdict(RecordStatus.ALTERED, f"{seen}; the file has {len(scan.lines)}: lines were removed from its "
                                             "end", label=label, anchor=seen)
    if scan.lines[head.count - 1].digest.hex() != head.last_hash:
        return verdict(RecordStatus.ALTERED, f"{seen}; line {head.count} in the file is not the one it saw",
                       head.count, label=label, anchor=seen)
    if head.closed and not (status is RecordStatus.CLOSED and len(scan.lines) == head.count):
        return verdict(RecordStatus.ALTERED, f"{seen}; the file's end is missing", label=label, anchor=seen)
    if head.count < len(covered):
        seen += f" of {len(covered)} (the last anchoring did not reach it)"
    return verdict(status, reason, first_unsigned, label=label, anchor=seen + ": they match")


def _head_signed(head: Any, key: RecordKey, record_id: str) -> bool:
    try:
        return head.count >= 1 and key.verify(unb64(head.signature), signed_message(
            record_id, head.count - 1, bytes.fromhex(head.last_hash), bool(head.closed)))
    except (ValueError, TypeError, AttributeError):
        return False


def verify_anchored(record_id: str, anchors: AnchorSink, *, keys: KeyLookup = load_key) -> RecordVerdict:
    """Check the record the anchor store knows by this id, at the path it was written to:
    a file that is gone is reported as altered (deleted), not as merely missing, and a file
    there that is another record as replaced."""
    head, unreadable = _stored_head(anchors, record_id)
    if unreadable:
        return RecordVerdict(RecordStatus.UNCHECKABLE, 0, None, unreadable, record_id=record_id)
    try:
        return verify_record(head.path, keys=keys, anchors=_HeadAlreadyRead(record_id, head, anchors),
                             expect_record_id=record_id)
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
    return f"the visit store saw {head.count} line(s){' and the close' if head.closed else ''}"


@dataclass(frozen=True)
class _HeadAlreadyRead:
    """`anchors` with one record's head already read, so verifying that record asks the store once."""

    record_id: str
    head: Any
    anchors: AnchorSink

    def get_record_head(self, record_id: str) -> Any:
        return self.head if record_id == self.record_id else self.anchors.get_record_head(record_id)

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool, signature: str) -> None:
        self.anchors.put_record_head(record_id, path, count, last_hash, key_id, closed, signature)

    def record_at(self, path: str) -> str | None:
        return self.anchors.record_at(path)


# --- continuing a record -------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeScan:
    """What a writer continuing a record needs: the verdict, whose record it is, and where
    the lines it can vouch for end (`continue_after`)."""

    verdict: RecordVerdict
    scan: _Scan

    @property
    def patient(self) -> str | None:
        return self.scan.first.get("patient")

    @property
    def visit(self) -> int | None:
        return self.scan.first.get("visit")

    def continue_after(self, mac_key: bytes) -> tuple[int, bytes, int]:
        """(next index, last hash, offset after the last line kept): the signed part and
        the unsigned lines after it whose MAC checks under the writer's own key."""
        lines = self.scan.lines
        kept = self.scan.last_signed
        while kept < len(lines) and line_mac(mac_key, lines[kept].index, lines[kept].digest) == lines[kept].auth:
            kept += 1
        last = lines[kept - 1]
        return kept, last.digest, last.end


def scan_for_resume(path: Path, keys: KeyLookup) -> ResumeScan:
    verdict, scan = _verify(path, path.read_bytes(), keys, None, None, None)
    return ResumeScan(verdict, scan)


# --- reading for reports -------------------------------------------------------------------


def _entries(scan: _Scan) -> Iterator[dict[str, Any]]:
    base: tuple[datetime, float] | None = None
    for line in scan.covered:
        for kind, mono_ms, data in line.entries:
            mono = mono_ms / 1000
            if kind in ("open", "resume") and isinstance(data.get("t"), str):
                try:
                    base = (datetime.fromisoformat(data["t"]), mono)
                except ValueError:
                    pass
            t = (base[0] + timedelta(seconds=mono - base[1])).isoformat() if base else None
            yield {"i": line.index, "kind": kind, "mono": mono, "t": t, "data": data}


def read_entries(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every event of the signed part of the record, in order, as {"i" (its line), "kind",
    "mono", "t", "data"}; `t` is the wall-clock time (ISO 8601) from the last `open`/`resume`
    plus the `mono` offset. Lines after the last signature are never given: they are not data."""
    return _entries(_scan(Path(path).read_bytes(), full=True))


def read_readings(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every telemetry reading in the signed part of the record, in order (wire units)."""
    return (e["data"] for e in read_entries(path) if e["kind"] == "telemetry")
