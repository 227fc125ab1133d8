"""Problems in program files, located as precisely as the source allows: the file, the line,
the field path and the offending value, for every schema error pydantic reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

PATTERN_KINDS = ("continuous", "burst", "dense_disperse")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a program, located as precisely as the source allows."""

    source: str
    line: int | None
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        value = "(missing)" if self.value is MISSING else repr(self.value)
        return f"{where}: {self.field} = {value}: {self.message}"


MISSING = object()


class ProgramError(ValueError):
    """A program that cannot be loaded, resolved or run; `problems` lists each cause."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FieldError(ValueError):
    """Raised inside validators to report a problem at a field path relative to the model."""

    def __init__(self, loc: tuple[str | int, ...], value: Any, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
        self.message = message


def line_text(text: str, line: int | None) -> str | None:
    lines = text.splitlines()
    return lines[line - 1].strip() if line and 0 < line <= len(lines) else None


# --- Error location ------------------------------------------------------------------


def format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(program)"


def problems_of(exc: ValidationError, source: str, text: str | None) -> list[Problem]:
    lines = _toml_key_lines(text) if text is not None and not source.lower().endswith(".json") else {}
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in PATTERN_KINDS and p not in ("amount", "relative"))
        value: Any = err.get("input", MISSING)
        message = err["msg"]
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("error"), FieldError):
            field_error: FieldError = ctx["error"]
            loc, value, message = (*loc, *field_error.loc), field_error.value, field_error.message
        elif err["type"] == "missing":
            value = MISSING
        elif err["type"] == "union_tag_invalid":
            loc, value = (*loc, "pattern"), ctx.get("tag")
            message = f"unknown pattern; expected one of {', '.join(PATTERN_KINDS)}"
        elif err["type"] == "union_tag_not_found":
            loc, value = (*loc, "pattern"), MISSING
            message = f"each channel needs a pattern: one of {', '.join(PATTERN_KINDS)}"
        line = _find_line(loc, lines, text, source)
        problems.append(Problem(source, line, format_loc(loc), value, message))
    return problems


def _find_line(loc: tuple[str | int, ...], lines: dict[tuple[str, ...], int], text: str | None, source: str) -> int | None:
    """The line of the deepest known key on the path (TOML), or of a unique key (JSON)."""
    key = tuple(str(p) for p in loc)
    for n in range(len(key), 0, -1):
        if key[:n] in lines:
            return lines[key[:n]]
    if text is not None and key:
        hits = [i for i, line in enumerate(text.splitlines(), 1) if f'"{key[-1]}"' in line]
        if len(hits) == 1:
            return hits[0]
    return None


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)$")
_KEY_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_-]+)\s*=")


def _key_parts(dotted: str) -> list[str]:
    return [a or b or c for a, b, c in _KEY_PART.findall(dotted)]


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path (array-of-table entries indexed) to the line that defines it."""
    lines: dict[tuple[str, ...], int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()

    def resolve(parts: list[str]) -> tuple[str, ...]:
        path: tuple[str, ...] = ()
        for part in parts:
            path = (*path, part)
            if path in arrays:
                path = (*path, str(arrays[path]))
        return path

    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header and not _ASSIGN.match(line):
            parts = _key_parts(header.group(2))
            if header.group(1) == "[[":
                array = (*resolve(parts[:-1]), parts[-1])
                arrays[array] = arrays.get(array, -1) + 1
                lines.setdefault(array, number)
                table = (*array, str(arrays[array]))
            else:
                table = resolve(parts)
            lines[table] = number
            continue
        assign = _ASSIGN.match(line)
        if assign:
            path = (*table, *_key_parts(assign.group(1)))
            lines[path] = number
            rest = assign.group(2).strip()
            if rest.startswith("{"):
                for inner in _INLINE_KEY.findall(rest):
                    lines.setdefault((*path, inner), number)
    return lines
