"""python -m safety.trace: check the hazard log against the code and the tests.

    python -m safety.trace                 check, print the trace matrix, write docs/hazards.md
    python -m safety.trace --check         check only; docs/hazards.md must be current
    python -m safety.trace --mutate [--only ID ...] [--part K/N|auto/N] [--tests NODE ...] [--all] [--jobs N]
    python -m safety.trace --soup [--sbom PATH]    write docs/soup.md (and the SBOM) from the installed set

Exit 0 when everything agrees, 1 when anything does not (each problem is printed).
"""

from __future__ import annotations

import argparse
import sys

from . import LOG_PATH, MATRIX_PATH, REPO
from .check import trace
from .log import LogError, load
from .matrix import markdown, terminal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safety.trace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--check", action="store_true", help="write nothing; fail when docs/hazards.md is stale")
    parser.add_argument("--mutate", action="store_true", help="switch each rule off in turn and run its tests")
    parser.add_argument("--only", action="append", metavar="ID", help="(--mutate) these ids or patterns only")
    parser.add_argument("--part", metavar="K/N", help="(--mutate) every N-th control from the K-th; auto/N picks K "
                                                      "from the commit")
    parser.add_argument("--tests", nargs="+", metavar="NODE", help="(--mutate) run these tests instead of the log's")
    parser.add_argument("--all", action="store_true", help="(--mutate) run every test, not only up to the first "
                                                           "that notices")
    parser.add_argument("--jobs", type=int, default=1, help="(--mutate) pytest processes at once")
    parser.add_argument("--soup", action="store_true", help="write the SOUP list docs/soup.md")
    parser.add_argument("--sbom", metavar="PATH", help="(--soup) also keep the CycloneDX SBOM of the runtime set")
    args = parser.parse_args(argv)
    if args.soup:
        from .soup import write_soup

        return write_soup(args.sbom)
    try:
        log = load(LOG_PATH)
    except LogError as exc:
        print(f"the hazard log cannot be read: {exc}", file=sys.stderr)
        return 1
    result = trace(log, REPO, collect=not args.mutate)   # --mutate collects only what it runs
    if result.ids is not None and args.mutate:
        from .check import collected_tests
        from .mutate import plan, run, summary

        def collect(node_ids: set[str]) -> set[str]:
            collected, problems = collected_tests(node_ids, REPO)
            result.problems.extend(problems)
            return collected

        entries, problems = plan(log, result.ids, collect, args.only, args.part, args.tests)
        report = run(entries, max(1, args.jobs), args.all)
        report.problems = problems + report.problems
        print(summary(report, log))
        if not report.ok(log):
            result.problems.append("a control's removal went unnoticed, or the mutation run had problems (above)")
    elif result.ids is not None:
        print(terminal(log, result.ids))
        text = markdown(log, result.ids)
        if args.check:
            if not MATRIX_PATH.is_file() or MATRIX_PATH.read_text(encoding="utf-8") != text:
                result.problems.append(f"{MATRIX_PATH.relative_to(REPO)} is stale: run `python -m safety.trace`")
        else:
            MATRIX_PATH.write_text(text, encoding="utf-8")
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    if result.problems:
        print(f"{len(result.problems)} problem(s): the hazard log, the code and the tests do not agree",
              file=sys.stderr)
        return 1
    if not args.mutate:
        print(f"\n{len(log.hazards)} hazards, {len(result.ids.ids) if result.ids else 0} rule ids, "
              f"{len(log.tests())} tests, {len(log.findings)} findings: the log, the code and the tests agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
