import math

import pytest

from safety import AppliedDose, Needle, output_summary

from .conftest import setting


def test_summary_per_channel():
    s = setting(1, 2.0, pulse_width_us=200.0, frequency_hz=10.0)
    history = [AppliedDose(1, setting(1, 0.0), True, 5.0),
               AppliedDose(1, s, True, 10.0),
               AppliedDose(1, s, False, 5.0)]          # disabled: nothing delivered
    summaries, table = output_summary(history, {1: Needle(), 2: Needle(0.3, 10.0)}, {1: 39.0})
    one, two = summaries
    assert one.max_phase_charge_uc == pytest.approx(0.4)
    assert one.delivered_charge_host_uc == pytest.approx(0.4 * 10 * 10)
    assert one.delivered_charge_device_uc == 39.0
    assert one.max_current_density_ma_cm2 == pytest.approx(2.0 / Needle().area_cm2)
    assert one.max_net_charge_per_pulse_uc == 0
    assert one.max_shannon_k == pytest.approx(math.log10(0.4) + math.log10(0.4 / Needle().area_cm2))
    assert one.stimulation_s == 10.0 and one.max_power_density_w_cm2 > 0
    assert two.max_shannon_k is None and two.delivered_charge_device_uc is None
    assert "charge host µC" in table and table.count("\n") == 2
