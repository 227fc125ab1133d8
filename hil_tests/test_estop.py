"""E-stop latency: from the host's call to the device's output switching off.

The trials drive the link directly (the product's own out-of-band `Link.estop`, which
`Stimulator.estop` calls after tripping its interlock): a Stimulator's supervisor answers the
device's FAULT ESTOP with an e-stop of its own, asynchronously, which would trip the next
trial if it were re-armed at machine speed.

On the simulator the device trace stamps the instant its outputs went off with
CLOCK_MONOTONIC, which the host shares, so the latency is measured end to end. Real
hardware has no trace: there the host-side time to the device's ACK is the measurement
(an upper bound on when the device acted, plus the ACK's way back).
"""

from __future__ import annotations

import time

import pytest

from firmware_host import icd
from firmware_host.link import Link
from firmware_host.sim.process import output_off
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import ask

pytestmark = pytest.mark.timeout(60)

TRIALS = 100
DEVICE_LIMIT_MS = 2.0  # the product's e-stop promise, device clock
ACK_LIMIT_MS = 20.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.mark.slow
def test_estop_latency(link: Link, dut: DeviceUnderTest, measure: Measure) -> None:
    ask(link, icd.SetChannel(0, icd.Shape.BIPHASIC, 1, 0, 50_000, 0, 200, 0, 0))
    trace = dut.trace()
    calls: list[float] = []
    ack_ms: list[float] = []
    for _ in range(TRIALS):
        ask(link, icd.Output(0b1))
        called = time.monotonic()
        assert link.estop(), "the device did not ACK ESTOP"
        ack_ms.append((time.monotonic() - called) * 1000)
        calls.append(called)
        ask(link, icd.ClearFault())
    status = ask(link, icd.GetStatus())
    assert isinstance(status, icd.Status) and status.output_mask == 0 and status.latched_faults == 0
    measure("estop_trials", len(calls), "", low=TRIALS)
    measure("estop_ack_p50", percentile(ack_ms, 0.5), "ms", high=ACK_LIMIT_MS, timing=True)
    measure("estop_ack_p99", percentile(ack_ms, 0.99), "ms", high=ACK_LIMIT_MS, timing=True)
    if trace is None:
        return  # real hardware: the ACK time above is the measurement
    offs = [e["t"] for e in trace.events_after(calls[0]) if output_off("estop")(e)]
    device_ms = []
    for i, called in enumerate(calls):
        until = calls[i + 1] if i + 1 < len(calls) else float("inf")
        device_ms += [(t - called) * 1000 for t in offs if called <= t < until][:1]
    measure("estop_outputs_off_seen", len(device_ms), "", low=TRIALS, high=TRIALS)
    measure("estop_device_p50", percentile(device_ms, 0.5), "ms", high=DEVICE_LIMIT_MS, timing=True)
    measure("estop_device_p99", percentile(device_ms, 0.99), "ms", high=DEVICE_LIMIT_MS, timing=True)
    measure("estop_device_max", max(device_ms), "ms")
