"""Screening as clinicians use it, driven as `estim` commands (on a pseudo-terminal where the
command asks): a visit that can never stimulate ends at `visit start`; screening again the same
day updates today's visit and takes back a yes only with why and who; a yes about the patient
carries over to the next visit; visits are counted per patient. Where the store's SQL decides,
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from firmware_host.visits import Plan, VisitStore
from safety import PERSISTENT, QUESTIONS, Question, Screening
from support import REPO
from estim_terminal import Terminal

pytestmark = pytest.mark.timeout(120)

RUN = ["run", "--channel", "1", "--frequency", "2", "--pulse-width", "200", "--amplitude", "0.5", "--seconds", "0.2",
       "--sites", "left:forearm,left:forearm", "--inserted", "10"]


def estim(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True, timeout=60,
                          env={**child_env(), "ESTIM_STORE_URL": url}, stdin=subprocess.DEVNULL)


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'visits.sqlite3'}"


def test_a_pacemaker_ends_the_visit_at_visit_start(store_url: str, tmp_path: Path) -> None:
    assert estim(store_url, "patient", "add", "P1").returncode == 0
    done = estim(store_url, "visit", "start", "P1", "--yes", "implanted_device", "--no", "rest")
    assert done.returncode == 2 and "pacemaker" in done.stderr and "P1/1 ended at screening" in done.stderr
    with VisitStore(store_url) as store:
        [visit] = store.visits("P1")
    assert visit.ended_at is not None and "implanted electronic device" in visit.plan.text
    record = tmp_path / "r.jsonl"
    treat = estim(store_url, *RUN, "--patient", "P1", "--record", str(record))
    assert treat.returncode == 2 and "at screening: a pacemaker" in treat.stderr and not record.exists()


def test_screening_again_today_updates_the_visit_and_takes_back_a_yes_only_with_why_and_who(store_url: str) -> None:
    assert estim(store_url, "patient", "add", "P2").returncode == 0
    first = estim(store_url, "visit", "start", "P2", "--yes", "skin_at_site", "--no", "rest", "--operator", "JD")
    assert first.returncode == 2 and "choose needle sites away from it" in first.stderr    # refused, still open
    bare = estim(store_url, "visit", "start", "P2", "--no", "all")
    assert bare.returncode == 2 and "skin_at_site was answered yes" in bare.stderr and "--reason" in bare.stderr
    why = "needles moved to the other arm"
    nameless = estim(store_url, "visit", "start", "P2", "--no", "all", "--reason", why)
    assert nameless.returncode == 2 and "--operator NAME" in nameless.stderr              # not taken from the login
    done = estim(store_url, "visit", "start", "P2", "--no", "all", "--reason", why, "--operator", "KL")
    assert done.returncode == 0, done.stderr
    assert f"visit 1 of P2 screened again: skin_at_site yes -> no (why: {why}, by KL)" in done.stdout
    with VisitStore(store_url) as store:
        [visit] = store.visits("P2")                     # the same visit, updated: what the interlock judges now
    assert visit.screening[Question.SKIN_AT_SITE] is False and visit.ended_at is None
    assert [(e.answer, e.entry.recorded_by, e.entry.reason) for e in visit.screening_entries
            if e.question is Question.SKIN_AT_SITE] == [(True, "JD", ""), (False, "KL", why)]
    assert f"skin at site yes -> no (why: {why})" in estim(store_url, "patient", "show", "P2").stdout


def test_a_yes_that_carries_over_is_asked_again_not_dropped_by_no_all(tmp_path: Path) -> None:
    url = sqlite(tmp_path)
    last_week = Screening({**Screening.all_no().answers, Question.BLEEDING_RISK: True, Question.SKIN_AT_SITE: True})
    with VisitStore(url) as store:
        store.add_patient("P3", "typical")
        visit = store.start_visit("P3", last_week, "JD", when=datetime.now(timezone.utc) - timedelta(days=7))
        store.end_visit(visit, Plan(("loading",)), by="JD")
    dropped = estim(url, "visit", "start", "P3", "--no", "all")
    assert "yes to skin_at_site, bleeding_risk" in dropped.stdout                    # both shown
    assert dropped.returncode == 2 and "--yes bleeding_risk" in dropped.stderr         # the one about the patient asked
    assert "skin_at_site" not in dropped.stderr                                # today's skin is looked at afresh
    with Terminal("visit", "start", "P3", "--no", "all", env={"ESTIM_STORE_URL": url}) as term:
        term.expect(f"{QUESTIONS[Question.BLEEDING_RISK]} Still yes? [y/n]")
        term.type("y\n")
        assert term.finish() == 0, term.text
    assert "visit 2 of P3 started" in term.text
    with VisitStore(url) as store:
        today, _ = store.visits("P3")
    assert today.screening[Question.BLEEDING_RISK] is True and today.screening[Question.SKIN_AT_SITE] is False


def test_visit_numbers_count_per_patient_and_name_the_visit(tmp_path: Path) -> None:
    url = sqlite(tmp_path)
    for code in ("P5", "P4"):
        assert estim(url, "patient", "add", code).returncode == 0
        assert estim(url, "visit", "start", code, "--no", "all").returncode == 0
    assert estim(url, "visit", "end", "P4", "--visit", "P4/1", "--plan", "loading").returncode == 0
    second = estim(url, "visit", "start", "P4", "--no", "all")
    assert "visit 2 of P4 started (typical; --visit P4/2, store id 3)" in second.stdout, second.stderr
    run = estim(url, *RUN, "--patient", "P4", "--visit", "P4/2", "--record", str(tmp_path / "r.jsonl"))
    assert run.returncode == 0, run.stderr
    assert estim(url, "visit", "outcome", "P4", "--visit", "3", "--pain-after", "3").returncode == 0   # the store's id
    other = estim(url, *RUN, "--patient", "P4", "--visit", "P5/1")
    assert other.returncode == 2 and "not an open visit of P4" in other.stderr
    garbled = estim(url, "visit", "outcome", "P4", "--visit", "second", "--pain-after", "3")
    assert garbled.returncode == 2 and "P001/3" in garbled.stderr
    shown = estim(url, "patient", "show", "P4").stdout
    assert "visit 2 (P4/2, store id 3)" in shown and "visit 1 (P4/1, store id 2)" in shown
    with VisitStore(url) as store:
        assert [(v.number, len(v.doses)) for v in store.visits("P4")] == [(2, 1), (1, 0)]


def test_the_question_names_are_in_the_help_and_the_clinician_doc() -> None:
    shown = estim("sqlite://", "visit", "start", "--help").stdout
    for question in Question:
        mark = "[*]" if question in PERSISTENT else ""
        assert re.search(rf"^  {question.value} {mark} *{re.escape(QUESTIONS[question])}$", shown, re.M), question
    table = re.findall(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \|", (REPO / "docs" / "clinician.md").read_text(), re.M)
    assert dict(table) == {q.value: "yes" if q in PERSISTENT else "no" for q in Question}
