"""The treatment record's event encoding: every event as a short JSON array, exactly reversible.

A session sends up to ten settings a second per channel and reads every channel ten times a
second; most of each event repeats the previous one of its kind and channel. So an event
`(kind, mono, data)` is written as `[KIND, DT, PATH, VALUE, ...]`:

- `KIND` names the kind and the event's channel (the integer leaf named `channel`,
  wherever it sits, if any), `PATH` a leaf of `data` (its keys from the top). The first
  time a name is used it is written out (`"kind"` or `["kind", channel]`; a path as the
  list of its keys) and takes the next number of the record's name table; later it is
  that number.
- `DT` is the host's monotonic clock in whole milliseconds since the previous event (the
  first event of a record, or of a `resume`, carries the clock itself).
- Only leaves that differ from the previous event of the same kind and channel are
  written. An integer that was an integer before is written as its second difference (its
  change minus its previous change), so a counter, a clock or a ramp that moves as it
  moved costs nothing; any other value is written as it is. A leaf that is gone is written as the negative number
  `-(PATH + 1)` with no value. Lists and empty objects are leaves. An event that repeats
  its predecessor at the same millisecond is just the number of its kind.

Decoding replays the same state from the start of the record (or of a `resume` line,
which starts afresh), so the stream is only read front to back, which verification does
anyway. `Encoder.encode` and `Decoder.decode` are exact inverses (property-tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Path = tuple[str, ...]
Context = tuple[str, Any]


def _leaves(data: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _tree(flat: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _is_int(value: Any) -> bool:
    return type(value) is int


def _context(kind: str, flat: Mapping[Path, Any]) -> Context:
    for path, value in flat.items():
        if path[-1] == "channel" and _is_int(value):
            return kind, value
    return kind, None


def _written(key: tuple[Any, ...]) -> Any:
    """How a name is written out the first time: a context as its kind (with its channel),
    a path as the list of its keys."""
    if key[0] == "ctx":
        return key[1] if key[2] is None else [key[1], key[2]]
    return list(key[1:])


class _State:
    """What both ends remember: the name table, the clock and each context's last leaves."""

    def __init__(self) -> None:
        self.names: dict[tuple[Any, ...], int] = {}
        self.by_number: list[tuple[Any, ...]] = []
        self.mono_ms: int | None = None
        self.last: dict[Context, dict[Path, Any]] = {}
        self.slope: dict[Context, dict[Path, int]] = {}
        self.flat_shape: dict[Context, bool] = {}     # (decoding) every leaf is at the top of its data

    def define(self, key: tuple[Any, ...]) -> None:
        if key in self.names:
            raise ValueError(f"name {_written(key)!r} is written out twice")
        self.names[key] = len(self.by_number)
        self.by_number.append(key)


class Encoder:
    def __init__(self) -> None:
        self._s = _State()

    def _name(self, key: tuple[Any, ...], out: list[Any]) -> None:
        number = self._s.names.get(key)
        if number is None:
            self._s.define(key)
            out.append(_written(key))
        else:
            out.append(number)

    def encode(self, kind: str, mono_ms: int, data: Mapping[str, Any]) -> list[Any]:
        s = self._s
        flat = dict(_leaves(data))
        context = _context(kind, flat)
        out: list[Any] = []
        self._name(("ctx", *context), out)
        out.append(mono_ms if s.mono_ms is None else mono_ms - s.mono_ms)
        s.mono_ms = mono_ms
        last, slope = s.last.get(context, {}), s.slope.get(context, {})
        new_slope: dict[Path, int] = {}
        for path, value in flat.items():
            before = last.get(path, _MISSING)
            if _is_int(value) and _is_int(before):
                change = value - before
                residual = change - slope.get(path, 0)
                new_slope[path] = change
                if residual:
                    self._name(("path", *path), out)
                    out.append(residual)
            elif before is _MISSING or type(before) is not type(value) or repr(before) != repr(value):
                self._name(("path", *path), out)
                out.append(value)
        for path in last:
            if path not in flat:
                out.append(-(s.names[("path", *path)] + 1))
        s.last[context], s.slope[context] = flat, new_slope
        return out[0] if len(out) == 2 and out[1] == 0 and _is_int(out[0]) else out


