"""The visit store, on SQLite and on a real PostgreSQL server (every test runs on both)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from firmware_host.sim.process import child_env
from firmware_host.visits import Outcome, Plan, RecordHeadError, StoreError, VisitStore
from firmware_host.visits.values import VisitRef
from firmware_host.visits.models import Base
from safety.thresholds import ChannelThresholds, TitrationWaveform
from safety import ChannelPlacement, NeedleSite, Question, Region, Screening, Shape, Side

pytestmark = pytest.mark.timeout(60)

ARM = ChannelPlacement(NeedleSite(Region.FOREARM, Side.LEFT, "LI10"), NeedleSite(Region.HAND, Side.LEFT, "LI4"))
WAVE = TitrationWaveform(Shape.BIPHASIC, 2.0, 200.0)


@pytest.fixture
def store(store_url: str):
    with VisitStore(store_url) as s:
        s.add_patient("P001", "typical")
        yield s


def thresholds(sensory: float = 1.0, motor: float = 2.0, tolerance: float = 4.0, **kw) -> ChannelThresholds:
    return ChannelThresholds(1, ARM, WAVE, datetime.now(timezone.utc), sensory, motor, tolerance, "P001", **kw)


def test_migrations_make_exactly_the_models(store_url: str) -> None:
    VisitStore(store_url).close()
    engine = create_engine(store_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert "record_heads" in inspect(engine).get_table_names()
    engine.dispose()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from firmware_host.visits.where import KNOWN_REVISIONS, SCHEMA_REVISION

    config = Config()
    config.set_main_option("script_location", "firmware_host.visits:migrations")
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_current_head() == SCHEMA_REVISION        # opening reads this, without Alembic
    assert sorted(r.revision for r in scripts.walk_revisions()) == sorted(KNOWN_REVISIONS)


def test_a_store_of_the_first_schema_is_migrated_with_its_data(store_url: str) -> None:
    """Outcomes, plans, doses and screening answers written as single rows by the first schema
    become entries; visits are counted per patient in the order they were stored."""
    from alembic import command
    from alembic.config import Config

    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", "firmware_host.visits:migrations")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        now = datetime.now(timezone.utc)
        for code in ("P001", "P002"):
            conn.exec_driver_sql("INSERT INTO patients VALUES (%s, %s, 'typical')" if "postgres" in store_url else
                                 "INSERT INTO patients VALUES (?, ?, 'typical')", (code, now))
        for code, who in (("P001", "JD"), ("P002", "KL"), ("P001", "KL")):        # store ids 1, 2, 3
            conn.execute(text("INSERT INTO visits (patient_code, started_at, ended_at, clinician, host, sensitivity) "
                              "VALUES (:code, :t, :t, :who, 'room', 'typical')"), {"code": code, "t": now, "who": who})
        for q in Question:
            conn.execute(text("INSERT INTO screening_answers VALUES (1, :q, :a)"),
                         {"q": q.value, "a": q is Question.BLEEDING_RISK})
        for sql in ("INSERT INTO outcomes VALUES (1, 6, 3, 'warm', false, false, false, '', null, null, null, null, :t)",
                    "INSERT INTO plans (visit_id, kinds, text, recorded_at) VALUES (1, '[\"loading\"]', 'x', :t)",
                    "INSERT INTO doses (visit_id, program, mechanism, request, delivered, completed, recorded_at) "
                    "VALUES (1, 'p', null, '{}', '[{\"channel\": 1}]', true, :t)"):
            conn.execute(text(sql), {"t": now})
    engine.dispose()
    with VisitStore(store_url) as store:
        second, visit = store.visits("P001")
        assert [(v.id, v.number) for v in (visit, second, *store.visits("P002"))] == [(1, 1), (3, 2), (2, 1)]
        assert visit.screening == Screening({q: q is Question.BLEEDING_RISK for q in Question})
        assert {(e.entry.recorded_by, e.entry.reason) for e in visit.screening_entries} == {("JD", "")}
        assert (visit.outcome.pain_before, visit.outcome.pain_after, visit.outcome.felt) == (6, 3, "warm")
        assert visit.outcomes[0].entry.recorded_by == "JD" and visit.plan == Plan(("loading",), "x")
        assert visit.doses[0].completed and visit.doses[0].delivered == ({"channel": 1},)


def test_opening_twice_migrates_once_and_keeps_data(store: VisitStore, store_url: str) -> None:
    with VisitStore(store_url) as again:
        assert again.patient("P001") is not None


def test_a_whole_visit_round_trips(store: VisitStore) -> None:
    answers = Screening({**Screening.all_no().answers, Question.BLEEDING_RISK: True})
    visit_id = store.start_visit("P001", answers, clinician="JD")
    store.add_thresholds(visit_id, thresholds())
    dose = store.start_dose(visit_id, "Segmental", "segmental_inhibition",
                            {"preset": "segmental_inhibition", "channel": 1}, "rec-1")
    assert store.last_dose("P001") is None                      # started, not yet finished
    store.finish_dose(dose, [{"channel": 1, "peak_ma": 1.8}], completed=True)
    store.add_outcome(visit_id, Outcome(pain_before=6, pain_after=3, felt="buzzing", soreness=True,
                                        ppt_local_before_kpa=250.0, ppt_local_after_kpa=310.0), by="JD")
    store.link_record(visit_id, "rec-1", "/records/rec-1.jsonl")
    assert store.visit_for("P001").id == visit_id
    store.end_visit(visit_id, Plan(("loading", "breathing"), "3x10 step-downs"), by="JD")
    assert store.open_visits("P001") == []

    [visit] = store.visits("P001")
    assert visit.screening[Question.BLEEDING_RISK] is True and not visit.screening.unanswered
    assert visit.thresholds[0].placement == ARM and visit.thresholds[0].waveform == WAVE
    assert visit.thresholds[0].motor_ma == 2.0
    assert visit.doses[0].delivered[0]["peak_ma"] == 1.8
    assert visit.outcome.pain_after == 3 and visit.outcome.adverse_events == ["soreness"]
    assert visit.plan == Plan(("loading", "breathing"), "3x10 step-downs")
    assert visit.records == (("rec-1", "/records/rec-1.jsonl"),)
    assert store.last_dose("P001").request["preset"] == "segmental_inhibition"


def test_a_visit_needs_every_screening_question_answered(store: VisitStore) -> None:
    partial = Screening({Question.PREGNANT: False})
    with pytest.raises(StoreError, match="screening is not finished"):
        store.start_visit("P001", partial, clinician="JD")


def test_yesterdays_open_visit_is_not_todays(store: VisitStore) -> None:
    store.start_visit("P001", Screening.all_no(), "JD", when=datetime.now(timezone.utc) - timedelta(days=1))
    assert store.open_visits("P001") == []
    store.start_visit("P001", Screening.all_no(), "JD")          # it does not stand in today's way


def test_nothing_is_replaced_a_correction_is_a_new_entry(store: VisitStore) -> None:
    """Part 11 §11.10(e): a second outcome or end appends; who, when and why are kept."""
    visit = store.start_visit("P001", Screening.all_no(), "JD")
    store.add_outcome(visit, Outcome(pain_before=6), by="JD")
    store.add_outcome(visit, Outcome(pain_after=3, felt="warm"), by="JD")      # new fields: no correction
    with pytest.raises(StoreError, match="--reason"):
        store.add_outcome(visit, Outcome(pain_after=4), by="KL")
    with pytest.raises(StoreError, match="--operator"):
        store.add_outcome(visit, Outcome(pain_after=4), by=" ", reason="misheard")
    assert store.add_outcome(visit, Outcome(pain_after=4), by="KL", reason="misheard") == ["pain_after"]
    assert store.end_visit(visit, Plan(("loading",)), by="JD")
    with pytest.raises(StoreError, match="--reason"):
        store.end_visit(visit, Plan(("breathing",)), by="JD")
    assert not store.end_visit(visit, Plan(("breathing",)), by="KL", reason="plan changed at the desk")
    v = store.visit(visit)
    assert (v.outcome.pain_before, v.outcome.pain_after, v.outcome.felt) == (6, 4, "warm")
    assert [o.outcome.pain_after for o in v.outcomes] == [None, 3, 4]                  # the first stays readable
    assert [(o.entry.recorded_by, o.entry.reason) for o in v.outcomes][-1] == ("KL", "misheard")
    assert [p.plan.kinds for p in v.plans] == [("loading",), ("breathing",)] and v.plan.kinds == ("breathing",)
    assert v.ended_at <= v.plans[1].entry.recorded_at                                  # the end did not move


def test_a_second_visit_today_is_refused_naming_the_way_out(store: VisitStore) -> None:
    store.add_patient("P002", "typical")
    store.start_visit("P002", Screening.all_no(), "JD")                      # store id 1: P002's visit 1
    first = store.start_visit("P001", Screening.all_no(), "JD")
    with pytest.raises(StoreError, match="visit P001/1 open.*--visit P001/1.*screens it again.*--another"):
        store.start_visit("P001", Screening.all_no(), "KL")
    second = store.start_visit("P001", Screening.all_no(), "KL", another=True)
    with pytest.raises(StoreError, match="2 visits open today.*--visit P001/2"):
        store.visit_for("P001")
    assert store.visit_for("P001", second).id == second                     # the store's id still names it
    assert store.visit_for("P001", VisitRef.parse("P001/2")).id == second    # and so does its number
    assert (store.visit(first).number, store.visit(second).number) == (1, 2)
    for wrong in (999, VisitRef.parse("P001/3"), VisitRef.parse("P002/1")):
        with pytest.raises(StoreError, match="not an open visit of P001"):
            store.visit_for("P001", wrong)
    assert store.patient_visit("P001", VisitRef.parse("P001/1")).id == first
    with pytest.raises(StoreError, match="P001 has no visit P002/1"):
        store.patient_visit("P001", VisitRef.parse("P002/1"))
    with pytest.raises(ValueError, match="P001/3"):
        VisitRef.parse("third")


def test_screening_again_appends_and_a_yes_is_taken_back_only_with_why_and_who(store: VisitStore) -> None:
    """Screening again keeps every answer given; the visit's screening (what the interlock
    judges) is the newest. A yes given today, in this visit or an earlier one, needs why and who."""
    skin = Screening({**Screening.all_no().answers, Question.SKIN_AT_SITE: True})
    visit = store.start_visit("P001", skin, "JD")
    assert store.rescreen(visit, skin, "JD") == []                            # nothing changed, nothing added
    with pytest.raises(StoreError, match="skin_at_site was answered yes in this visit.*--reason"):
        store.rescreen(visit, Screening.all_no(), "JD")
    with pytest.raises(StoreError, match="--operator NAME"):
        store.rescreen(visit, Screening.all_no(), "JD", by="", reason="needles moved to the other arm")
    assert store.rescreen(visit, Screening.all_no(), "JD", by="KL", reason="needles moved to the other arm") == [
        Question.SKIN_AT_SITE]
    v = store.visit(visit)
    assert v.screening[Question.SKIN_AT_SITE] is False and not v.screening.unanswered
    changes = [e for e in v.screening_entries if e.question is Question.SKIN_AT_SITE]
    assert [(e.answer, e.entry.recorded_by, e.entry.reason) for e in changes] == [
        (True, "JD", ""), (False, "KL", "needles moved to the other arm")]
    store.rescreen(visit, skin, "JD")                                         # a new yes needs no reason
    store.end_visit(visit, Plan(("loading",)), by="JD")
    with pytest.raises(StoreError, match="ended at .*new visit"):
        store.rescreen(visit, skin, "JD")
    with pytest.raises(StoreError, match="skin_at_site was answered yes earlier today"):
        store.start_visit("P001", Screening.all_no(), "JD")                  # a new visit the same day
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    store.add_patient("P003", "typical")
    store.start_visit("P003", skin, "JD", when=yesterday)
    assert store.visit(store.start_visit("P003", Screening.all_no(), "JD")).number == 2   # another day: no reason


def test_an_implanted_device_ends_the_visit_at_screening(store: VisitStore) -> None:
    pacemaker = Screening({**Screening.all_no().answers, Question.IMPLANTED_DEVICE: True})
    visit = store.visit(store.start_visit("P001", pacemaker, "JD"))
    assert visit.ended_at is not None and "implanted electronic device" in visit.plan.text
    with pytest.raises(StoreError, match="P001/1 ended at .*at screening: a pacemaker"):
        store.visit_for("P001")
    with pytest.raises(StoreError, match="implanted_device was answered yes earlier today"):
        store.start_visit("P001", Screening.all_no(), "JD")
    later = store.start_visit("P001", Screening.all_no(), "JD", by="KL", reason="answered for the wrong patient")
    assert store.visit_for("P001").id == later


def test_patients_are_codes_not_names(store: VisitStore) -> None:
    with pytest.raises(StoreError, match="not a name"):
        store.add_patient("Jane Doe", "typical")
    with pytest.raises(StoreError, match="already exists"):
        store.add_patient("P001", "typical")
    with pytest.raises(StoreError, match="estim patient add P404"):
        store.start_visit("P404", Screening.all_no(), "JD")


@pytest.mark.parametrize("bad", [{"pain_before": 11}, {"pain_after": -1}, {"pain_before": 2.5},
                                 {"ppt_remote_after_kpa": 0.0}])
def test_outcomes_are_on_their_scales(bad: dict) -> None:
    with pytest.raises(StoreError):
        Outcome(**bad)


def test_a_plan_says_what_follows(store: VisitStore) -> None:
    with pytest.raises(StoreError, match="empty"):
        Plan()
    with pytest.raises(StoreError, match="unknown plan"):
        Plan(("yoga",))


def test_record_head_never_moves_backwards_and_a_closed_one_never_moves(store: VisitStore) -> None:
    assert store.get_record_head("r1") is None
    store.put_record_head("r1", "/r1.jsonl", 10, "a" * 64, None, False, "s1")
    with pytest.raises(RecordHeadError, match="back from 10 lines to 9"):
        store.put_record_head("r1", "/r1.jsonl", 9, "c" * 64, "clinic-key", False, "s")
    with pytest.raises(RecordHeadError, match="different last hash"):
        store.put_record_head("r1", "/r1.jsonl", 10, "d" * 64, "clinic-key", False, "s")
    store.put_record_head("r1", "/r1.jsonl", 25, "b" * 64, "clinic-key", True, "s2")
    store.put_record_head("r1", "/r1.jsonl", 25, "b" * 64, "clinic-key", True, "s2")   # the same head again is fine
    with pytest.raises(RecordHeadError, match="closed at 25 lines and never moves"):
        store.put_record_head("r1", "/r1.jsonl", 26, "e" * 64, "clinic-key", True, "s3")
    head = store.get_record_head("r1")
    assert (head.count, head.last_hash, head.key_id, head.closed, head.signature) == (
        25, "b" * 64, "clinic-key", True, "s2")
    assert head.updated_at.tzinfo is not None and store.record_at("/r1.jsonl") == "r1"


def test_paths_in_the_store_are_absolute(store: VisitStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    visit = store.start_visit("P001", Screening.all_no(), "JD")
    store.link_record(visit, "r2", "visit.jsonl")
    store.put_record_head("r2", "visit.jsonl", 1, "a" * 64, None, False, "s")
    assert store.visit(visit).records == (("r2", str(tmp_path / "visit.jsonl")),)
    assert store.get_record_head("r2").path == str(tmp_path / "visit.jsonl")


def test_an_unusable_url_is_a_plain_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        VisitStore("visits.db")
    with pytest.raises(StoreError, match="SQLite or PostgreSQL"):
        VisitStore("mysql://x@y/z")
    with pytest.raises(StoreError, match="no visit store at"):
        VisitStore(f"sqlite:///{tmp_path / 'none.sqlite3'}", create=False)
    assert not (tmp_path / "none.sqlite3").exists()
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.access(readonly, os.W_OK):                        # root writes anywhere: a file stands in the way
        readonly.chmod(0o700)
        (readonly / "sub").write_text("")
        target = readonly / "sub" / "visits.sqlite3"
    else:
        target = readonly / "visits.sqlite3"
    with pytest.raises(StoreError, match="cannot be made"):
        VisitStore(f"sqlite:///{target}")


def test_a_store_made_by_a_newer_estim_is_a_plain_error(store: VisitStore, store_url: str) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer estim .*0099"):
        VisitStore(store_url)


def test_the_store_file_is_readable_by_its_user_only(tmp_path: Path) -> None:
    VisitStore(f"sqlite:///{tmp_path / 'v.sqlite3'}").close()
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        "v.sqlite3": 0o600, "v.sqlite3.migration-lock": 0o600}


WRITER = textwrap.dedent("""
    import sys
    from datetime import datetime, timezone
    from firmware_host.visits import Outcome, Plan, VisitStore
    from safety.thresholds import ChannelThresholds, TitrationWaveform
    from safety import ChannelPlacement, NeedleSite, Region, Screening, Shape, Side
    url, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    site = NeedleSite(Region.FOREARM, Side.LEFT)
    store = VisitStore(url)
    for i in range(n):
        v = store.start_visit("P001", Screening.all_no(), clinician=host, another=True)
        store.add_thresholds(v, ChannelThresholds(1, ChannelPlacement(site, site),
                             TitrationWaveform(Shape.BIPHASIC, 2.0, 200.0), datetime.now(timezone.utc),
                             1.0, 2.0, 4.0, "P001"))
        store.add_outcome(v, Outcome(pain_before=5, pain_after=i % 11), by=host)
        store.end_visit(v, Plan(("loading",), f"{host} {i}"), by=host)
    store.close()
