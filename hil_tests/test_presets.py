"""Every preset delivered as programmed: a short program of each preset run by the
session engine (firmware_host.waveforms.engine.run_program) through the product session,
and the device's telemetry compared with the program, each setting from when the engine
actually sent it, within one update period. How late the engine sent is measured on its
own (`send_late_p99`, a timing limit): on a busy host or behind a network link (RFC 2217)
lateness must not read as a wrong delivery."""

from __future__ import annotations

import time

import pytest

from firmware_host.stimulator import Stimulator
from firmware_host.waveforms import Mechanism, Needle, Site, preset_program
from firmware_host.waveforms.check import check
from firmware_host.waveforms.engine import Update, run_program
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import Scheduled, observed, timeline_mismatches

pytestmark = pytest.mark.timeout(40)

UPDATE_PERIOD_S = 0.1
PROGRAM_S = 4.0  # past the first dense/disperse switch
THRESHOLDS_MA = {"sensory": 2.0, "motor": 3.0, "tolerance": 5.0}
SITE = Site(region="forearm", side="left")
NEEDLE = Needle(diameter_mm=0.25, length_mm=15.0, inserted_mm=15.0, site_a=SITE, site_b=SITE)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", list(Mechanism), ids=lambda m: m.value)
def test_preset_delivered_as_programmed(stim: Stimulator, dut: DeviceUnderTest, measure: Measure,
                                        mechanism: Mechanism) -> None:
    channels = tuple(range(1, min(2, dut.identity.channels) + 1))
    program = preset_program(mechanism, dict.fromkeys(channels, NEEDLE), "hyposensitive", minutes=PROGRAM_S / 60)
    program = program.resolve(dict.fromkeys(channels, THRESHOLDS_MA))
    verdict = check(program, stim.limits)
    if not verdict.ok:  # e.g. a device whose widest phase is narrower than the preset's
        pytest.skip(f"{mechanism.value} cannot run within this device's limits: "
                    + "; ".join(list(dict.fromkeys(f.message for f in verdict.violations))[:3]))
    starts: list[float] = []
    lateness: list[tuple[float, float]] = []  # (planned, sent - planned) of every update sent, in order

    def on_update(update: Update) -> None:
        if not starts:
            starts.append(time.monotonic() - update.sent_s)  # the session start on this clock
        lateness.append((update.planned_s, update.sent_s - update.planned_s))

    def sent_at(t_s: float) -> float:
        """When the program's setting at `t_s` went out (an unchanged one: as late as the last sent)."""
        late = [d for planned, d in lateness if planned <= t_s + 1e-9][-1:] or [0.0]
        return starts[0] + t_s + late[0]

    with observed(stim) as seen:
        report = run_program(stim, program, update_period_s=UPDATE_PERIOD_S, on_update=on_update)
    assert report.completed, report.stop_reason
    start = starts[0]
    schedules: dict[int, list[Scheduled]] = {ch: [] for ch in channels}
    for item in program.settings(UPDATE_PERIOD_S):
        schedules[item.channel].append((sent_at(item.t_s), item.channel_setting()))
    during = [(t, r) for t, r in seen.readings
              if r.channel in channels and r.enabled and start <= t <= start + program.duration_s]
    mismatches = timeline_mismatches(during, schedules, UPDATE_PERIOD_S)
    measure("program_updates", report.program_updates, "")
    measure("rate_limited_updates", report.rate_limited, "", high=0)
    measure("send_late_p99", report.late_p99_s * 1000, "ms", high=UPDATE_PERIOD_S * 1000, timing=True)
    measure("readings_compared", len(during), "", low=PROGRAM_S * dut.identity.telemetry_hz * len(channels) / 2)
    measure("timeline_mismatches", len(mismatches), "readings", high=0)
    assert not mismatches, "\n".join(mismatches[:10])
    assert not seen.faults and stim.tripped is None, (seen.faults, stim.tripped)
    assert not stim.enabled(), "the engine must leave every output off"
