"""Thresholds bound to patient, channel, sites, waveform and time; the strength-duration
conversion; files written whole."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety.thresholds import (ChannelThresholds, ThresholdError, TitrationWaveform, convert_width,
                                                for_dose, load, save)
from safety import ChannelPlacement, NeedleSite, Region, Shape, Side

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
ARM = ChannelPlacement(NeedleSite(Region.FOREARM, Side.LEFT), NeedleSite(Region.HAND, Side.LEFT, "LI4"))
LEG = ChannelPlacement(NeedleSite(Region.LOWER_LEG, Side.LEFT), NeedleSite(Region.LOWER_LEG, Side.LEFT))
W200 = TitrationWaveform(Shape.BIPHASIC, 2.0, 200.0)


def measured(channel: int = 1, placement: ChannelPlacement = ARM, waveform: TitrationWaveform = W200,
             at: datetime = NOW, patient: str | None = "P001", marks: tuple = (1.0, 2.0, 4.0)) -> ChannelThresholds:
    return ChannelThresholds(channel, placement, waveform, at, *marks, patient=patient)


def test_matching_thresholds_are_used_as_measured() -> None:
    found = for_dose([measured()], 1, ARM, W200, patient="P001", now=NOW + timedelta(minutes=5))
    assert found.values == {"sensory": 1.0, "motor": 2.0, "tolerance": 4.0} and found.notes == ()


def test_sites_in_either_order_are_the_same_channel_placement() -> None:
    swapped = ChannelPlacement(ARM.b, ARM.a)
    assert for_dose([measured()], 1, swapped, W200, now=NOW).values["motor"] == 2.0


@pytest.mark.parametrize("why,kwargs", [
    ("another channel", dict(channel=2)),
    ("other sites", dict(placement=LEG)),
    ("another patient", dict(patient="P002")),
    ("another frequency", dict(waveform=TitrationWaveform(Shape.BIPHASIC, 100.0, 200.0))),
    ("bursts", dict(waveform=TitrationWaveform(Shape.BIPHASIC, 2.0, 200.0, 7, 2.0))),
    ("yesterday", dict(at=NOW - timedelta(days=1))),
])
def test_mismatched_or_stale_thresholds_are_refused_with_the_way_out(why: str, kwargs: dict) -> None:
    with pytest.raises(ThresholdError, match="titrate") as err:
        for_dose([measured(**kwargs)], 1, ARM, W200, patient="P001", now=NOW, retitrate="titrate on it first")
    assert "Traceback" not in str(err.value)


def test_another_point_at_the_same_region_is_other_sites() -> None:
    elsewhere = ChannelPlacement(ARM.a, NeedleSite(Region.HAND, Side.LEFT, "LI3"))
    with pytest.raises(ThresholdError, match="measured at"):
        for_dose([measured()], 1, elsewhere, W200, now=NOW)


def test_a_pulse_width_change_is_converted_by_the_stated_model() -> None:
    """The issue's figures: 0.75 x tolerance at 200 µs is about 1.25 x tolerance at 600 µs."""
    w600 = TitrationWaveform(Shape.BIPHASIC, 2.0, 600.0)
    found = for_dose([measured()], 1, ARM, w600, now=NOW)
    assert 0.75 * 4.0 == pytest.approx(1.25 * found.values["tolerance"], rel=1e-3)
    assert "strength-duration model" in found.notes[0] and "200 µs" in found.notes[0]


def test_conversion_is_limited_to_nearby_widths() -> None:
    with pytest.raises(ThresholdError):
        for_dose([measured()], 1, ARM, TitrationWaveform(Shape.BIPHASIC, 2.0, 1000.0), now=NOW)


@given(st.floats(0.1, 20.0), st.floats(50.0, 1000.0), st.floats(50.0, 1000.0))
def test_conversion_goes_back_and_forth_and_falls_with_width(value: float, a: float, b: float) -> None:
    there = convert_width(value, a, b)
    assert convert_width(there, b, a) == pytest.approx(value)
    assert (there <= value) == (b >= a) or there == pytest.approx(value)


def test_the_newest_usable_thresholds_win() -> None:
    older = measured(at=NOW - timedelta(hours=1), marks=(1.0, 2.0, 4.0))
    newer = measured(at=NOW, marks=(1.5, 2.5, 5.0))
    assert for_dose([older, newer], 1, ARM, W200, now=NOW).values["sensory"] == 1.5


@pytest.mark.parametrize("marks", [(0.0, 2.0, 4.0), (3.0, 2.0, 4.0), (1.0, 5.0, 4.0), (-1.0, None, None),
                                   (float("nan"), None, None)])
def test_thresholds_must_be_above_zero_and_in_order(marks: tuple) -> None:
    with pytest.raises(ThresholdError, match="titrate again"):
        measured(marks=marks)


def test_files_round_trip_and_unbound_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "th.json"
    save(path, [measured()])
    [back] = load(path)
    assert back == measured()
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"sensory": 1.0, "motor": 2.0, "tolerance": 4.0}))
    with pytest.raises(ThresholdError, match="not bound"):
        load(flat)


def test_a_failed_write_leaves_the_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "th.json"
    save(path, [measured()])
    good = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save(path, [measured(marks=(9.0, 9.5, 9.9))])
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["th.json"]     # no temporary file left behind
