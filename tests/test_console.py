"""The treatment-room console, headless (Textual's pilot) against the built-in simulated device:
key presses must lead to the right commands on the link and the right device state."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest

import firmware_host as fh
from firmware_host.console import ConsoleApp, ConsoleSettings
from safety import ChannelSetting, Shape, TreatmentRecord, read_entries

from support import forearm_sites, prescription

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def stim(tmp_path: Path) -> Iterator[fh.Stimulator]:
    record = TreatmentRecord(tmp_path / "console.jsonl")
    # Textual's drawing shares the GIL with the link: on a loaded machine a 300 ms watchdog
    # can trip for want of a heartbeat, which is not what these tests are about
    with fh.open("sim://?watchdog_ms=1000", prescription=prescription(max_ma=3.0, ramp=2.0), placements=forearm_sites(1, 2),
                 record=record) as session:
        yield session
    record.close()


def synchronous(test: Callable[..., Coroutine]) -> Callable[..., None]:
    """Run an async test on its own event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


def app_for(stim: fh.Stimulator, operator: str = "") -> ConsoleApp:
    waves = [ChannelSetting(ch, Shape.BIPHASIC, 2, 200, 0) for ch in (1, 2)]
    return ConsoleApp(stim, waves, ConsoleSettings(step_ma=0.4, feedback_step_ma=0.3, offer_step_ma=0.2),
                      operator=operator)


