"""Treatment-record figures: size per session-minute for every shipped program and preset on
4 channels, and `estim record verify` wall time (start-up included) for a 30-minute record.

Each session is streamed by the real engine (`run_program`: ramps, modulation, every update
at its deadline) through the real interlock and the real `TreatmentRecord` on a simulated
clock: every setting is approved, goes to the wire and is acknowledged as the link would,
and every channel is read ten times a second with the fields an ICD v2 device sends (the
whole waveform; charge accumulating, load jittering by a few ohms). Presets run on channels
1-4 (typical sensitivity, thresholds 1 / 3 / 5 mA); a program file with fewer channels is
widened to 4 by repeating its first channel's needles and waveform (and is never made longer than
its prescription allows).

    python bench/record_bench.py [--minutes 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.waveforms_bench import SIM_DEVICE, VirtualClock  # noqa: E402
from firmware_host.stimulator import Stimulator  # noqa: E402
from firmware_host.programs import shipped  # noqa: E402
from firmware_host.waveforms import PRESETS, Program, preset_program  # noqa: E402
from firmware_host.waveforms.engine import run_program  # noqa: E402
from firmware_host.waveforms.program import Needle  # noqa: E402
from hil_tests.harness import dosed_in_ma  # noqa: E402
from safety import Interlock, TreatmentRecord, read_readings, verify_record  # noqa: E402
from safety.record_keys import create_key, load_key  # noqa: E402

READINGS_PER_S = 10
CHANNELS = (1, 2, 3, 4)
THRESHOLDS = {"sensory": 1.0, "motor": 3.0, "tolerance": 5.0}
NEEDLE = {"diameter_mm": 0.25, "length_mm": 25, "inserted_mm": 15,
          "site_a": {"region": "forearm", "side": "left"}, "site_b": {"region": "forearm", "side": "left"}}


class _Bench:
    """Stands where the `Stimulator` stands for the engine, with the stimulator's own methods
    for everything but the wire: every setting approved, sent and acknowledged at once,
    readings appended as the virtual clock passes each tenth of a second."""

    tripped = Stimulator.tripped
    enabled, setting = Stimulator.enabled, Stimulator.setting
    apply, enable, safe_off = Stimulator.apply, Stimulator.enable, Stimulator.safe_off

    def __init__(self, interlock: Interlock, record: TreatmentRecord, clock: VirtualClock) -> None:
        self.interlock, self.record, self.clock = interlock, record, clock
        self.channels = interlock.setup.channels
        self._charge = {ch: 0.0 for ch in self.channels}
        self._next_tick = 0.0
        self._rng = random.Random(1)

    def _execute(self, approved: Any) -> None:
        approved.consume()
        self.interlock.note_acknowledged(approved)

    def sleep(self, dt: float) -> None:
        end = self.clock.t + dt
        while self._next_tick <= end:
            self.clock.t = self._next_tick
            self._readings(round(self._next_tick * READINGS_PER_S))
            self._next_tick += 1 / READINGS_PER_S
        self.clock.t = end

    def _readings(self, tick: int) -> None:
        for ch in self.channels:
            s, on = self.interlock.applied(ch)
            if s is None:
                continue
            if on:
                self._charge[ch] += s.phase_charge_uc * s.pulse_rate_hz / READINGS_PER_S
            self.record.append("telemetry", {
                "device_time_ms": tick * 100 + 3, "channel": ch - 1, "flags": 1 if on else 0, "latched_faults": 0,
                "amplitude_ua": s.amplitude_ua if on else 0, "frequency_mhz": round(s.frequency_hz * 1000),
                "phase_us": round(s.pulse_width_us), "load_ohm": 1000 + self._rng.randint(-3, 3),
                "charge_total_uc": int(self._charge[ch]), "shape": int(s.shape), "asym_ratio": s.asym_ratio,
                "burst_pulses": s.burst_pulses, "interphase_us": round(s.interphase_us),
                "burst_rate_mhz": round(s.burst_rate_hz * 1000)})


def programs(minutes: float) -> Iterator[tuple[str, Program]]:
    """Every preset and every shipped program, on 4 channels, `minutes` long, in mA."""
    for name in map(str, PRESETS):
        program = preset_program(name, {ch: Needle.model_validate(NEEDLE) for ch in CHANNELS}, "typical", minutes)
        yield f"preset_{name}", dosed_in_ma(program, THRESHOLDS)
    for path in shipped().values():
        data = Program.load(path).model_dump()
        first = min(data["needles"])
        for ch in CHANNELS:
            data["needles"].setdefault(ch, data["needles"][first])
            data["prescription"]["max_amplitude_ma"].setdefault(ch, data["prescription"]["max_amplitude_ma"][first])
            for segment in data["segments"]:
                segment["channels"].setdefault(ch, segment["channels"][first])
        total = sum(segment["duration_s"] for segment in data["segments"])
        length = min(minutes, data["prescription"]["max_minutes"])   # as long as its prescription allows
        for segment in data["segments"]:
            segment["duration_s"] *= length * 60 / total
        yield f"program_{path.stem}", dosed_in_ma(Program.model_validate(data), THRESHOLDS)


def write(program: Program, path: Path, key: Any) -> float:
    """Stream the program into a record; the session's length in minutes."""
    clock = VirtualClock()
    with TreatmentRecord(path, clock=clock, key=key) as record:
        interlock = Interlock(program.session_setup(SIM_DEVICE), clock=clock, record=record)
        bench = _Bench(interlock, record, clock)
        report = run_program(bench, program, clock=clock, sleep=bench.sleep)  # type: ignore[arg-type]
        if not report.completed:
            raise RuntimeError(f"{program.name}: the bench session stopped: {report.stop_reason}")
    return clock.t / 60