class Decoder:
    def __init__(self) -> None:
        self._s = _State()

    def _name(self, token: Any, context: bool) -> tuple[Any, ...]:
        s = self._s
        if _is_int(token):
            if not 0 <= token < len(s.by_number):
                raise ValueError(f"name {token} is not in the record's name table")
            key = s.by_number[token]
        elif context and isinstance(token, str):
            key = ("ctx", token, None)
            s.define(key)
        elif context and isinstance(token, list) and len(token) == 2 and isinstance(token[0], str) \
                and _is_int(token[1]):
            key = ("ctx", token[0], token[1])
            s.define(key)
        elif not context and isinstance(token, list) and token and all(isinstance(k, str) for k in token):
            key = ("path", *token)
            s.define(key)
        else:
            raise ValueError(f"{token!r} is not a {'kind' if context else 'leaf'} name")
        if (key[0] == "ctx") != context:
            raise ValueError(f"name {token!r} stands where a {'kind' if context else 'leaf'} belongs")
        return key

    def skim(self, event: Any) -> str:
        """The kind of an encoded event, keeping the name table as `decode` would but building
        no data: enough to check a record's shape quickly. Raises ValueError as `decode` does
        for anything that is not an event."""
        if _is_int(event) and event >= 0:
            return self._name(event, context=True)[1]
        if not isinstance(event, list) or len(event) < 2 or not _is_int(event[1]):
            raise ValueError("an event is not [kind, time, ...] or the number of a kind")
        kind = self._name(event[0], context=True)[1]
        items, k = event, 2
        while k < len(items):
            token = items[k]
            if _is_int(token) and token < 0:
                self._name(-token - 1, context=False)
                k += 1
                continue
            self._name(token, context=False)
            if k + 1 >= len(items):
                raise ValueError("an event's leaf has no value")
            k += 2
        return kind

    def decode(self, event: Any) -> tuple[str, int, dict[str, Any]]:
        """(kind, monotonic ms, data) of an encoded event; raises ValueError when it is not one."""
        s = self._s
        if _is_int(event) and event >= 0:
            event = [event, 0]
        if not isinstance(event, list) or len(event) < 2 or not _is_int(event[1]):
            raise ValueError("an event is not [kind, time, ...] or the number of a kind")
        _, kind, channel = self._name(event[0], context=True)
        context = (kind, channel)
        s.mono_ms = event[1] if s.mono_ms is None else s.mono_ms + event[1]
        items = event[2:]
        changed: dict[Path, Any] = {}
        removed: set[Path] = set()
        k = 0
        while k < len(items):
            token = items[k]
            if _is_int(token) and token < 0:
                removed.add(self._name(-token - 1, context=False)[1:])
                k += 1
                continue
            path = self._name(token, context=False)[1:]
            if k + 1 >= len(items) or path in changed or path in removed:
                raise ValueError("an event's leaf has no value, or appears twice")
            changed[path] = items[k + 1]
            k += 2
        last, slope = s.last.get(context, {}), s.slope.get(context, {})
        if removed - set(last):
            raise ValueError("an event removes a leaf that is not there")
        flat = dict(last)
        new_slope = dict(slope)
        for path, change in slope.items():     # integers move as they moved
            if path not in changed:
                flat[path] += change
        for path, value in changed.items():
            before = last.get(path, _MISSING)
            if _is_int(before) and _is_int(value):
                new_slope[path] = change = slope.get(path, 0) + value
                flat[path] = before + change
            else:
                flat[path] = value
                new_slope.pop(path, None)
        for path in removed:
            del flat[path]
            new_slope.pop(path, None)
        if (not last or any(path[-1] == "channel" for path in changed)) and _context(kind, flat) != context:
            raise ValueError("an event's channel does not match the kind it names")
        s.last[context], s.slope[context] = flat, new_slope
        if removed or context not in s.flat_shape or any(path not in last for path in changed):
            s.flat_shape[context] = all(len(path) == 1 for path in flat)
        return kind, s.mono_ms, {p[0]: v for p, v in flat.items()} if s.flat_shape[context] else _tree(flat)


class _Missing:
    pass


_MISSING = _Missing()