""")


def test_two_hosts_writing_visits_for_one_patient_lose_nothing(postgres_url_template: str) -> None:
    from postgres_server import new_database

    url = new_database(postgres_url_template)
    with VisitStore(url) as store:
        store.add_patient("P001", "typical")
    n = 15
    hosts = [subprocess.Popen([sys.executable, "-c", WRITER, url, host, str(n)], env=child_env(),
                              stderr=subprocess.PIPE, text=True) for host in ("A", "B")]
    for proc in hosts:
        _, err = proc.communicate(timeout=50)
        assert proc.returncode == 0, err
    with VisitStore(url) as store:
        visits = store.visits("P001")
        assert len(visits) == 2 * n
        assert sorted(v.number for v in visits) == list(range(1, 2 * n + 1))   # counted under the patient's lock
        assert sorted(v.plan.text for v in visits) == sorted(f"{h} {i}" for h in "AB" for i in range(n))
        assert all(len(v.thresholds) == 1 and v.outcome is not None and v.ended_at for v in visits)
        assert len(store.thresholds("P001")) == 2 * n


def test_racing_record_heads_end_at_the_highest_count(postgres_url_template: str) -> None:
    """Two writers anchoring one record at once: the head ends at the highest count, and
    every write that lost was refused for being behind, never applied."""
    from concurrent.futures import ThreadPoolExecutor

    from postgres_server import new_database

    url = new_database(postgres_url_template)
    counts = {"A": range(0, 60, 2), "B": range(1, 60, 2)}

    def anchor(host: str) -> list[int]:
        refused = []
        with VisitStore(url) as store:
            for count in counts[host]:
                try:
                    store.put_record_head("shared", "/shared.jsonl", count, f"hash-{count}", None, False, "s")
                except RecordHeadError:
                    refused.append(count)
        return refused

    with VisitStore(url):
        pass
    with ThreadPoolExecutor(2) as pool:
        refused = [c for r in pool.map(anchor, counts) for c in r]
    with VisitStore(url) as store:
        head = store.get_record_head("shared")
    assert (head.count, head.last_hash) == (59, "hash-59")
    assert 59 not in refused


def _open_and_close(url: str) -> str:
    from firmware_host.visits import VisitStore

    with VisitStore(url):
        return "ok"


def test_two_programs_opening_a_new_store_at_once_both_succeed(tmp_path: Path) -> None:
    """Both found no schema and both created its tables: one failed ("table already exists")."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        for n in range(3):
            url = f"sqlite:///{tmp_path / f'new-{n}.sqlite3'}"
            assert list(pool.map(_open_and_close, [url] * 4)) == ["ok"] * 4
