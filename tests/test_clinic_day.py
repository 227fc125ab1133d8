"""A clinic day on one long-running device (hil_tests/clinic_day.py): at least 30 sessions
back to back — direct runs, a titration, a preset dosed from it, a program, the console, an
operator's STOP, an OVERCURRENT, a reboot, a controller killed outright — each stop cleared
by name, zero false trips, every record verifying. Once on our simulator (ICD v2), once on the
independently written peer device speaking ICD v1 (2 channels, 20 Hz telemetry, a 500 ms
watchdog, registers kept across HELLO, WATCHDOG latched after every session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import spawn_sim
from hil_tests.clinic_day import Day
from tests.peer_device.process import spawn_peer

pytestmark = pytest.mark.timeout(240)


def assert_a_good_day(day: Day, sessions: int) -> None:
    report = day.run_day(sessions=sessions)
    summary = report.summary()
    assert report.sessions >= sessions, summary
    assert not report.false_trips, summary
    assert not report.failures, summary
    assert report.verified and not report.bad_records, summary
    assert any("killed" in name for name in report.verified), "the day must include a killed controller"


def test_a_clinic_day_on_the_simulator(tmp_path: Path) -> None:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as sim:
        assert_a_good_day(Day(sim.url, tmp_path, sim_control=True), sessions=30)


@pytest.fixture
def peer_v1(tmp_path: Path) -> Iterator[str]:
    with spawn_peer("pty", trace=tmp_path / "peer-trace.jsonl", protocol_version=1) as peer:
        yield peer.url


def test_a_clinic_day_on_an_independent_icd_v1_device(peer_v1: str, tmp_path: Path) -> None:
    """Every kind of session and every stop of the day; fewer plain sessions than the full day."""
    day = Day(peer_v1, tmp_path, sim_control=True)
    assert_a_good_day(day, sessions=16)
    assert day.v1
