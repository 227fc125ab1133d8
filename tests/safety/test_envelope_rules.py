"""The envelope's rules one by one, in process (the pty and command-line proofs are in
tests/test_envelope.py): each refusal, its id, and what it says to do."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from safety import (ChannelPlacement, ChannelThresholds, Envelope, Interlock, NeedleSite, Refusal, Region, Screening,
                    Shape, Side, TitrationWaveform, operator_name)
from safety.screening import Question

from .conftest import FakeClock, ListRecord, make_setup, send, setting, start_channel

LEG = ChannelPlacement(NeedleSite(Region.LOWER_LEG, Side.LEFT), NeedleSite(Region.FOOT, Side.LEFT))
W10 = TitrationWaveform(Shape.BIPHASIC, 10.0, 200.0)   # conftest's `setting()` waveform


def measured(who: str = "P1", tolerance: float | None = 4.0, motor: float | None = 2.0,
             when: datetime | None = None, waveform: TitrationWaveform = W10) -> ChannelThresholds:
    return ChannelThresholds(1, LEG, waveform, when or datetime.now(timezone.utc) - timedelta(minutes=1),
                             1.0, motor, tolerance, who)


def interlock_for(envelope: Envelope, clock: FakeClock | None = None) -> Interlock:
    return Interlock(make_setup(envelope=envelope), clock=clock or FakeClock(), record=ListRecord())


def test_a_dose_above_the_ceiling_is_refused_naming_it() -> None:
    clock = FakeClock()
    il = interlock_for(Envelope.research("R", "P1", thresholds=[measured()]), clock)
    start_channel(il, clock)
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 3.7))
    assert exc.value.rule == "envelope.ceiling" and exc.value.limit == 3.6
    assert "0.9 x tolerance 4 mA" in str(exc.value)


def test_a_matching_threshold_without_a_top_mark_leaves_nothing_to_hold_a_dose_below() -> None:
    il = interlock_for(Envelope.research("R", "P1", thresholds=[measured(tolerance=None)]))
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 0.0))
    assert exc.value.rule == "envelope.no_ceiling" and "to the top mark (t)" in str(exc.value)
    sensory = Envelope.research("R", "P1", thresholds=[measured(tolerance=None)]).dosing({1})
    assert interlock_for(sensory).highest_allowed(setting(1, 0.0))[0] == pytest.approx(1.8)  # 0.9 x motor


def test_a_titration_sends_only_the_waveforms_it_titrates() -> None:
    il = interlock_for(Envelope.undeclared().titration(1, [W10]))
    send(il, il.approve_set_channel(setting(1, 0.0)))
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 0.0, frequency_hz=20.0))
    assert exc.value.rule == "envelope.titration_waveform" and "10 Hz, 200 µs" in str(exc.value)


@pytest.mark.parametrize("whose", ["P2", None])
def test_thresholds_belong_to_the_person_they_name(whose: str | None) -> None:
    with pytest.raises(Refusal) as exc:
        Envelope.for_visit("P1", "7", Screening({q: False for q in Question}), "typical", [measured(who=whose)])
    assert exc.value.rule == "envelope.thresholds_of_another" and "use thresholds measured on P1" in str(exc.value)


@pytest.mark.parametrize("name", ["", "   ", "P\x001"])
def test_a_declaration_names_who_or_what(name: str) -> None:
    with pytest.raises(Refusal) as exc:
        Envelope.research("protocol 7", name)
    assert exc.value.rule == "envelope.unnamed"
    with pytest.raises(Refusal):
        Envelope.test_load(name)


def test_a_threshold_dated_ahead_sets_no_ceiling() -> None:
    ahead = measured(when=datetime.now(timezone.utc) + timedelta(minutes=5))
    il = interlock_for(Envelope.research("R", "P1", thresholds=[ahead]))
    with pytest.raises(Refusal) as exc:
        il.approve_set_channel(setting(1, 0.0))
    assert exc.value.rule == "envelope.no_threshold" and "later than this computer's time" in str(exc.value)


@pytest.mark.parametrize("name", ["J\u200bD", "JD\udcff", "J\nD"])
def test_a_name_that_cannot_be_shown_clears_nothing(name: str) -> None:
    with pytest.raises(Refusal) as exc:
        operator_name(name)
    assert exc.value.rule == "clear.operator" and "cannot be shown" in str(exc.value)
    assert operator_name("Ｊ. Ｄｏｅ") == "J. Doe"
