"""`python -m safety.trace --mutate`: are the controls really load-bearing?

For each rule id the code emits (and each control in `CONTROL_MUTATIONS`), the plan names
how to switch it off (`mutations.disable_for`) and the tests of every hazard it controls.
One pytest process per job runs the plan (`plugin`); a control whose removal no test
notices is reported, unless the log's [[unnoticed]] says why that is accepted.

A part of the plan (`--part K/N`, or `auto/N`: chosen by the commit, else the date) runs
every N-th control, so N runs cover every control; the full run is the default.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import REPO
from .check import has_test
from .ids import RuleIds
from .log import HazardLog
from .mutations import CONTROL_MUTATIONS, MutationError, disable_control, disable_for

TEST_TIMEOUT_S = 60


@dataclass
class MutateReport:
    results: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)   # tests that fail with nothing switched off
    seconds: float = 0.0
    baseline_s: float = 0.0

    def unnoticed(self, log: HazardLog) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(not noticed and not accepted, not noticed but accepted by the log)."""
        accepted = {u.rule for u in log.unnoticed}
        missed = [r for r in self.results if not r["noticed_by"] and not r["error"]]
        return [r for r in missed if r["control"] not in accepted], [r for r in missed if r["control"] in accepted]

    def ok(self, log: HazardLog) -> bool:
        return not self.problems and not self.unnoticed(log)[0] and not any(r["error"] for r in self.results)


def controls(ids: RuleIds) -> list[str]:
    """Every rule id; each site of an id made in several places ("<id>@<path>:<line>", so
    every one of them must be load-bearing); each control of CONTROL_MUTATIONS."""
    out = []
    for rule in ids.ids:
        out.append(rule)
        try:
            whole = disable_for(rule, ids)
        except MutationError:
            continue
        if whole.how == "emission_removed" and len(whole.sites) > 1:
            out += [f"{rule}@{path}:{line}" for path, _, line in whole.sites]
    return out + sorted(CONTROL_MUTATIONS)


def choose_part(spec: str, count: int) -> list[int]:
    """Indices of the controls in part "K/N" (1-based K) or "auto/N"."""
    which, _, of = spec.partition("/")
    n = int(of)
    if which == "auto":
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
        seed = int(head.stdout.strip()[:8], 16) if head.returncode == 0 and head.stdout.strip() else \
            datetime.date.today().toordinal()
        k = seed % n + 1
    else:
        k = int(which)
    if not 1 <= k <= n:
        raise ValueError(f"part {spec}: K must be 1..N")
    return [i for i in range(count) if i % n == k - 1]


def plan(log: HazardLog, ids: RuleIds, collect: Callable[[set[str]], set[str]], only: list[str] | None = None,
         part: str | None = None, tests: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The plan's entries (disable + the tests of its hazards that pytest collects, asked once
    of `collect`) and problems (controls that cannot be planned)."""
    chosen = controls(ids)
    if only:
        chosen = [c for c in chosen if any(fnmatchcase(c, pattern) for pattern in only)]
    if part:
        chosen = [chosen[i] for i in choose_part(part, len(chosen))]
    wanted, problems = {}, []
    for control in chosen:
        hazards = log.hazards_of(control.split("@")[0]) or [h for h in log.hazards
                                                            if any(c.ref == control for c in h.controls)]
        try:
            disable = disable_control(control) if control in CONTROL_MUTATIONS else disable_for(control, ids)
        except MutationError as exc:
            problems.append(str(exc))
            continue
        wanted[control] = (disable, tests or sorted({t for h in hazards for t in h.tests}))
    collected = collect({t for _, node_ids in wanted.values() for t in node_ids})
    entries = []
    for control, (disable, node_ids) in wanted.items():
        kept = [t for t in node_ids if has_test(collected, t)]
        if kept:
            entries.append({"disable": asdict(disable), "tests": kept})  # type: ignore[arg-type]
        else:
            problems.append(f"{control}: no test of a hazard it controls is collected, so nothing can notice it")
    return entries, problems


def run(entries: list[dict[str, Any]], jobs: int = 1, all_tests: bool = False, echo: bool = True) -> MutateReport:
    """Run the plan in `jobs` pytest processes at once."""
    report = MutateReport()
    start = time.perf_counter()
    groups = [entries[j::jobs] for j in range(jobs) if entries[j::jobs]]
    with tempfile.TemporaryDirectory(prefix="trace-mutate-") as tmp:
        threads = [threading.Thread(target=_job, args=(Path(tmp) / f"job{j}", group, all_tests, echo, report))
                   for j, group in enumerate(groups)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    order = {e["disable"]["control"]: i for i, e in enumerate(entries)}
    report.results.sort(key=lambda r: order.get(r["control"], len(order)))
    report.seconds = time.perf_counter() - start
    return report


def _job(stem: Path, entries: list[dict[str, Any]], all_tests: bool, echo: bool, report: MutateReport) -> None:
    out = stem.with_suffix(".out.json")
    plan_path = stem.with_suffix(".plan.json")
    plan_path.write_text(json.dumps({"entries": entries, "out": str(out), "all": all_tests}), encoding="utf-8")
    node_ids = sorted({t for e in entries for t in e["tests"]})
    command = [sys.executable, "-m", "pytest", "-p", "safety.trace.plugin", "--trace-plan", str(plan_path), "-q",
               "--no-header", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "timeout_func_only=true",
               "--timeout", str(TEST_TIMEOUT_S), *node_ids]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if echo and (": " in line and ("noticed" in line or "NOT NOTICED" in line or "baseline" in line)):
            print("  " + line.rstrip(), flush=True)
    proc.wait()
    if not out.is_file():
        report.problems.append(f"the mutation run ended without results (pytest exit {proc.returncode}):\n"
                               + "\n".join(tail))
        return
    data = json.loads(out.read_text(encoding="utf-8"))
    report.results += data["results"]
    report.baseline_s += sum(b["seconds"] for b in data["baseline"].values())
    report.left_out += [f"{n} fails with nothing switched off (left out; the test run reports it):\n{b['why']}"
                        for n, b in data["baseline"].items() if b["outcome"] == "failed"]


def summary(report: MutateReport, log: HazardLog) -> str:
    width = max((len(r["control"]) for r in report.results), default=10)
    lines = [f"{'control switched off':<{width}}  tests  noticed by"]
    for r in report.results:
        verdict = r["error"] or (r["noticed_by"][0] if r["noticed_by"] else "NOT NOTICED")
        lines.append(f"{r['control']:<{width}}  {r['ran']:>2}/{r['tests']:<2}  {verdict}")
    missed, accepted = report.unnoticed(log)
    why = {u.rule: u.why for u in log.unnoticed}
    noticed = sum(1 for r in report.results if r["noticed_by"])
    errors = sum(1 for r in report.results if r["error"])
    lines += ["", f"{len(report.results)} controls switched off one at a time: {noticed} noticed, "
                  f"{len(missed)} not noticed, {len(accepted)} not noticed but accepted by the log, {errors} errors; "
                  f"{report.seconds:.1f} s (baseline runs {report.baseline_s:.1f} s)"]
    lines += [f"NOT NOTICED: {r['control']} ({r['how']}): no test of its hazards fails without it" for r in missed]
    lines += [f"accepted: {r['control']}: {why[r['control']]}" for r in accepted]
    lines += [f"problem: {p}" for p in report.problems]
    lines += [f"warning: {p}" for p in report.left_out]
    return "\n".join(lines)
