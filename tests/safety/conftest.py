"""Shared fixtures: the simulated device's limits, a typical prescription, a fake clock."""

from __future__ import annotations

import pytest

from safety import (ChannelPlacement, ChannelSetting, DeviceLimits, Envelope, Interlock, NeedleSite, Prescription,
                    Region, SessionSetup, Shape, Side)

SIM_DEVICE = DeviceLimits(channels=4, max_amplitude_ma=30.0, max_phase_us=1000, min_frequency_hz=0.5,
                          max_frequency_hz=200.0, max_phase_charge_uc=20.0, max_step_ma=1.0,
                          max_slew_ma_per_s=4.0, compliance_v=60.0)
SLOW_DEVICE = DeviceLimits(channels=4, max_amplitude_ma=30.0, max_phase_us=1000, min_frequency_hz=0.5,
                           max_frequency_hz=200.0, max_phase_charge_uc=20.0, max_step_ma=1.0,
                           max_slew_ma_per_s=2.0, compliance_v=60.0)  # 0.8 x slew below every prescribed ramp
PRESCRIPTION = Prescription(max_amplitude_ma=10.0, frequency_hz=(1.0, 100.0), pulse_width_us=(50.0, 500.0))
LEFT_LEG = ChannelPlacement(NeedleSite(Region.LOWER_LEG, Side.LEFT), NeedleSite(Region.FOOT, Side.LEFT))
RIGHT_LEG = ChannelPlacement(NeedleSite(Region.THIGH, Side.RIGHT), NeedleSite(Region.LOWER_LEG, Side.RIGHT))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class ListRecord:
    """Duck-typed treatment record kept in memory."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict]] = []

    def append(self, kind: str, data: dict) -> str:
        self.entries.append((kind, data))
        return ""

    def kinds(self) -> list[str]:
        return [k for k, _ in self.entries]


def setting(channel: int = 1, amplitude_ma: float = 0.0, **kw) -> ChannelSetting:
    base = dict(shape=Shape.BIPHASIC, frequency_hz=10.0, pulse_width_us=200.0)
    base.update(kw)
    return ChannelSetting(channel=channel, amplitude_ma=amplitude_ma, **base)


def make_setup(prescription: Prescription = PRESCRIPTION, **kw) -> SessionSetup:
    if "patient" in kw:
        kw["envelope"] = Envelope.undeclared(kw.pop("patient"))
    return SessionSetup(device=kw.pop("device", SIM_DEVICE), prescription=prescription,
                        placements=kw.pop("placements", {1: LEFT_LEG, 2: RIGHT_LEG}), **kw)


def send(interlock: Interlock, approved):
    """What the link does on an ACK."""
    command = approved.consume()
    interlock.note_acknowledged(approved)
    return command


def start_channel(interlock: Interlock, clock: FakeClock, channel: int = 1, **kw) -> None:
    """Configure a channel at 0 mA and enable it (plus any already enabled)."""
    send(interlock, interlock.approve_set_channel(setting(channel, 0.0, **kw)))
    enabled = {ch for ch in interlock.setup.channels if interlock.applied(ch)[1]} | {channel}
    send(interlock, interlock.approve_outputs(enabled))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def record() -> ListRecord:
    return ListRecord()


@pytest.fixture
def interlock(clock: FakeClock, record: ListRecord) -> Interlock:
    return Interlock(make_setup(), clock=clock, record=record)
