"""Telemetry in the treatment record as blocks of per-channel deltas.

A session reads every channel ten times a second and most fields do not change between
readings, so the record keeps each reading exactly but writes only what changed. A block
is `{"fields": [name, ...], "rows": [[channel, Δdevice_time_ms, index, Δvalue, ...], ...]}`
(plus `"none": [name, ...]` for fields that are null in every reading of the block):
rows in arrival order, each giving the change since the previous reading of the same
channel in this block (a channel's first row in a block counts from zero, so every block
decodes on its own), `index` into `fields`, fields that did not change left out. Any
integer fields are handled alike (ICD v2 adds shape, burst and asymmetry fields; a v1
reading carries them as null); a reading with any other value, or without `channel` or
`device_time_ms`, is not put in a block (the writer stores it as a plain `telemetry` record).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

CHANNEL, TIME = "channel", "device_time_ms"


def compactable(reading: Mapping[str, Any]) -> bool:
    """True when the reading can go into a block: every value an integer (not a bool) or
    null, with an integer channel and device time."""
    return type(reading.get(CHANNEL)) is int and type(reading.get(TIME)) is int and all(
        v is None or type(v) is int for v in reading.values())  # noqa: E721 - bools and floats must not pass


Shape = tuple[tuple[str, ...], tuple[str, ...]]
"""A block's (integer fields, null fields), channel and time excluded."""


def fields_of(reading: Mapping[str, Any]) -> Shape:
    """The block shape for readings like this one: a reading of another shape starts a new block."""
    rest = [k for k in reading if k not in (CHANNEL, TIME)]
    return tuple(k for k in rest if reading[k] is not None), tuple(k for k in rest if reading[k] is None)


class BlockBuilder:
    """Collects readings of one shape into rows of deltas."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.fields, self.none = shape
        self.rows: list[list[int]] = []
        self._last: dict[int, list[int]] = {}

    def add(self, reading: Mapping[str, int]) -> None:
        ch, t = reading[CHANNEL], reading[TIME]
        values = [reading[name] for name in self.fields]
        last = self._last.get(ch)
        if last is None:
            row = [ch, t]
            row += [x for i, v in enumerate(values) if v for x in (i, v)]
        else:
            row = [ch, t - last[0]]
            row += [x for i, (v, was) in enumerate(zip(values, last[1:])) if v != was for x in (i, v - was)]
        self._last[ch] = [t, *values]
        self.rows.append(row)

    def data(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "rows": self.rows, **({"none": list(self.none)} if self.none else {})}


def decode_block(data: Mapping[str, Any]) -> Iterator[dict[str, int]]:
    """Every reading of a block, in order, as the dict that was appended (channel and
    device time first, then the fields in the order they were given)."""
    fields = list(data["fields"])
    nulls = dict.fromkeys(data.get("none", ()))
    last: dict[int, list[int]] = {}
    for row in data["rows"]:
        ch, dt = row[0], row[1]
        state = last.get(ch)
        if state is None:
            state = last[ch] = [0] * (len(fields) + 1)
        state[0] += dt
        pairs = row[2:]
        if len(pairs) % 2:
            raise ValueError("a telemetry row has an index without a value")
        for k in range(0, len(pairs), 2):
            if not 0 <= pairs[k] < len(fields):
                raise ValueError(f"a telemetry row names field {pairs[k]} of {len(fields)}")
            state[1 + pairs[k]] += pairs[k + 1]
        reading = {CHANNEL: ch, TIME: state[0]}
        reading.update(zip(fields, state[1:]))
        reading.update(nulls)
        yield reading
