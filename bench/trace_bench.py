"""The safety trace as figures: how long the trace check and the mutation run take, and how
many rule removals no test notices (target 0). `--quick` runs a quarter of the mutations."""

from __future__ import annotations

import time
from pathlib import Path

from bench.stats import Result


def run(workdir: Path, quick: bool) -> list[Result]:
    from safety.trace import LOG_PATH
    from safety.trace.check import trace
    from safety.trace.log import load
    from safety.trace.mutate import plan, run as mutate, summary

    start = time.perf_counter()
    log = load(LOG_PATH)
    result = trace(log)
    check_s = time.perf_counter() - start
    for problem in result.problems:
        print(f"  trace: {problem}")
    if result.ids is None:
        return [Result("trace_problems", len(result.problems), "", "0", False)]
    entries, problems = plan(log, result.ids, lambda _nodes: result.collected, part="auto/4" if quick else None)
    report = mutate(entries, jobs=2, echo=False)
    report.problems = problems + report.problems
    missed, _ = report.unnoticed(log)
    if missed or report.problems:
        print("  " + summary(report, log).replace("\n", "\n  "))
    tag = "part" if quick else "all"
    return [
        Result("trace_check", check_s, "s"),
        Result("trace_problems", len(result.problems), "", "0", not result.problems),
        Result("trace_rule_ids", len(result.ids.ids), ""),
        Result("trace_hazards", len(log.hazards), ""),
        Result(f"mutate_{tag}_controls", len(report.results), ""),
        Result(f"mutate_{tag}_not_noticed", len(missed), "", "0", not missed and not report.problems),
        Result(f"mutate_{tag}_wall", report.seconds, "s"),
    ]
