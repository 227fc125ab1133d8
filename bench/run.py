"""Run the benchmarks, print a table (name, value, unit, target, ok) and ratios, write JSON.

    python -m bench [--quick] [--json PATH] [--only NAME ...]
    python bench/run.py ...          (same)

NAME: estop, watchdog, link, rfc2217, cpu, cli, waveforms, record, clinic, trace. Figures are never asserted
in tests; compare `--json` files across commits instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import latency, link_bench
from bench.harness import RFC2217
from bench.stats import Result
from firmware_host.sim.process import child_env

CLI_RUNS = 10


def run_cli(workdir: Path, quick: bool) -> list[Result]:
    """`estim --help` wall time, median of CLI_RUNS subprocess runs."""
    estim = Path(sys.executable).with_name("estim")
    times = []
    for _ in range(CLI_RUNS):
        start = time.perf_counter()
        subprocess.run([str(estim), "--help"], check=True, capture_output=True, env=child_env())
        times.append(time.perf_counter() - start)
    return [Result("cli_help_startup", statistics.median(times) * 1e3, "ms")]


def run_waveforms(workdir: Path, quick: bool) -> list[Result]:
    """Program check, rendering, streaming and memory figures from bench/waveforms_bench.py."""
    from bench import waveforms_bench

    fig = waveforms_bench.run(quick)
    check_ms = fig["check_vectorised_s"] * 1e3
    rss = fig["peak_rss_mib_after_streaming_min"]
    growth = max(rss.values()) / min(rss.values())
    return [
        Result("check_60min_4ch_vectorised", check_ms, "ms", "< 100", check_ms < 100),
        Result("check_60min_4ch_per_pulse_loop", fig["check_per_pulse_s_extrapolated"], "s"),
        Result("check_ratio", fig["check_ratio"], "x", ">= 50", fig["check_ratio"] >= 50),
        Result("arrays_60min_4ch", fig["arrays_60min_4ch_s"] * 1e3, "ms"),
        Result("render_samples_per_s", fig["render_samples_per_s"], "1/s"),
        Result("engine_late_p50", fig["engine_late_p50_ms"], "ms"),
        Result("engine_late_p99", fig["engine_late_p99_ms"], "ms"),
        Result("engine_late_max", fig["engine_late_max_ms"], "ms"),
        *(Result(f"peak_rss_streamed_{minutes}min", mib, "MiB") for minutes, mib in rss.items()),
        Result("peak_rss_growth_1_to_60min", growth, "x", "flat (< 1.1)", growth < 1.1),
    ]


def run_record(workdir: Path, quick: bool) -> list[Result]:
    """Treatment record: size per session-minute of every shipped program and preset on 4
    channels (5-min sessions; 1 min with --quick), and `estim record verify` wall time
    (start-up included) of the largest for 30 minutes (3 with --quick)."""
    from bench import record_bench

    fig = record_bench.run(1.0 if quick else 5.0, 3.0 if quick else 30.0)
    results = [Result(f"record_kb_per_min_4ch_{name}", kb, "kB/min", "<= 170", kb <= 170)
               for name, kb in fig["kb_per_min"].items()]
    tag = f"{fig['verify_minutes']:g}min_4ch"
    full = not quick
    return results + [
        Result(f"record_size_{tag}_{fig['verify_program']}", fig["verify_size_mb"], "MB"),
        Result(f"record_verify_cli_{tag}", fig["verify_cli_s"], "s", *(("< 1", fig["verify_cli_s"] < 1) if full else ())),
        Result("record_verify_cli_startup", fig["verify_startup_s"], "s", "<= 0.3", fig["verify_startup_s"] <= 0.3),
        Result(f"record_verify_in_process_{tag}", fig["verify_in_process_s"], "s"),
        Result(f"record_read_readings_{tag}", fig["read_readings_s"], "s"),
        Result(f"record_write_{tag}", fig["write_s"], "s"),
    ]


def run_rfc2217(workdir: Path, quick: bool) -> list[Result]:
    """E-stop latency, round trip and window throughput through ser2net (RFC 2217) on loopback,
    the pty figures' counterparts: as labgrid's exporter runs ser2net, and as a rig host
    configured by hand should (`_tuned`: TCP_NODELAY, no chardelay; hil_tests/README.md)."""
    from hil_tests.ser2net import ser2net_binary

    if ser2net_binary() is None:
        print("  rfc2217: skipped, ser2net is not installed (Debian: apt-get install ser2net)")
        return []
    return [r for transport in RFC2217 for r in (
        *latency.estop_on(transport, workdir, quick, latency.ESTOP_P99_NETWORK_MS),
        *link_bench.link_on(transport, workdir, quick))]


def run_clinic(workdir: Path, quick: bool) -> list[Result]:
    """A clinic day (hil_tests/clinic_day.py) on one simulator process: sessions, wall time,
    false trips and records that did not verify as they should."""
    from firmware_host.sim.process import spawn_sim
    from hil_tests.clinic_day import Day

    days = {"sim_v2": ["protocol_version=2"], "sim_v1": ["protocol_version=1"]}
    results = []
    for name, settings in (list(days.items())[:1] if quick else days.items()):
        with spawn_sim("pty", trace_path=workdir / f"{name}-trace.jsonl", settings=settings) as sim:
            day = workdir / name
            day.mkdir()
            report = Day(sim.url, day, sim_control=True).run_day(sessions=30)
        bad = report.bad_records
        for step in report.failures:
            print(f"  clinic day {name}: {step.name}: exit {step.code}, expected {step.expected}: {step.detail[-300:]}")
        for record, code in bad.items():
            print(f"  clinic day {name}: record {record} verified with exit {code}")
        results += [
            Result(f"clinic_day_{name}_sessions", report.sessions, "", ">= 30", report.sessions >= 30),
            Result(f"clinic_day_{name}_wall", report.seconds, "s"),
            Result(f"clinic_day_{name}_session_median", statistics.median(s.seconds for s in report.session_steps), "s"),
            Result(f"clinic_day_{name}_false_trips", len(report.false_trips), "", "0", not report.false_trips),
            Result(f"clinic_day_{name}_steps_not_as_expected", len(report.failures), "", "0", not report.failures),
            Result(f"clinic_day_{name}_records_not_verifying", len(bad), "", "0", not bad),
        ]
    return results


def run_trace(workdir: Path, quick: bool) -> list[Result]:
    """The hazard log's trace check and the mutation run (bench/trace_bench.py)."""
    from bench import trace_bench

    return trace_bench.run(workdir, quick)


