"""The pieces together: interlock + real treatment record + summary; package independence."""

import ast
from pathlib import Path

import pytest

import safety
from safety import Interlock, Refusal, TreatmentRecord, output_summary, read_entries, verify_record

from .conftest import FakeClock, make_setup, send, setting, start_channel


def test_session_is_recorded_and_summarised(tmp_path):
    clock = FakeClock()
    path = tmp_path / "session.jsonl"
    with TreatmentRecord(path, clock=clock) as record:
        il = Interlock(make_setup(), clock=clock, record=record)
        start_channel(il, clock)
        for amp in (1.0, 2.0):
            clock.advance(1.0)
            send(il, il.approve_set_channel(setting(1, amp)))
        with pytest.raises(Refusal):
            il.approve_set_channel(setting(1, 9.0))
        clock.advance(60.0)
        il.stop("end of test")
        summaries, table = output_summary(il.applied_doses(), {1: il.limits(1).needle}, {1: 47.0})
    verdict = verify_record(path)
    assert verdict.ok and verdict.closed
    kinds = {e["kind"] for e in read_entries(path)}
    assert {"refusal", "ack", "stop"} <= kinds
    one = summaries[0]
    assert one.delivered_charge_host_uc == pytest.approx(0.2 * 10 * 1.0 + 0.4 * 10 * 60.0)
    assert one.max_phase_charge_uc == pytest.approx(0.4)


def test_safety_imports_nothing_from_firmware_host():
    for path in Path(safety.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("firmware_host"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("firmware_host") for a in node.names), path
