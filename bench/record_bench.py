"""Treatment-record figures: size on disk and verify/read time of a 30-minute 4-channel
2/100 Hz dense-disperse session.

The session is replayed at machine speed through the real interlock and the real
`TreatmentRecord` on a simulated clock: every programmed setting is approved, consumed
and acknowledged as the link would, and every channel is read ten times a second with
the fields an ICD v2 device sends (the whole waveform; charge accumulating, load jittering
by a few ohms).

    python bench/record_bench.py [--minutes 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.waveforms_bench import SIM_DEVICE, VirtualClock, dense_disperse  # noqa: E402
from safety import Interlock, Patient, SafetyError, TreatmentRecord, read_readings, verify_record  # noqa: E402
from safety.record_keys import create_key, load_key  # noqa: E402

READINGS_PER_S = 10


def replay(path: Path, minutes: float, key_dir: Path) -> dict[str, int]:
    """Write the session's record; returns counts of what went in."""
    program = dense_disperse(minutes)
    clock, rng = VirtualClock(), random.Random(1)
    counts = {"settings": 0, "readings": 0, "refusals": 0}
    charge = {ch: 0.0 for ch in program.needles}
    applied: dict[int, Any] = {}
    with TreatmentRecord(path, clock=clock, key=create_key("bench", key_dir)) as record:
        interlock = Interlock(program.session_setup(SIM_DEVICE, Patient()), clock=clock, record=record)
        settings = iter(program.settings(1 / READINGS_PER_S))
        pending = next(settings, None)
        enabled = False
        for tick in range(int(minutes * 60 * READINGS_PER_S)):
            clock.t = tick / READINGS_PER_S
            while pending is not None and pending.t_s <= clock.t + 1e-9:
                try:
                    _send(interlock, interlock.approve_set_channel(pending.channel_setting()))
                    applied[pending.channel] = pending.channel_setting()
                    counts["settings"] += 1
                except SafetyError:  # a refusal: the interlock recorded it
                    counts["refusals"] += 1
                if not enabled and len(applied) == len(program.needles):
                    _send(interlock, interlock.approve_outputs(set(applied)))
                    enabled = True
                pending = next(settings, None)
            for ch, s in sorted(applied.items()):
                charge[ch] += s.phase_charge_uc * s.pulse_rate_hz / READINGS_PER_S
                record.append("telemetry", {
                    "device_time_ms": tick * 100 + 3, "channel": ch - 1, "flags": 1 if enabled else 0,
                    "latched_faults": 0, "amplitude_ua": s.amplitude_ua,
                    "frequency_mhz": round(s.frequency_hz * 1000), "phase_us": round(s.pulse_width_us),
                    "load_ohm": 1000 + rng.randint(-3, 3), "charge_total_uc": int(charge[ch]),
                    "shape": int(s.shape), "asym_ratio": s.asym_ratio, "burst_pulses": s.burst_pulses,
                    "interphase_us": round(s.interphase_us), "burst_rate_mhz": round(s.burst_rate_hz * 1000)})
                counts["readings"] += 1
    return counts


def _send(interlock: Interlock, approved: Any) -> None:
    approved.consume()
    interlock.note_acknowledged(approved)


def run(minutes: float = 30.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="estim-record-bench-") as tmp:
        path, keys = Path(tmp) / "session.jsonl", Path(tmp) / "estim" / "keys"
        start = time.perf_counter()
        counts = replay(path, minutes, keys)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        verdict = verify_record(path, keys=lambda key_id: load_key(key_id, keys))
        verify_s = time.perf_counter() - start
        if not verdict.closed:
            raise RuntimeError(f"the bench record does not verify: {verdict.reason}")
        start = time.perf_counter()
        readings = sum(1 for _ in read_readings(path))
        read_s = time.perf_counter() - start
        if readings != counts["readings"]:
            raise RuntimeError(f"{readings} readings read back of {counts['readings']} written")
        return {"minutes": minutes, "size_mb": path.stat().st_size / 1e6, "records": verdict.records,
                "readings": readings, "settings": counts["settings"], "refusals": counts["refusals"],
                "write_s": write_s, "verify_s": verify_s, "read_readings_s": read_s,
                "bytes_per_reading_all_in": path.stat().st_size / readings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.minutes)
    print(json.dumps(figures, indent=2) if args.json else "\n".join(f"{k}: {v:.4g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
