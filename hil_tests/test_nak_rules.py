"""Every NAK rule of the ICD, provoked as a faulty host would: the product's interlock would
refuse these commands before the device saw them, so the frames go out through the
unguarded helper (or the raw client, for sequence numbers a correct link never uses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_host import errors, icd
from firmware_host.link import Link
from hil_tests import harness
from hil_tests.conftest import DeviceUnderTest
from hil_tests.harness import RawClient, ShortSetChannel, UnknownCommand, ask

pytestmark = pytest.mark.timeout(20)


def wave(**fields: int) -> icd.SetChannel:
    """A channel-0 waveform at 10 Hz (200 us unless told)."""
    return harness.wave(**{"frequency_mhz": 10_000, **fields})


def refused(link: Link, message: icd.Message) -> int:
    """The NAK code the device answered `message` with."""
    with pytest.raises(errors.DeviceRefused) as caught:
        ask(link, message)
    return caught.value.nak_code


def test_unknown_type_and_bad_length(link: Link) -> None:
    assert refused(link, UnknownCommand()) == icd.NakCode.UNKNOWN_TYPE
    assert refused(link, ShortSetChannel()) == icd.NakCode.BAD_LENGTH


def test_out_of_range(link: Link, dut: DeviceUnderTest) -> None:
    ident = dut.identity
    charge_phase = ident.max_phase_us
    charge_amplitude = ident.max_phase_charge_nc * 1000 // charge_phase + 1
    cases = {
        "phase above max_phase_us": wave(phase_us=ident.max_phase_us + 1),
        "amplitude above max_amplitude_ua": wave(amplitude_ua=ident.max_amplitude_ua + 1),
        "frequency below min_frequency_mhz": wave(frequency_mhz=ident.min_frequency_mhz - 1),
        "frequency above max_frequency_mhz": wave(frequency_mhz=ident.max_frequency_mhz + 1),
        "charge per phase above max_phase_charge_nc": wave(amplitude_ua=charge_amplitude, phase_us=charge_phase),
        "burst longer than its period": wave(frequency_mhz=10_000, burst_pulses=10, burst_rate_mhz=2_000),
        "channel that does not exist": icd.SetChannel(ident.channels, 0, 1, 0, 10_000, 0, 200, 0, 0),
    }
    codes = {name: refused(link, message) for name, message in cases.items()}
    assert codes == {name: icd.NakCode.OUT_OF_RANGE for name in cases}


def test_zero_start_step_slew_and_bad_state(link: Link, dut: DeviceUnderTest) -> None:
    ident = dut.identity
    assert isinstance(ask(link, wave(amplitude_ua=min(500, ident.max_step_ua))), icd.Ack)
    assert refused(link, icd.Output(0b1)) == icd.NakCode.NOT_ZERO_START
    ask(link, wave(amplitude_ua=0))
    ask(link, icd.Output(0b1))
    assert refused(link, wave(amplitude_ua=ident.max_step_ua + 1)) == icd.NakCode.STEP_TOO_LARGE
    assert refused(link, wave(amplitude_ua=ident.max_step_ua)) == icd.NakCode.SLEW_TOO_FAST
    assert refused(link, icd.ClearFault()) == icd.NakCode.BAD_STATE  # an output is enabled
    ask(link, icd.Output(0))


def test_fault_latched_until_cleared(link: Link) -> None:
    assert link.estop()
    assert refused(link, icd.Output(0b1)) == icd.NakCode.FAULT_LATCHED
    ask(link, icd.ClearFault())
    status = ask(link, icd.GetStatus())
    assert isinstance(status, icd.Status) and status.latched_faults == 0


def test_unsupported_sim_control_op(link: Link) -> None:
    assert refused(link, icd.SimControl(99, 0, 0)) == icd.NakCode.UNSUPPORTED


@pytest.fixture
def raw(dut: DeviceUnderTest) -> Iterator[RawClient]:
    client = RawClient(dut.url)
    try:
        yield client
    finally:
        client.close()


def test_out_of_order_and_replayed_replies(raw: RawClient) -> None:
    identity = raw.command(200, icd.Hello(icd.PROTOCOL_VERSION))
    assert isinstance(identity, icd.Identity)
    first = raw.command(201, icd.GetStatus())
    assert isinstance(first, icd.Status)
    nak = raw.command(210, icd.GetStatus())
    assert nak == icd.Nak(icd.NakCode.OUT_OF_ORDER, 202)
    replayed = raw.command(201, icd.GetStatus())  # a retransmission: the stored reply, not run again
    assert replayed == first
    assert raw.command(202, icd.ClearFault()) == icd.Ack()


@pytest.mark.needs_sim_control
def test_no_session_after_reboot(raw: RawClient) -> None:
    raw.command(17, icd.Hello(icd.PROTOCOL_VERSION))
    assert raw.command(18, icd.SimControl(icd.SimOp.REBOOT, 0, 0)) == icd.Ack()
    assert raw.command(19, icd.GetStatus()) == icd.Nak(icd.NakCode.NO_SESSION, 0)
    assert isinstance(raw.command(20, icd.Hello(icd.PROTOCOL_VERSION)), icd.Identity)
