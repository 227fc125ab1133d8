"""The trace check: the log, the code and the tests agree.

- every rule id the code can emit is a control of some hazard and is explained in
  safety/RULES.md, and every rule the log names is emitted by the code;
- every other control the log names exists (a symbol in a file, or a phrase in a file);
- every test the log names is collected by pytest;
- every hazard has at least one control and one test; its stated acceptability is what
  the matrix gives for its severity and residual probability;
- every finding maps to a hazard, a fixed one to a test, an open one to its issue;
- every rule id can be switched off by the mutation table.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import REPO
from .ids import RuleIds, UnresolvedRuleId, derive
from .log import CATEGORY, REGIONS, HazardLog
from .mutations import CONTROL_MUTATIONS, MutationError, check_target, disable_control, disable_for


@dataclass
class Trace:
    """What the check found: the derived ids (None when they could not be derived), the
    tests pytest collected, and every problem in plain words."""

    log: HazardLog
    ids: RuleIds | None
    collected: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def trace(log: HazardLog, root: Path = REPO, ids: RuleIds | None = None, collect: bool = True) -> Trace:
    """Run every check; `ids` may be given (already derived), else they are derived from `root`."""
    result = Trace(log, ids)
    if result.ids is None:
        try:
            result.ids = derive(root)
        except UnresolvedRuleId as exc:
            result.problems.append(f"rule ids that cannot be worked out from the code:\n{exc}")
    if result.ids is not None:
        result.problems += _rules(log, result.ids) + _documented(result.ids, root / "safety" / "RULES.md")
    result.problems += _hazards(log) + _findings(log) + list(_controls(log, root))
    if collect:
        result.collected, problems = collected_tests(log.tests(), root)
        result.problems += problems + [f"{owner} names test {test}, which pytest does not collect"
                                       for owner, test in _named_tests(log) if not has_test(result.collected, test)]
    return result


def _rules(log: HazardLog, ids: RuleIds) -> list[str]:
    problems = []
    covered = {r for h in log.hazards for r in h.rules}
    for rule in ids.ids:
        if rule not in covered:
            where = ", ".join(s.where() for s in ids.sites.get(rule, [])) or "the RULES table"
            problems.append(f"rule {rule} (emitted at {where}) is a control of no hazard: add it to a hazard's "
                            f"rules in safety/hazards.toml")
        try:
            check_target(disable_for(rule, ids))
        except MutationError as exc:
            problems.append(str(exc))
    for hazard in log.hazards:
        problems += [f"{hazard.id} names rule {r}, which the code never emits" for r in hazard.rules
                     if r not in ids.ids]
    problems += [f"[[unnoticed]] names rule {u.rule}, which the code never emits" for u in log.unnoticed
                 if u.rule not in ids.ids]
    return problems


def _documented(ids: RuleIds, rules_md: Path) -> list[str]:
    """Every id is explained in RULES.md: written out (`layer.key`), or as its key after a
    layer or a shorthand (*layer*`.key`, `.key`)."""
    text = rules_md.read_text(encoding="utf-8") if rules_md.is_file() else ""
    return [f"rule {rule} is not explained in safety/RULES.md" for rule in ids.ids
            if f"`{rule}`" not in text and f".{rule.split('.', 1)[1]}`" not in text]


def _used_twice(kind: str, ids: Iterable[str]) -> list[str]:
    return [f"{kind} id {i} is used twice" for i, n in Counter(ids).items() if n > 1]


def _hazards(log: HazardLog) -> list[str]:
    problems = _used_twice("hazard", (h.id for h in log.hazards))
    for h in log.hazards:
        if not (h.rules or h.controls):
            problems.append(f"{h.id} has no risk control")
        if not h.tests:
            problems.append(f"{h.id} has no verification test")
        for name, value in (("severity", h.severity), ("p_before", h.p_before), ("p_after", h.p_after)):
            if not 1 <= value <= 5:
                problems.append(f"{h.id}: {name} {value} is outside 1..5")
        if 1 <= h.severity <= 5 and 1 <= h.p_after <= 5:
            if h.p_after > h.p_before:
                problems.append(f"{h.id}: probability after controls ({h.p_after}) above before ({h.p_before})")
            region = log.region(h.severity, h.p_after)
            if h.acceptability != region:
                problems.append(f"{h.id}: acceptability {h.acceptability!r}, but the matrix gives {region!r} for "
                                f"severity {h.severity}, probability {h.p_after}")
        if h.acceptability not in REGIONS:
            problems.append(f"{h.id}: acceptability {h.acceptability!r} is not one of {REGIONS}")
        problems += [f"{h.id}: control kind {c.kind!r} is not one of {sorted(CATEGORY)}" for c in h.controls
                     if c.kind not in CATEGORY]
    return problems


def _findings(log: HazardLog) -> list[str]:
    problems = _used_twice("finding", (f.id for f in log.findings))
    for f in log.findings:
        if log.hazard(f.hazard) is None:
            problems.append(f"finding {f.id} maps to hazard {f.hazard}, which the log does not have")
        if f.status == "fixed" and not f.tests:
            problems.append(f"finding {f.id} is fixed but names no test that proves it")
        elif f.status == "open" and not f.issue:
            problems.append(f"finding {f.id} is open but names no issue")
        elif f.status not in ("fixed", "open"):
            problems.append(f"finding {f.id}: status {f.status!r} is neither 'fixed' nor 'open'")
    return problems


def _controls(log: HazardLog, root: Path) -> Iterable[str]:
    for h in log.hazards:
        for c in h.controls:
            problem = control_problem(c.ref, c.quote, root)
            if problem:
                yield f"{h.id}: control {c.text!r}: {problem}"
    for ref in CONTROL_MUTATIONS:
        if not any(c.ref == ref for h in log.hazards for c in h.controls):
            yield f"mutation table entry {ref} is a control of no hazard"
        try:
            check_target(disable_control(ref))
        except MutationError as exc:
            yield str(exc)


def control_problem(ref: str, quote: str, root: Path) -> str:
    """Why `ref` (path::Qualified.name, or a path holding `quote`) does not exist, or ""."""
    path_text, _, symbol = ref.partition("::")
    path = root / path_text
    if not path.is_file():
        return f"{path_text} does not exist"
    text = path.read_text(encoding="utf-8")
    if quote and " ".join(quote.split()) not in " ".join(text.split()):
        return f"{path_text} does not say {quote!r}"
    if symbol and not _defines(ast.parse(text), symbol.split(".")):
        return f"{path_text} defines no {symbol}"
    if not symbol and not quote:
        return "names neither a symbol (path::name) nor a quote"
    return ""


def _defines(tree: ast.AST, parts: list[str]) -> bool:
    body = getattr(tree, "body", [])
    for node in body:
        names = []
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        if parts[0] in names:
            return len(parts) == 1 or _defines(node, parts[1:])
    return False


def _named_tests(log: HazardLog) -> list[tuple[str, str]]:
    return [(h.id, t) for h in log.hazards for t in h.tests] + \
           [(f"finding {f.id}", t) for f in log.findings for t in f.tests]


def has_test(collected: set[str], node_id: str) -> bool:
    """True when pytest collected `node_id`, or parametrised cases of it."""
    return node_id in collected or any(c.startswith(node_id + "[") or c.startswith(node_id + "::")
                                       for c in collected)


def collected_tests(node_ids: Iterable[str], root: Path = REPO) -> tuple[set[str], list[str]]:
    """Node ids pytest collects from the files `node_ids` name, and problems with them."""
    files = sorted({n.split("::")[0] for n in node_ids})
    problems = [f"test file {f} does not exist" for f in files if not (root / f).is_file()]
    files = [f for f in files if (root / f).is_file()]
    if not files:
        return set(), problems
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                          cwd=root, capture_output=True, text=True, timeout=300)
    collected = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    if proc.returncode != 0:
        problems.append(f"pytest could not collect the log's test files (exit {proc.returncode}):\n"
                        + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
    return collected, problems