def _estim_verify(path: Path, store: str, config: Path) -> float:
    """Wall time of `estim record verify PATH` as a clinician runs it (a new process)."""
    estim = Path(sys.executable).with_name("estim")
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "XDG_STATE_HOME": str(config / "state")}
    start = time.perf_counter()
    done = subprocess.run([str(estim), "record", "verify", str(path), "--store", store], capture_output=True,
                          text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"estim record verify {path}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return elapsed


def run(minutes: float = 5.0, verify_minutes: float = 30.0) -> dict[str, Any]:
    from firmware_host.visits import VisitStore

    figures: dict[str, Any] = {"minutes": minutes, "kb_per_min": {}}
    with tempfile.TemporaryDirectory(prefix="estim-record-bench-") as tmp:
        root = Path(tmp)
        key = create_key("bench", root / "estim" / "keys")
        for name, program in programs(minutes):
            path = root / f"{name}.jsonl"
            length = write(program, path, key)
            figures["kb_per_min"][name] = path.stat().st_size / 1000 / length
        # the largest per minute, for 30 minutes: verify in-process, then `estim record verify` with its store
        worst = max(figures["kb_per_min"], key=figures["kb_per_min"].get)
        program = next(p for name, p in programs(verify_minutes) if name == worst)
        path = root / "long.jsonl"
        start = time.perf_counter()
        length = write(program, path, key)
        figures["write_s"] = time.perf_counter() - start
        keys = lambda key_id: load_key(key_id, root / "estim" / "keys")  # noqa: E731
        start = time.perf_counter()
        verdict = verify_record(path, keys=keys)
        figures["verify_in_process_s"] = time.perf_counter() - start
        if not verdict.closed:
            raise RuntimeError(f"the bench record does not verify: {verdict.reason}")
        start = time.perf_counter()
        readings = sum(1 for _ in read_readings(path))
        figures["read_readings_s"] = time.perf_counter() - start
        store = f"sqlite:///{root / 'visits.sqlite3'}"
        tiny = root / "tiny.jsonl"
        with VisitStore(store) as visits:
            with TreatmentRecord(tiny, key=key) as record:
                record.append("stop", {"reason": "bench"})
            for anchored in (path, tiny):
                v = verify_record(anchored, keys=keys)
                visits.put_record_head(v.record_id, str(anchored), v.records, v.last_hash, v.key_id, v.closed,
                                       v.last_signature)
        runs = [_estim_verify(path, store, root) for _ in range(3)]
        starts = [_estim_verify(tiny, store, root) for _ in range(5)]
        figures.update({
            "verify_program": worst, "verify_minutes": length, "verify_size_mb": path.stat().st_size / 1e6,
            "verify_readings": readings, "verify_cli_s": sorted(runs)[1], "verify_startup_s": sorted(starts)[2],
        })
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.minutes)
    print(json.dumps(figures, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
