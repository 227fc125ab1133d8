"""Tests the safety trace found missing: a review finding with no test that proves its fix, or
a rule whose removal no test of its hazard noticed (`python -m safety.trace --mutate`)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import SimProcess, child_env, output_off, spawn_sim
from safety import ActionKind, ChannelReading, Interlock, NeedleSite, Refusal, Region, Side, Supervisor
from support import DECLARED, REPO, peak_ua, wait_for

from .conftest import FakeClock, ListRecord, make_setup, send, setting, start_channel


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


@pytest.mark.timeout(40)
def test_ctrl_c_stops_a_session_started_in_the_background(sim: SimProcess, tmp_path: Path) -> None:
    """`estim run ... &` inherits SIGINT as ignored (stop 17): Ctrl-C must still e-stop it."""
    record = tmp_path / "background.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_host", "run", "--device", sim.url, "--channel", "1", "--frequency", "2",
         "--pulse-width", "200", "--amplitude", "1", "--ramp", "2", "--seconds", "20", "--sites",
         "left:forearm,left:forearm", "--inserted", "10", *DECLARED, "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: peak_ua(record) >= 1000 or proc.poll() is not None, timeout=20)
        sim.trace.mark()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    sim.wait_event(output_off("estop"), timeout=2.0)


def test_a_simulator_control_that_is_not_whole_numbers_is_refused() -> None:
    """SIM_CONTROL carries three integers: anything else is refused by name and nothing is approved."""
    record = ListRecord()
    interlock = Interlock(make_setup(), clock=FakeClock(), record=record)
    with pytest.raises(Refusal) as exc:
        interlock.approve_sim_control(1, 1, 500.5)
    assert exc.value.rule == "setting.invalid_number"
    assert "approved" not in record.kinds()


def test_a_channel_zeroed_by_supervision_rises_only_from_zero() -> None:
    """Needles touching zero the channel and hold it: no increase until it is back at 0 mA and
    switched off, then it starts again from zero like any channel."""
    clock = FakeClock()
    interlock = Interlock(make_setup(), clock=clock)
    start_channel(interlock, clock)
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    touching = ChannelReading(1, 5.0, True, False, 1.0, 10.0, 200.0, 50.0, 0.0)
    assert ActionKind.ZERO_CHANNEL in [a.kind for a in supervisor.on_reading(touching)]
    clock.advance(2.0)                                   # ramp credit is not what holds it back
    with pytest.raises(Refusal) as exc:
        interlock.approve_set_channel(setting(1, 1.5))
    assert exc.value.rule == "supervision.hold"
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    clock.advance(1.0)
    with pytest.raises(Refusal) as exc:                  # at 0 mA but still switched on: still held
        interlock.approve_set_channel(setting(1, 0.5))
    assert exc.value.rule == "supervision.hold"
    send(interlock, interlock.approve_outputs(set()))
    send(interlock, interlock.approve_outputs({1}))
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 0.5)))
    assert interlock.applied(1) == (setting(1, 0.5), True)


@pytest.mark.parametrize("region,side", [("forearm", Side.LEFT), (Region.FOREARM, "left"), (None, Side.LEFT)])
def test_a_site_that_is_not_a_known_region_and_side_is_refused(region: object, side: object) -> None:
    """A site the placement rules cannot judge (a plain string, nothing) never reaches them."""
    with pytest.raises(Refusal) as exc:
        NeedleSite(region, side)  # type: ignore[arg-type]
    assert exc.value.rule == "placement.invalid_site" and "not a known site" in str(exc.value)


@pytest.mark.parametrize("channel", ["1", 1.0, True, 5])
def test_enabling_an_undeclared_channel_is_refused_naming_what_was_given(channel: object) -> None:
    """Only channels with declared needles (judged by the placement rules) may be switched on;
    the refusal names the channel as it was given."""
    interlock = Interlock(make_setup(), clock=FakeClock())
    with pytest.raises(Refusal) as exc:
        interlock.approve_outputs({channel})
    assert exc.value.rule == "setup.channel" and exc.value.value == channel and type(exc.value.value) is type(channel)
    assert repr(channel) in str(exc.value)