BENCHMARKS: dict[str, Callable[[Path, bool], list[Result]]] = {
    "estop": latency.run_estop,
    "watchdog": latency.run_watchdog,
    "link": link_bench.run_link,
    "rfc2217": run_rfc2217,
    "cpu": lambda _workdir, quick: link_bench.run_cpu(quick),
    "cli": run_cli,
    "waveforms": run_waveforms,
    "record": run_record,
    "clinic": run_clinic,
    "trace": run_trace,
}

# (name, numerator, denominator), when both were measured; window_ratio_* are results (they have a target)
RATIOS = [
    ("wire_over_cpu_set_channel", "wire_set_channel_115200", "cpu_encode_write_set_channel"),
    ("wire_over_cpu_ack", "wire_ack_115200", "cpu_read_decode_ack"),
    ("estop_p99_saturated_over_idle_pty", "estop_link_saturated_pty_p99", "estop_link_idle_pty_p99"),
    ("estop_p99_saturated_over_idle_tcp", "estop_link_saturated_tcp_p99", "estop_link_idle_tcp_p99"),
    ("estop_p99_api_over_link_pty", "estop_api_idle_pty_p99", "estop_link_idle_pty_p99"),
    ("estop_p99_api_over_link_tcp", "estop_api_idle_tcp_p99", "estop_link_idle_tcp_p99"),
    ("estop_p99_rfc2217_over_pty", "estop_link_idle_rfc2217_p99", "estop_link_idle_pty_p99"),
    ("round_trip_p99_rfc2217_over_pty", "round_trip_rfc2217_p99", "round_trip_pty_p99"),
    ("round_trip_p99_rfc2217_tuned_over_pty", "round_trip_rfc2217_tuned_p99", "round_trip_pty_p99"),
    ("settings_per_s_rfc2217_over_pty", "settings_per_s_window8_rfc2217", "settings_per_s_window8_pty"),
    ("settings_per_s_rfc2217_tuned_over_pty", "settings_per_s_window8_rfc2217_tuned", "settings_per_s_window8_pty"),
]


def machine() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def ratios(results: Sequence[Result]) -> dict[str, float]:
    values = {r.name: r.value for r in results}
    return {name: values[num] / values[den] for name, num, den in RATIOS if num in values and values.get(den)}


def table(results: Sequence[Result], ratio_values: dict[str, float]) -> str:
    width = max([len(r.name) for r in results] + [len(n) for n in ratio_values] + [4])
    lines = [f"{'name':<{width}}  {'value':>12}  {'unit':<9}  {'target':<12}  ok", "-" * (width + 45)]
    for r in results:
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append(f"{r.name:<{width}}  {r.value:>12.4g}  {r.unit:<9}  {r.target:<12}  {ok}")
    if ratio_values:
        lines += ["", "ratios", "-" * (width + 14)]
        lines += [f"{name:<{width}}  {value:>12.4g}" for name, value in ratio_values.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (under ~40 s)")
    parser.add_argument("--json", metavar="PATH", help="write machine info and results as JSON")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="estim-bench-") as tmp:
        for xdg in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):  # its own keys, store and records:
            os.environ[xdg] = str(Path(tmp) / xdg.lower())                  # never the user's
        for name in args.only or BENCHMARKS:
            print(f"running {name} ...", flush=True)
            results += BENCHMARKS[name](Path(tmp), args.quick)
    ratio_values = ratios(results)
    print(table(results, ratio_values))
    print(f"\n{len(results)} figures in {time.perf_counter() - started:.1f} s")
    if args.json:
        report = {
            "machine": machine(),
            "quick": args.quick,
            "results": {r.name: {k: v for k, v in asdict(r).items() if k != "name"} for r in results},
            "ratios": ratio_values,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
