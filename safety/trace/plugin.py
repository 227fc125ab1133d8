"""pytest plugin for `python -m safety.trace --mutate`: for each control in the plan, one
pytest process switches it off, runs the tests of its hazards (fastest first) until one
fails, and switches it back on. Each test also runs once as it is (the baseline, when it
is first needed): one that fails then is left out and reported.

Loaded with `-p safety.trace.plugin --trace-plan PLAN.json`; without `--trace-plan` it does
nothing. Tests run in this process only: a test that starts `estim` as its own process does
not see a mutation (the log lists in-process tests first for that reason).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from .mutations import Disable, MutationError, applied


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--trace-plan", default=None, help="mutation plan written by python -m safety.trace --mutate")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--trace-plan"):
        from hypothesis import Phase, settings

        # a mutant is noticed by the first failing example: no shrinking, no example database
        settings.register_profile("trace-mutate", database=None, deadline=None, print_blob=False,
                                  phases=[Phase.explicit, Phase.reuse, Phase.generate])
        settings.load_profile("trace-mutate")


# seconds a test is guessed to take before it was run once, by its folder under tests/
UNMEASURED_S = {"safety": 0.05}


def _matches(node_id: str, wanted: str) -> bool:
    return node_id == wanted or node_id.startswith(wanted + "[") or node_id.startswith(wanted + "::")


def _run(item: pytest.Item) -> tuple[str, float, str]:
    """Run one item on its own (the fixtures of its module kept): ("passed", "failed" or
    "skipped", seconds, the end of the failure's report)."""
    start = time.perf_counter()
    item.session._setupstate.teardown_exact(item)  # noqa: SLF001 - keep only what this item shares
    reports = runtestprotocol(item, log=False, nextitem=item.parent)  # type: ignore[arg-type]
    failed = [r for r in reports if r.failed]
    if failed:
        outcome = "failed"
    elif any(r.when == "call" and r.passed for r in reports):
        outcome = "passed"
    else:
        outcome = "skipped"
    why = "\n".join(line for r in failed for line in str(r.longrepr).splitlines()[-12:])
    return outcome, time.perf_counter() - start, why


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    plan_path = session.config.getoption("--trace-plan")
    if not plan_path:
        return None
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    say = session.config.pluginmanager.get_plugin("terminalreporter").write_line  # type: ignore[union-attr]
    baseline: dict[str, dict[str, Any]] = {}

    def passes_as_it_is(item: pytest.Item) -> bool:
        """Run each test once with nothing switched off, when it is first needed."""
        if item.nodeid not in baseline:
            outcome, seconds, why = _run(item)
            baseline[item.nodeid] = {"outcome": outcome, "seconds": seconds, "why": why}
        return baseline[item.nodeid]["outcome"] == "passed"

    def cost(item: pytest.Item) -> float:
        known = baseline.get(item.nodeid)
        return known["seconds"] if known else UNMEASURED_S.get(item.nodeid.split("/")[1], 5.0)

    results = []
    for entry in plan["entries"]:
        disable = Disable.from_json(entry["disable"])
        tests = [i for i in session.items if any(_matches(i.nodeid, t) for t in entry["tests"])]
        noticed: list[str] = []
        error, ran, start = "", 0, time.perf_counter()
        for item in sorted(tests, key=cost):
            if not passes_as_it_is(item):
                continue
            ran += 1
            try:
                with applied(disable):
                    outcome = _run(item)[0]
            except MutationError as exc:
                error = str(exc)
                break
            if outcome == "failed":
                noticed.append(item.nodeid)
                if not plan.get("all"):
                    break
        seconds = time.perf_counter() - start
        results.append({"control": disable.control, "how": disable.describe(), "tests": len(tests), "ran": ran,
                        "noticed_by": noticed, "seconds": seconds, "error": error})
        verdict = error or (f"noticed by {noticed[0]}" if noticed else "NOT NOTICED")
        say(f"{disable.control}: {verdict} ({ran}/{len(tests)} tests, {seconds:.1f} s)")
    session._setupstate.teardown_exact(None)  # noqa: SLF001
    Path(plan["out"]).write_text(json.dumps({"baseline": baseline, "results": results}, indent=1), encoding="utf-8")
    return True
