"""Approved cannot be forged, copied, pickled, tampered with, reused or kept too long."""

import copy
import pickle

import pytest

from safety import APPROVAL_TTL_S, Approved, InterlockStateError, Refusal, SetChannel

from .conftest import setting, start_channel


def test_direct_construction_fails(interlock):
    with pytest.raises(InterlockStateError):
        Approved(object(), SetChannel(setting(1, 5.0)), 99, 0.0, 0, interlock)


def test_copy_deepcopy_and_pickle_fail(interlock):
    a = interlock.approve_set_channel(setting(1, 0.0))
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            attempt(a)


def test_setattr_is_blocked(interlock):
    a = interlock.approve_set_channel(setting(1, 0.0))
    with pytest.raises(AttributeError):
        a._command = SetChannel(setting(1, 5.0))


@pytest.mark.parametrize("field,value", [("_command", SetChannel(setting(1, 8.0))), ("_issued_s", 1e9),
                                         ("_serial", 12345)])
def test_object_setattr_tampering_is_detected(interlock, field, value):
    a = interlock.approve_set_channel(setting(1, 0.0))
    object.__setattr__(a, field, value)
    with pytest.raises(InterlockStateError):
        a.verify()
    with pytest.raises(InterlockStateError):
        a.consume()


def test_tampering_inside_the_setting_is_detected(interlock):
    a = interlock.approve_set_channel(setting(1, 0.0))
    object.__setattr__(a.command.setting, "amplitude_ma", 8.0)
    with pytest.raises(InterlockStateError):
        a.consume()


def test_single_use(interlock):
    a = interlock.approve_set_channel(setting(1, 0.0))
    a.consume()
    with pytest.raises(InterlockStateError):
        a.consume()


def test_expires_unused(interlock, clock, record):
    a = interlock.approve_set_channel(setting(1, 0.0))
    clock.advance(APPROVAL_TTL_S + 0.01)
    interlock.approve_set_channel(setting(2, 0.0))        # purges it from the worst-case view
    with pytest.raises(Refusal) as exc:
        a.consume()
    assert exc.value.rule == "approval.expired"
    assert record.entries[-1][1]["rule"] == "approval.expired"


def test_expired_increase_no_longer_blocks(interlock, clock):
    start_channel(interlock, clock)
    clock.advance(1.0)
    interlock.approve_set_channel(setting(1, 0.5))
    clock.advance(APPROVAL_TTL_S + 0.1)
    interlock.approve_set_channel(setting(1, 0.5))        # the first one can never be sent now


def test_approval_from_another_interlock_is_not_accepted(interlock, clock):
    from safety import Interlock

    from .conftest import make_setup
    other = Interlock(make_setup(), clock=clock)
    a = other.approve_set_channel(setting(1, 0.0))
    a.consume()
    with pytest.raises(InterlockStateError):
        interlock.note_acknowledged(a)
