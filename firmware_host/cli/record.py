"""`estim record verify|show`: check a treatment record's hash chain and summarise a session.

`verify` exits 0 when every complete line verifies (a truncated final line left by a killed
process is reported, and still exits 0: the lines before it are intact); 2 when the chain is
broken, naming the first bad line. `show` reads the record as written and reports what was
planned, who ran it, the thresholds, the commands, faults, refusals and stops, and the output
as the device reported it in telemetry.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import EXIT_OK, EXIT_REFUSED

FLAG_ENABLED = 0x01  # ICD Telemetry flags (kept here so `--help` does not import the ICD)
FLAG_COMPLIANCE_LIMITED = 0x02

EXAMPLES = """examples:
  estim record verify ~/.local/share/estim/records/session-20250101-093000.jsonl
  estim record show session.jsonl
  estim record show session.jsonl --plot session.png
  estim record show session.jsonl --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estim record",
        description="Check and summarise treatment records (hash-chained JSON lines).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check the hash chain (exit 0 intact, 2 broken)",
                            description="Check every line's hash and its link to the line before. "
                                        "Exit 0: intact (a truncated final line is reported); 2: broken.")
    verify.add_argument("path", type=Path, metavar="PATH")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    show = sub.add_parser("show", help="summarise a session: plan, operator, thresholds, commands, faults, output",
                          description="Summarise a session from its record. The output table is what the "
                                      "device reported in telemetry, per channel.")
    show.add_argument("path", type=Path, metavar="PATH")
    show.add_argument("--plot", type=Path, metavar="PNG", help="also draw intensity over time as delivered")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.path.is_file():
        print(f"error: {args.path}: no such record file", file=sys.stderr)
        return EXIT_REFUSED
    if args.action == "verify":
        return _verify(args.path, args.json)
    return _show(args.path, args.plot, args.json)


def _verify(path: Path, as_json: bool) -> int:
    from safety import verify_record

    verdict = verify_record(path)
    if as_json:
        print(json.dumps({"path": str(path), **asdict(verdict)}, indent=2))
    elif not verdict.ok:
        print(f"{path}: does NOT verify: line {verdict.first_bad_line}: {verdict.reason}. "
              f"The {verdict.records} record(s) before it verify.")
    elif verdict.truncated_tail:
        print(f"{path}: {verdict.records} complete record(s) verify; line {verdict.first_bad_line} is truncated "
              f"(the writing process stopped mid-record, e.g. it was killed). Nothing before it was altered.")
    else:
        ending = "closed cleanly" if verdict.closed else "no close record (the session did not end with close)"
        print(f"{path}: verifies: {verdict.records} record(s), {ending}; last hash {verdict.last_hash}")
    return EXIT_OK if verdict.ok else EXIT_REFUSED


@dataclass
class ChannelOutput:
    """One channel's output as the device reported it."""

    channel: int
    peak_ma: float = 0.0
    on_s: float = 0.0
    charge_device_uc: float = 0.0
    frequencies_hz: set[float] = field(default_factory=set)
    pulse_widths_us: set[float] = field(default_factory=set)
    load_min_ohm: float | None = None
    load_max_ohm: float | None = None
    compliance_limited_readings: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (device s, mA delivered)


def _show(path: Path, plot: Path | None, as_json: bool) -> int:
    from safety import verify_record

    verdict = verify_record(path)
    records = _read(path)
    summary = _summarise(records)
    outputs = _outputs(records)
    summary["integrity"] = {"ok": verdict.ok, "records": verdict.records, "first_bad_line": verdict.first_bad_line,
                            "reason": verdict.reason, "truncated_tail": verdict.truncated_tail}
    summary["output"] = [{**{k: v for k, v in asdict(o).items() if k != "samples"},
                          "frequencies_hz": sorted(o.frequencies_hz), "pulse_widths_us": sorted(o.pulse_widths_us)}
                         for o in outputs]
    if plot is not None:
        _plot(outputs, plot, path.name)
        summary["plot"] = str(plot)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format(path, summary, outputs))
    return EXIT_OK if verdict.ok else EXIT_REFUSED


