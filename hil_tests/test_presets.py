"""Every preset delivered as programmed: a short program of each preset run by the
session engine (firmware_host.waveforms.engine.run_program) through the product session,
and the device's telemetry, each reading at the instant the device took it, compared with
every setting as the engine sent it (program updates and ramp steps), within one update
period. How late the engine sent, and rises it had to hold back after a late send, are
timing measurements of their own (limits with --strict-timing): a busy host, or telemetry
held up on a network link (RFC 2217 as labgrid runs ser2net: up to 40 ms), must not read as
a wrong delivery."""

from __future__ import annotations

import time

import pytest

from firmware_host.stimulator import Stimulator
from firmware_host.waveforms import Mechanism, Needle, Site, preset_program
from firmware_host.waveforms.check import check
from firmware_host.waveforms.engine import Update, run_program
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import Scheduled, dosed_in_ma, observed, timeline_mismatches
from safety import ChannelSetting

pytestmark = pytest.mark.timeout(40)

UPDATE_PERIOD_S = 0.1
PROGRAM_S = 3.3  # past the first dense/disperse switch (at 3 s)
THRESHOLDS_MA = {"sensory": 2.0, "motor": 3.0, "tolerance": 5.0}
SITE = Site(region="forearm", side="left")
NEEDLE = Needle(diameter_mm=0.25, length_mm=15.0, inserted_mm=15.0, site_a=SITE, site_b=SITE)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", list(Mechanism), ids=lambda m: m.value)
def test_preset_delivered_as_programmed(stim: Stimulator, dut: DeviceUnderTest, measure: Measure,
                                        mechanism: Mechanism) -> None:
    channels = tuple(range(1, min(2, dut.identity.channels) + 1))
    program = preset_program(mechanism, dict.fromkeys(channels, NEEDLE), "hyposensitive", minutes=PROGRAM_S / 60)
    program = dosed_in_ma(program, THRESHOLDS_MA)
    verdict = check(program, stim.limits)
    if not verdict.ok:  # e.g. a device whose widest phase is narrower than the preset's
        pytest.skip(f"{mechanism.value} cannot run within this device's limits: "
                    + "; ".join(list(dict.fromkeys(f.message for f in verdict.violations))[:3]))
    now = [0.0]  # the engine clock's last reading
    starts: list[float] = []
    schedules: dict[int, list[Scheduled]] = {ch: [] for ch in channels}  # every setting as sent, host clock
    apply = stim.apply

    def clock() -> float:
        now[0] = time.monotonic()
        return now[0]

    def on_update(update: Update) -> None:
        if not starts:
            starts.append(now[0] - update.sent_s)  # the engine's start, on this clock

    def apply_and_note(setting: ChannelSetting) -> None:  # all the engine sends: 0 mA first, updates, ramp steps
        sent = time.monotonic()
        apply(setting)
        schedules[setting.channel].append((sent, setting))

    stim.apply = apply_and_note  # type: ignore[method-assign]
    try:
        with observed(stim) as seen:
            report = run_program(stim, program, update_period_s=UPDATE_PERIOD_S, clock=clock, on_update=on_update)
    finally:
        del stim.apply  # the session's own again
    assert report.completed, report.stop_reason
    start = starts[0]
    # each reading at the instant the device took it, on the host clock: the device clock plus
    # the smallest offset seen (the fastest delivery), so a reading held up on its way is not late
    offset = min(t - r.device_time_s for t, r in seen.readings)
    during = [(r.device_time_s + offset, r) for _, r in seen.readings
              if r.channel in channels and r.enabled and start <= r.device_time_s + offset <= start + program.duration_s]
    mismatches = timeline_mismatches(during, schedules, UPDATE_PERIOD_S)
    measure("program_updates", report.program_updates, "")
    # a rise held back, then sent in ramp steps, when a late send meets a prompt one: host timing
    measure("rate_limited_updates", report.rate_limited, "", high=0, timing=True)
    measure("send_late_p99", report.late_p99_s * 1000, "ms", high=UPDATE_PERIOD_S * 1000, timing=True)
    measure("readings_compared", len(during), "", low=PROGRAM_S * dut.identity.telemetry_hz * len(channels) / 2)
    measure("timeline_mismatches", len(mismatches), "readings", high=0)
    assert not mismatches, "\n".join(mismatches[:10])
    assert not seen.faults and stim.tripped is None, (seen.faults, stim.tripped)
    assert not stim.enabled(), "the engine must leave every output off"
