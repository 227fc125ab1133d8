"""The hazard log (`safety/hazards.toml`) as typed data, in ISO 14971 terms.

A hazard names its hazardous situation, the harm, the severity and the probability of harm
before and after its risk controls (scales and the acceptability matrix are in the log's
own header tables), the controls (rule ids from the code, and device, watchdog,
supervision, design and labelling controls, each pointing at what implements it), the
tests that verify them, and the residual risk with its acceptability. Findings of the
reviews map to hazards; a rule whose removal no test notices is listed with why.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGIONS = ("acceptable", "ALARP", "not acceptable")
# ISO 14971 §7.1 risk control options, from the kind of control
CATEGORY = {
    "rule": "protective measure (host interlock)",
    "device": "protective measure (device firmware, ICD)",
    "watchdog": "protective measure (device watchdog, ICD §3)",
    "supervision": "protective measure (host supervision)",
    "design": "inherent safety by design",
    "labelling": "information for safety",
}


class LogError(Exception):
    """The log cannot be read as a hazard log at all."""


@dataclass(frozen=True)
class Control:
    """A control other than a rule id: `ref` is "path::Qualified.name" (a symbol that must
    exist in that file) or a path whose text must contain `text`."""

    kind: str
    text: str
    ref: str
    quote: str = ""

    @property
    def category(self) -> str:
        return CATEGORY[self.kind]


@dataclass(frozen=True)
class Hazard:
    id: str
    title: str
    hazard: str
    cause: str
    situation: str
    harm: str
    severity: int
    p_before: int
    p_after: int
    rules: tuple[str, ...]
    controls: tuple[Control, ...]
    tests: tuple[str, ...]
    residual: str
    acceptability: str
    open: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    id: str
    review: str
    text: str
    hazard: str
    status: str                  # "fixed" or "open"
    tests: tuple[str, ...] = ()
    issue: str = ""              # the open issue that closes it


@dataclass(frozen=True)
class Unnoticed:
    """A rule whose removal no test notices, and why that is accepted."""

    rule: str
    why: str


@dataclass(frozen=True)
class HazardLog:
    severity: dict[int, str]
    probability: dict[int, str]
    matrix: tuple[tuple[str, ...], ...]       # [severity - 1][probability - 1] -> region
    hazards: tuple[Hazard, ...]
    findings: tuple[Finding, ...] = ()
    unnoticed: tuple[Unnoticed, ...] = ()
    path: Path = field(default=Path("safety/hazards.toml"), compare=False)

    def region(self, severity: int, probability: int) -> str:
        return self.matrix[severity - 1][probability - 1]

    def hazard(self, hazard_id: str) -> Hazard | None:
        return next((h for h in self.hazards if h.id == hazard_id), None)

    def hazards_of(self, rule: str) -> list[Hazard]:
        return [h for h in self.hazards if rule in h.rules]

    def tests(self) -> set[str]:
        return {t for h in self.hazards for t in h.tests} | {t for f in self.findings for t in f.tests}


def load(path: Path) -> HazardLog:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return parse(data, path)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LogError(f"{path}: {exc!r}") from exc


def parse(data: dict[str, Any], path: Path = Path("safety/hazards.toml")) -> HazardLog:
    scales = data["scales"]
    matrix = tuple(tuple(row) for row in data["acceptability"]["matrix"])
    if len(matrix) != 5 or any(len(row) != 5 or set(row) - set(REGIONS) for row in matrix):
        raise ValueError(f"acceptability.matrix must be 5 x 5 of {REGIONS}")
    hazards = tuple(Hazard(
        id=h["id"], title=h["title"], hazard=h["hazard"], cause=h["cause"], situation=h["situation"],
        harm=h["harm"], severity=int(h["severity"]), p_before=int(h["p_before"]), p_after=int(h["p_after"]),
        rules=tuple(h.get("rules", ())), controls=tuple(Control(**c) for c in h.get("controls", ())),
        tests=tuple(h.get("tests", ())), residual=h["residual"], acceptability=h["acceptability"],
        open=tuple(h.get("open", ()))) for h in data.get("hazard", ()))
    findings = tuple(Finding(id=f["id"], review=f["review"], text=f["text"], hazard=f["hazard"],
                             status=f["status"], tests=tuple(f.get("tests", ())), issue=f.get("issue", ""))
                     for f in data.get("finding", ()))
    unnoticed = tuple(Unnoticed(**u) for u in data.get("unnoticed", ()))
    return HazardLog({int(k): v for k, v in scales["severity"].items()},
                     {int(k): v for k, v in scales["probability"].items()}, matrix, hazards, findings, unnoticed, path)