def _read(path: Path) -> list[dict[str, Any]]:
    """Every line that parses as a record (a tampered record is still worth reading; verify judges it)."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("data"), dict) and "kind" in rec:
            out.append(rec)
    return out


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    def data(kind: str) -> list[dict[str, Any]]:
        return [r["data"] for r in records if r["kind"] == kind]

    plan = (data("session_plan") or [{}])[0]
    setup = (data("session_setup") or [{}])[0]
    identity = (data("identity") or [{}])[0]
    commands = Counter(r["data"].get("command", {}).get("type", "?") for r in records if r["kind"] == "approved")
    return {
        "started": records[0]["t"] if records else None,
        "ended": records[-1]["t"] if records else None,
        "operator": plan.get("operator"),
        "plan": plan,
        "device": {"serial": identity.get("serial"), "channels": identity.get("channels"),
                   "firmware": f"{identity.get('fw_major')}.{identity.get('fw_minor')}" if identity else None},
        "channels": setup.get("channels"),
        "patient": setup.get("patient"),
        "prescription": setup.get("prescription"),
        "thresholds": data("thresholds"),
        "patient_feedback": data("patient_feedback"),
        "commands": dict(commands),
        "naks": data("nak"),
        "faults": data("fault"),
        "refusals": data("refusal"),
        "stops": [d.get("reason") for d in data("stop")],
        "notices": [d for d in data("action") if d.get("kind") == "notify"],
        "session_end": bool(data("session_end")),
        "closed": bool(records) and records[-1]["kind"] == "close",
    }


def _outputs(records: list[dict[str, Any]]) -> list[ChannelOutput]:
    """Per channel (1-based) from the telemetry lines (wire units: µA, mHz, µs, 0-based channel)."""
    channels: dict[int, ChannelOutput] = {}
    last_t: dict[int, float] = {}
    for rec in records:
        if rec["kind"] != "telemetry":
            continue
        d = rec["data"]
        ch = int(d["channel"]) + 1
        out = channels.setdefault(ch, ChannelOutput(ch))
        t = d["device_time_ms"] / 1000
        on = bool(d["flags"] & FLAG_ENABLED)
        ma = d["amplitude_ua"] / 1000 if on else 0.0
        if ch in last_t and out.samples and out.samples[-1][1] > 0:
            out.on_s += max(0.0, t - last_t[ch])
        last_t[ch] = t
        out.samples.append((t, ma))
        out.peak_ma = max(out.peak_ma, ma)
        out.charge_device_uc = max(out.charge_device_uc, float(d["charge_total_uc"]))
        if on:
            out.frequencies_hz.add(d["frequency_mhz"] / 1000)
            out.pulse_widths_us.add(float(d["phase_us"]))
            if d["flags"] & FLAG_COMPLIANCE_LIMITED:
                out.compliance_limited_readings += 1
        if on and d["load_ohm"] != 0xFFFFFFFF:
            load = float(d["load_ohm"])
            out.load_min_ohm = load if out.load_min_ohm is None else min(out.load_min_ohm, load)
            out.load_max_ohm = load if out.load_max_ohm is None else max(out.load_max_ohm, load)
    return [channels[ch] for ch in sorted(channels) if channels[ch].peak_ma > 0 or channels[ch].on_s > 0]


def _format(path: Path, s: dict[str, Any], outputs: list[ChannelOutput]) -> str:
    integrity = s["integrity"]
    if not integrity["ok"]:
        check = f"BROKEN at line {integrity['first_bad_line']}: {integrity['reason']}"
    elif integrity["truncated_tail"]:
        check = f"{integrity['records']} records verify; final line truncated (writer stopped mid-record)"
    else:
        check = f"{integrity['records']} records verify"
    rx = s["prescription"] or {}
    lines = [
        f"record:     {path}",
        f"integrity:  {check}",
        f"time:       {s['started']} .. {s['ended']}" + ("" if s["closed"] else " (no close record)"),
        f"operator:   {s['operator'] or '-'}",
        f"device:     {s['device']['serial'] or '-'} firmware {s['device']['firmware'] or '-'}",
        f"command:    estim {' '.join(s['plan'].get('argv', [])) or '-'}",
        f"target:     {s['plan'].get('mechanism') or '-'}; sensitivity {s['plan'].get('sensitivity') or '-'}",
        f"after:      {s['plan'].get('integration_plan') or '-'}",
    ]
    if rx:
        lines.append(f"prescription: channels {s['channels']}, cap {rx.get('max_amplitude_ma')} mA, "
                     f"ramp {rx.get('ramp_ma_per_s')} mA/s, {rx.get('frequency_hz')} Hz, "
                     f"{rx.get('pulse_width_us')} µs, {rx.get('max_session_minutes', 0):.1f} min, "
                     f"sensitivity {rx.get('sensitivity')}")
    for t in s["thresholds"]:
        lines.append(f"thresholds: channel {t.get('channel')}: sensory {_ma(t.get('sensory'))}, "
                     f"motor {_ma(t.get('motor'))}, tolerance {_ma(t.get('tolerance'))}")
    for f in s["patient_feedback"]:
        lines.append(f"patient:    channel {f.get('channel')}: {f.get('feedback')} ({f.get('outcome', '')})")
    lines.append("commands:   " + (", ".join(f"{n} {k}" for k, n in sorted(s["commands"].items())) or "none")
                 + (f"; {len(s['naks'])} refused by the device" if s["naks"] else ""))
    lines.append(f"faults:     {len(s['faults'])}")
    lines += [f"  - {f.get('code')} on {_where(f.get('channel'))} at {f.get('device_time_s')} s" for f in s["faults"]]
    lines.append(f"refusals:   {len(s['refusals'])}")
    lines += [f"  - [{r.get('rule')}] {r.get('message')}" for r in s["refusals"]]
    lines += [f"stopped:    {reason}" for reason in s["stops"]]
    lines += [f"notice:     {n.get('reason')}" for n in s["notices"]]
    lines.append("")
    lines.append("output as delivered (device telemetry):")
    if not outputs:
        lines.append("  no channel delivered any output")
    else:
        head = ("ch", "peak mA", "on s", "charge µC", "Hz", "µs", "load Ω", "compliance-limited")
        rows = [head] + [(
            str(o.channel), f"{o.peak_ma:.2f}", f"{o.on_s:.1f}", f"{o.charge_device_uc:.0f}",
            "/".join(f"{f:g}" for f in sorted(o.frequencies_hz)) or "-",
            "/".join(f"{w:g}" for w in sorted(o.pulse_widths_us)) or "-",
            "-" if o.load_min_ohm is None else f"{o.load_min_ohm:.0f}-{o.load_max_ohm:.0f}",
            str(o.compliance_limited_readings)) for o in outputs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _ma(value: float | None) -> str:
    return "-" if value is None else f"{value:g} mA"


def _where(channel: int | None) -> str:
    return "the device" if channel is None else f"channel {channel}"


def _plot(outputs: list[ChannelOutput], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for o in outputs:
        ax.step([t for t, _ in o.samples], [ma for _, ma in o.samples], where="post", label=f"channel {o.channel}")
    ax.set_xlabel("device time (s)")
    ax.set_ylabel("intensity delivered (mA)")
    ax.set_title(f"{title}: intensity as delivered")
    if outputs:
        ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
