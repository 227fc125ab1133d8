"""One-page Markdown report from a HIL test record: `python -m hil_tests.report RECORD.json`.

Written for the engineer signing off a unit: verdict and identity first, then failures,
then every measurement with its limits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _limits(m: dict[str, Any]) -> str:
    low, high = m.get("low"), m.get("high")
    if low is None and high is None:
        return f"(info; {m['note']})" if m.get("note") else "(info)"
    return f"{'' if low is None else f'{low:g} ≤ '}x{'' if high is None else f' ≤ {high:g}'}"


def _headline(test: dict[str, Any]) -> str:
    """The assertion message of a failure (pytest's `E ` lines), else its first line."""
    lines = test["detail"].splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors or lines or [test["outcome"]])[0]


def _rig(rig: dict[str, Any] | None) -> list[str]:
    """The lab place the device was reached through, if any (what its tags say the rig is)."""
    if not rig:
        return []
    tags = ", ".join(f"{k}={v}" for k, v in sorted(rig["tags"].items())) or "no tags"
    return [f"- Rig: labgrid place **{rig['place']}** ({tags}), port `{rig['port']}`"]


def render(record: dict[str, Any]) -> str:
    device, host = record["device"], record["host"]
    tests = record["tests"]
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    lines = [
        f"# HIL acceptance report: {record['outcome']}",
        "",
        f"- Device: serial **{device.get('serial', '?')}**, firmware {device.get('firmware', '?')}, "
        f"protocol {device.get('protocol_version', '?')}, {device.get('channels', '?')} channels"
        f"{' (simulator)' if device.get('simulated') else ''}, at `{device['url']}`",
        f"- Host: needle-estim {host['host_version']}, Python {host['python']}, {host['platform']} on {host['hostname']}",
        *_rig(record.get("rig")),
        f"- Run: {record['started']} → {record['finished'] or '(unfinished)'}; options {record.get('options', {})}",
        "- Tests: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        "",
    ]
    problems = [t for t in tests if t["outcome"] in ("failed", "error")]
    failed_m = [(t, m) for t in tests for m in t["measurements"] if m["outcome"] == "FAIL"]
    if problems or failed_m:
        lines += ["## Failures", ""]
        lines += [f"- `{t['nodeid']}`: {_headline(t)}" for t in problems]
        lines += [f"- `{m['name']}` = {m['value']:g} {m['unit']} outside {_limits(m)}" for _, m in failed_m]
        lines.append("")
    lines += ["## Measurements", "", "| test | measurement | value | unit | limits | outcome |", "|---|---|---|---|---|---|"]
    for t in tests:
        short = t["nodeid"].split("::", 1)[-1]
        for m in t["measurements"]:
            lines.append(f"| {short} | {m['name']} | {m['value']:.6g} | {m['unit']} | {_limits(m)} | {m['outcome']} |")
    skipped = [t for t in tests if t["outcome"] == "skipped"]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{t['nodeid'].split('::', 1)[-1]}`: {t['detail']}" for t in skipped]
    lines += ["", "(info) = informational, recorded without a limit (timing limits apply with `--strict-timing`)."]
    return "\n".join(lines) + "\n"


def write_report(record_path: Path, out: Path | None = None) -> Path:
    """Render `record_path` to Markdown next to it (atomically); returns the report's path."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    out = out or record_path.with_suffix(".md")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(record), encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.report", description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="the JSON test record of a HIL run")
    parser.add_argument("-o", "--output", type=Path, help="where to write (default: RECORD with .md)")
    args = parser.parse_args(argv)
    print(write_report(args.record, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
