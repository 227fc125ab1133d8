"""The safety case as data (`python -m safety.trace`): the hazard log agrees with the code and
the tests, the rule ids come from the code (so new rules show up by themselves), and the
mutation table really switches a rule off."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import safety
from safety import (ChannelPlacement, LimitArrays, NeedleSite, Patient, Prescription, Question, Region, Screening,
                    SettingArrays, Shape, Side, Supervisor, check_placement, check_setting, effective_limits,
                    evaluate_arrays, screen)
from safety.trace import LOG_PATH, MATRIX_PATH, REPO
from safety.trace.check import trace
from safety.trace.ids import UnresolvedRuleId, derive
from safety.trace.log import load, parse
from safety.trace.matrix import markdown
from safety.trace import mutations
from safety.trace.mutate import choose_part, plan
from safety.trace.mutations import applied, disable_control, disable_for

from .conftest import PRESCRIPTION, SIM_DEVICE, SLOW_DEVICE, FakeClock, make_setup, send, setting, start_channel

REGENERATE = "run `python -m safety.trace` and commit docs/hazards.md"


@pytest.mark.timeout(120)   # pytest collects the log's test files in a process of its own
def test_the_log_covers_every_rule_id_and_names_only_what_exists() -> None:
    result = trace(load(LOG_PATH))
    assert result.ok, "\n".join(result.problems)
    assert len(result.ids.ids) >= 60 and {"session.device_limits", "screening.clot_at_site"} <= set(result.ids.ids)



def _site(rule: str, phrase: str, path: str = "safety/interlock.py") -> str:
    """`rule@path:line` of the refusal whose line carries `phrase` (lines move as the code does)."""
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    return f"{rule}@{path}:{next(i for i, line in enumerate(lines, 1) if rule in line and phrase in line)}"


ENABLING_AT_ZERO = _site("dynamic.zero_start", "enabling channel")

def test_the_trace_matrix_is_current() -> None:
    text = markdown(load(LOG_PATH), derive())
    assert MATRIX_PATH.read_text(encoding="utf-8") == text, f"docs/hazards.md is stale: {REGENERATE}"


# --- rule ids come from the code -----------------------------------------------------------

def copy_of_safety(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "safety").mkdir(parents=True)
    for path in (REPO / "safety").glob("*.py"):
        shutil.copy(path, root / "safety" / path.name)
    return root


def test_ids_built_in_the_code_are_worked_out_from_it() -> None:
    ids = derive()
    assert {"standard.frequency_max", "device.frequency_max", "prescription.frequency_max"} <= set(ids.ids)
    assert "standard.amplitude_max" not in ids.ids and ids.table["prescription.amplitude_max"] == "amplitude_max"
    assert {s.path for s in ids.sites["device.ramp_rate"]} == {"safety/interlock.py"}      # rule = a if c else f"..."
    assert [s.line for s in ids.sites["screening.clot_at_site"]] == [s.line for s in ids.sites["screening.skin_at_site"]]
    assert {s.path for s in ids.sites["session.device_limits"]} == {"firmware_host/link.py"}


def test_a_new_rule_shows_up_uncovered_until_the_log_names_it(tmp_path: Path) -> None:
    """What happens when a new module of rules lands: the trace finds them in the code and says
    what the log lacks, and how to switch them off for --mutate."""
    root = copy_of_safety(tmp_path)
    (root / "safety" / "doses.py").write_text(
        "from .errors import Refusal\n\n\n"
        "def check(dose, ceilings):\n"
        "    for kind, factor in ((\"tolerance\", 0.9), (\"motor\", 0.9)):\n"
        "        if dose > factor * ceilings[kind]:\n"
        "            raise Refusal(f\"doses.{kind}_ceiling\", \"above the ceiling\")\n"
        "    if dose < 0:\n"
        "        raise Refusal(\"doses.negative\", \"a dose below zero\")\n", encoding="utf-8")
    new = {"doses.tolerance_ceiling", "doses.motor_ceiling", "doses.negative"}
    ids = derive(root)
    assert new <= set(ids.ids) and ids.sites["doses.negative"][0].where() == "safety/doses.py:9"
    problems = trace(load(LOG_PATH), REPO, ids=ids, collect=False).problems
    assert {p.split()[1] for p in problems if "is a control of no hazard" in p} == new
    assert any("no way to switch doses.motor_ceiling off alone" in p and "MUTATIONS" in p for p in problems)
    data = tomllib.loads(LOG_PATH.read_text(encoding="utf-8"))
    next(h for h in data["hazard"] if h["id"] == "H12")["rules"] += sorted(new)
    problems = [p for p in trace(parse(data), REPO, ids=ids, collect=False).problems if "doses." in p]
    assert {p for p in problems if "RULES.md" in p} == {f"rule {r} is not explained in safety/RULES.md" for r in new}
    assert all("RULES.md" in p or "MUTATIONS" in p for p in problems)   # covered now; documented not yet


def test_a_new_layer_of_limits_gives_its_ids_by_itself(tmp_path: Path) -> None:
    root = copy_of_safety(tmp_path)
    limits = root / "safety" / "limits.py"
    before = limits.read_text(encoding="utf-8")
    after = before.replace('("prescription", min(rx_amp, rx_amp * factors.amplitude))',
                           '("prescription", min(rx_amp, rx_amp * factors.amplitude)), ("envelope", 1.0)')
    assert after != before
    limits.write_text(after, encoding="utf-8")
    ids = derive(root)
    assert "envelope.amplitude_max" in ids.ids and "envelope.frequency_max" not in ids.ids


def test_an_id_the_code_only_knows_when_it_runs_is_an_error_naming_where(tmp_path: Path) -> None:
    root = copy_of_safety(tmp_path)
    (root / "safety" / "envelope.py").write_text(
        "from .errors import Refusal\n\n\n"
        "def check(kind):\n"
        "    raise Refusal(f\"envelope.{kind}\", \"x\")\n\n\n"
        "def other(k):\n"
        "    raise Refusal(rule_for(k), \"y\")\n", encoding="utf-8")
    with pytest.raises(UnresolvedRuleId) as exc:
        derive(root)
    said = str(exc.value)
    assert "safety/envelope.py:5" in said and "envelope.{kind}" in said and "parameter" in said
    assert "safety/envelope.py:9" in said and "rule_for(k)" in said and "string literal" in said


# --- the log's own checks --------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_the_check_names_what_the_log_gets_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    data = tomllib.loads(LOG_PATH.read_text(encoding="utf-8"))
    data["hazard"], data["finding"] = data["hazard"][:2], data["finding"][:2]   # one small test file to collect
    data["finding"][0]["tests"] = ["tests/safety/test_report.py::test_summary_per_channel"]
    first, second = data["hazard"]
    first["tests"] = []
    first["acceptability"] = "not acceptable"
    first["controls"][0]["ref"] = "firmware_host/icd.py::NakCode.NO_SUCH_CODE"
    second["rules"].append("needle.no_such_rule")
    second["tests"] = ["tests/safety/test_report.py::test_summary_per_channel", "tests/safety/test_report.py::test_gone"]
    second["controls"][0]["quote"] = "words nobody wrote"
    data["finding"][0]["hazard"] = "H99"
    data["finding"][1]["tests"] = []
    monkeypatch.setattr(mutations, "MUTATIONS", (("screening.*", "filtered", "safety.screening:screen_renamed"),))
    problems = "\n".join(trace(parse(data), REPO, ids=derive()).problems)
    for expected in ("H01 has no verification test", "acceptability 'not acceptable', but the matrix gives 'acceptable'",
                     "defines no NakCode.NO_SUCH_CODE", "H02 names rule needle.no_such_rule, which the code never emits",
                     "test_report.py::test_gone, which pytest does not collect", "does not say 'words nobody wrote'",
                     "maps to hazard H99", f"finding {data['finding'][1]['id']} is fixed but names no test",
                     "mutation target safety.screening:screen_renamed does not exist"):
        assert expected in problems
    assert "test_summary_per_channel" not in problems


# --- the mutation table switches one rule off, and only inside the block ------------------------

def refused(s, limits=effective_limits(SIM_DEVICE, PRESCRIPTION, 1)) -> set[str]:  # noqa: ANN001
    return {r.rule for r in check_setting(s, limits).refusals}


def test_a_static_rule_is_off_for_its_id_only_and_only_inside_the_block() -> None:
    ids = derive()
    loose = effective_limits(SIM_DEVICE, Prescription(max_amplitude_ma=100.0, frequency_hz=(1.0, 100.0),
                                                      pulse_width_us=(50.0, 500.0)), 1)
    with applied(disable_for("prescription.amplitude_max", ids)):
        assert "prescription.amplitude_max" not in refused(setting(1, 8.501))
        assert "device.amplitude_max" in refused(setting(1, 30.001, pulse_width_us=50.0), loose)
    assert "prescription.amplitude_max" in refused(setting(1, 8.501))
    mono = setting(1, 1.0, shape=Shape.MONOPHASIC)
    with applied(disable_for("standard.no_dc", ids)):
        assert refused(mono) >= {"needle.charge_balanced"} and "standard.no_dc" not in refused(mono)
        arrays = evaluate_arrays(SettingArrays.from_settings([mono]),
                                 LimitArrays.for_rows([effective_limits(SIM_DEVICE, PRESCRIPTION, 1)]))
        assert not arrays.violations["no_dc"][0] and arrays.violations["charge_balanced"][0]  # the program path too
    assert "standard.no_dc" in refused(mono)


def test_a_removed_refusal_lets_the_code_go_on_as_if_its_check_had_passed() -> None:
    ids = derive()
    head = {1: ChannelPlacement(NeedleSite(Region.HEAD, Side.MIDLINE), NeedleSite(Region.NECK_BACK, Side.MIDLINE))}
    chest = {1: ChannelPlacement(NeedleSite(Region.CHEST, Side.LEFT), NeedleSite(Region.CHEST, Side.RIGHT))}
    disable = disable_for("placement.head_neck", ids)
    assert disable.how == "emission_removed"
    with applied(disable):
        assert "placement.head_neck" not in {r.rule for r in check_placement(head, Patient())}
        assert "placement.head_neck" not in {r.rule for r in safety.check_placement(head, Patient())}
        assert "placement.bridges_thorax" in {r.rule for r in check_placement(chest, Patient())}
    assert "placement.head_neck" in {r.rule for r in check_placement(head, Patient())}
    clock = FakeClock()
    interlock = safety.Interlock(make_setup(), clock=clock)
    send(interlock, interlock.approve_set_channel(setting(1, 0.0)))
    send(interlock, interlock.approve_outputs({1}))
    clock.advance(1.0)
    send(interlock, interlock.approve_set_channel(setting(1, 1.0)))
    send(interlock, interlock.approve_outputs(set()))
    with applied(disable_for(ENABLING_AT_ZERO, ids)):
        interlock.approve_outputs({1})                   # enabled at 1 mA: the rule is gone
    with pytest.raises(safety.Refusal):
        interlock.approve_outputs({1})


def test_swallowed_filtered_and_fixed_returns_switch_their_control_off() -> None:
    ids = derive()
    clock = FakeClock()
    interlock = safety.Interlock(make_setup(Prescription(max_amplitude_ma=10.0, ramp_ma_per_s=2.0,
                                                         frequency_hz=(1.0, 100.0), pulse_width_us=(50.0, 500.0)),
                                            device=SLOW_DEVICE), clock=clock)
    start_channel(interlock, clock)
    for level in (1.0, 2.0):                             # delivered once: back to 2 mA is no rise in strength
        clock.advance(1.0)
        send(interlock, interlock.approve_set_channel(setting(1, level)))
    send(interlock, interlock.approve_set_channel(setting(1, 0.5)))
    clock.advance(2.0)
    with applied(disable_for("device.max_step", ids)):
        interlock.approve_set_channel(setting(1, 2.0))   # a 1.5 mA step on a 1 mA-step device
    neck = {2: ChannelPlacement(NeedleSite(Region.NECK_BACK, Side.LEFT), NeedleSite(Region.SHOULDER, Side.LEFT))}
    epileptic = Screening({q: q is Question.EPILEPSY for q in Question})
    with applied(disable_for("screening.epilepsy", ids)):
        assert safety.screen(epileptic, neck).ok and screen(epileptic, neck).warnings
    assert not screen(epileptic, neck).ok
    supervisor = Supervisor(interlock, telemetry_hz=10.0, clock=clock)
    clock.advance(10.0)
    with applied(disable_control("safety/supervisor.py::Supervisor.poll")):
        assert supervisor.poll() == []
    assert supervisor.poll()


def test_each_rule_is_judged_by_the_tests_of_its_hazards() -> None:
    log, ids = load(LOG_PATH), derive()
    asked: list[set[str]] = []
    entries, problems = plan(log, ids, lambda nodes: asked.append(nodes) or nodes,
                             only=["standard.no_dc", "supervision.hold", "*@*"])
    assert not problems and len(asked) == 1            # pytest is asked once, for what will run
    by_control = {e["disable"]["control"]: e for e in entries}
    assert set(by_control["standard.no_dc"]["tests"]) == set(next(h for h in log.hazards if h.id == "H03").tests)
    assert set(by_control["supervision.hold"]["tests"]) == {t for h in log.hazards_of("supervision.hold")
                                                            for t in h.tests}
    assert ENABLING_AT_ZERO in by_control                                     # every place a rule is made
    assert by_control["standard.no_dc"]["disable"]["how"] == "static_rule"


def test_parts_of_the_mutation_run_cover_every_control_over_n_runs() -> None:
    assert choose_part("1/3", 7) == [0, 3, 6]
    parts = [choose_part(f"{k}/3", 7) for k in (1, 2, 3)]
    assert sorted(i for part in parts for i in part) == list(range(7))
    assert choose_part("auto/3", 7) in parts
    with pytest.raises(ValueError):
        choose_part("4/3", 7)


@pytest.mark.timeout(180)
def test_mutate_notices_removed_rules_and_names_one_no_test_notices() -> None:
    """One removal per mechanism, each noticed by a test that exercises it; a rule only judged by
    tests that never exercise it is reported as not noticed (exit 1)."""
    catchers = ["tests/safety/test_rules.py::test_monophasic_refused_as_dc_and_at_the_needle",
                "tests/safety/test_rules.py::test_prescription_amplitude_cap_with_sensitivity",
                "tests/safety/test_placement.py::test_head_eyes_mouth_front_of_neck_refused",
                "tests/safety/test_interlock.py::test_step_limit_and_device_ramp",
                "tests/safety/test_supervisor.py::test_stale_telemetry_estops_once"]
    controls = ["standard.no_dc", "prescription.amplitude_max", "placement.head_neck", "device.max_step",
                "safety/supervisor.py::Supervisor.poll", "screening.epilepsy"]
    run = subprocess.run([sys.executable, "-m", "safety.trace", "--mutate", *(a for c in controls for a in ("--only", c)),
                          "--tests", *catchers], cwd=REPO, capture_output=True, text=True, timeout=170)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "6 controls switched off one at a time: 5 noticed, 1 not noticed" in run.stdout, run.stdout
    assert "NOT NOTICED: screening.epilepsy" in run.stdout