async def until(pilot, predicate: Callable[[], bool], timeout: float = 15.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        log = pilot.app.query_one("#messages").lines
        assert loop.time() < deadline, "condition not met in time; the console said: " + " | ".join(
            line.text for line in log)
        await pilot.pause(0.05)


def applied_ma(stim: fh.Stimulator, channel: int) -> float:
    setting, _ = stim.interlock.applied(channel)
    return setting.amplitude_ma if setting else 0.0


def kinds(stim: fh.Stimulator) -> list[dict]:
    assert stim.record is not None
    return list(read_entries(stim.record.path))


@synchronous
async def test_raise_ramps_the_selected_channel_and_telemetry_follows(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("2", "up", "up")
        await until(pilot, lambda: applied_ma(stim, 2) == pytest.approx(0.8))
        assert stim.interlock.applied(2)[1] is True
        assert applied_ma(stim, 1) == 0.0 and stim.interlock.applied(1)[1] is False
        await until(pilot, lambda: stim.readings[2].amplitude_ma == pytest.approx(0.8) and stim.readings[2].enabled)
        await pilot.press("down")
        await until(pilot, lambda: applied_ma(stim, 2) == pytest.approx(0.4))
        # the record shows what is signed: within about a second
        await until(pilot, lambda: len([r for r in kinds(stim) if r["kind"] == "intensity"]) >= 3)
    notes = [r["data"] for r in kinds(stim) if r["kind"] == "intensity"]
    assert [(n["channel"], n["action"], n["target_ma"]) for n in notes] == [
        (2, "raise", 0.4), (2, "raise", 0.8), (2, "lower", 0.4)]


@synchronous
async def test_raise_stops_at_the_prescription_cap(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    cap = stim.interlock.limits(1).max_amplitude_ma
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press(*["plus"] * 12)
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(cap))
        assert app.controls[1].target_ma == pytest.approx(cap)


@synchronous
async def test_space_is_an_estop(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("up")
        await until(pilot, lambda: applied_ma(stim, 1) > 0)
        await pilot.press("space")
        await pilot.pause(0.1)
        assert stim.tripped == "operator STOP (console)"
        status = stim.status()
        assert status.enabled == frozenset() and "ESTOP" in status.latched_faults
        await pilot.press("up")  # nothing more is sent after a STOP
        await pilot.pause(0.2)
        assert applied_ma(stim, 1) == 0.0
        assert "STOPPED" in str(app.query_one("#timer").render())


@synchronous
async def test_x_clears_a_stop_in_the_operators_name_and_the_session_goes_on(stim: fh.Stimulator) -> None:
    app = app_for(stim, operator="J. Doe")
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("space")
        await until(pilot, lambda: stim.tripped is not None)
        await pilot.press("x")
        try:
            await until(pilot, lambda: stim.tripped is None)
        except AssertionError:
            log = app.query_one("#messages")
            raise AssertionError("\n".join(str(line.text) for line in log.lines)) from None
        assert not stim.status().latched_faults
        await until(pilot, lambda: any(r["kind"] == "cleared" and r["data"]["operator"] == "J. Doe"
                                       for r in kinds(stim)))
        await pilot.press("up")  # from zero again
        await until(pilot, lambda: applied_ma(stim, 1) > 0)


@synchronous
async def test_x_without_a_name_clears_nothing(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("space")
        await until(pilot, lambda: stim.tripped is not None)
        await pilot.press("x")
        await pilot.pause(0.2)
        assert stim.tripped is not None and "ESTOP" in stim.status().latched_faults


@synchronous
async def test_ctrl_c_stops_and_leaves_as_interrupted(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("up")
        await until(pilot, lambda: applied_ma(stim, 1) > 0)
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
    assert app.interrupted and stim.tripped and stim.status().enabled == frozenset()


@synchronous
async def test_escape_is_an_estop_too(stim: fh.Stimulator) -> None:
    async with app_for(stim).run_test(size=(140, 44)) as pilot:
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert stim.tripped and stim.status().enabled == frozenset()


@synchronous
async def test_patient_feedback_lowers_at_once_and_offers_a_raise(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("up", "up")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(0.8))
        await pilot.press("f")  # too strong: down by the feedback step, no waiting
        assert applied_ma(stim, 1) == pytest.approx(0.5)
        await pilot.press("c")  # can't feel it: an offer, nothing sent until accepted
        assert app.offer == (1, pytest.approx(0.7)) and applied_ma(stim, 1) == pytest.approx(0.5)
        await pilot.press("y")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(0.7))
        await pilot.press("c", "n")
        await pilot.pause(0.3)
        assert applied_ma(stim, 1) == pytest.approx(0.7) and app.offer is None
        await until(pilot, lambda: len([r for r in kinds(stim) if r["kind"] == "patient_feedback"]) >= 5)
    feedback = [r["data"]["outcome"] for r in kinds(stim) if r["kind"] == "patient_feedback"]
    assert feedback == ["lowered to 0.5 mA", "offered 0.7 mA", "accepted raise to 0.7 mA", "offered 0.9 mA",
                        "declined raise to 0.9 mA"]


@synchronous
async def test_finish_ramps_down_and_turns_outputs_off(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("up")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(0.4))
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert stim.tripped is None
    assert applied_ma(stim, 1) == 0.0 and stim.status().enabled == frozenset()


@synchronous
async def test_screen_shows_prescription_timer_and_stop(stim: fh.Stimulator) -> None:
    app = app_for(stim)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.pause(0.3)
        info = str(app.query_one("#info").render())
        assert "sensitivity: hyposensitive" in info and "ch1 ≤ 3 mA" in info
        assert "session time left" in str(app.query_one("#timer").render())
        assert "STOP" in str(app.query_one("#stop").render())
        svg = app.export_screenshot().replace("&#160;", " ")
        assert "channel 1" in svg and "channel 2" in svg


@synchronous
async def test_the_console_doses_inside_the_patients_envelope(tmp_path: Path) -> None:
    """Issue 19: the console raised channel 2 to 3.2 mA over a 3 mA tolerance measured minutes
    before, and never showed the thresholds. It is a mode like any other: the interlock holds the
    envelope, and the console shows today's thresholds and stops at their ceiling."""
    from datetime import datetime, timezone

    from safety import ChannelThresholds, Envelope, TitrationWaveform

    site = forearm_sites(1)[1]
    measured = ChannelThresholds(1, site, TitrationWaveform(Shape.BIPHASIC, 2, 200), datetime.now(timezone.utc),
                                 0.8, 1.5, 2.0, "P1")
    envelope = Envelope.research("protocol 7", "P1", thresholds=[measured])
    with fh.open("sim://?watchdog_ms=1000", prescription=prescription(max_ma=3.0, ramp=2.0),
                 placements=forearm_sites(1), envelope=envelope) as stim:
        app = ConsoleApp(stim, [ChannelSetting(1, Shape.BIPHASIC, 2, 200, 0)], ConsoleSettings(step_ma=0.4))
        assert app.controls[1].cap_ma == pytest.approx(1.8) and app.controls[1].cap_why == "this patient's ceiling from today's thresholds"
        assert "today's thresholds: ch1 2 Hz, 200 µs: sensory 0.8, motor 1.5, tolerance 2 mA" in app._info()
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.press(*["plus"] * 8)
            await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(1.8))
            await pilot.pause(0.3)
            assert applied_ma(stim, 1) == pytest.approx(1.8)
            await pilot.press("q")


@synchronous
async def test_a_program_runs_in_the_console_lowered_paused_resumed_and_ended(stim: fh.Stimulator) -> None:
    """Issue 21: a program (here a direct run's steady waveform) runs in the console: Enter starts
    it (and never presses STOP), - lowers it at once, p ramps it down and back up, q ramps it down
    and ends it; the end rings the bell."""
    from firmware_host.waveforms.engine import Steady

    program = Steady({1: ChannelSetting(1, Shape.BIPHASIC, 20, 200, 1.2)}, 30.0)
    app = ConsoleApp(stim, [], ConsoleSettings(step_ma=0.4), program=program, plan="plan: 1.2 mA on channel 1")
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.pause(0.2)
        assert stim.setting(1) is None          # shown, nothing sent before Enter
        await pilot.press("enter")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(1.2))
        assert stim.tripped is None
        await pilot.press("minus")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(0.8))
        await pilot.press("p")
        await until(pilot, lambda: applied_ma(stim, 1) == 0.0)
        assert stim.interlock.applied(1)[1] is True and "PAUSED" in str(app.query_one("#timer").render())
        await pilot.press("p")
        await until(pilot, lambda: applied_ma(stim, 1) == pytest.approx(0.8))
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert stim.tripped is None and stim.status().enabled == frozenset()
    assert app.program.report.ended_by_operator and app.alarms == ["end"]
