"""Two treatment rooms, one patient, one store (SQLite and a real PostgreSQL server): each room's
entries land in its own visit and nothing is overwritten or lost; commands that race for one
patient are refused in plain words, never with a constraint error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from firmware_host.visits import VisitStore
from safety import read_entries, verify_record

pytestmark = pytest.mark.timeout(240)

RUN = ["run", "--channel", "1", "--frequency", "2", "--pulse-width", "200", "--amplitude", "0.5", "--seconds", "0.3",
       "--sites", "left:forearm,left:forearm", "--inserted", "10"]


def start(args: list[str], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "firmware_host", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**child_env(), "ESTIM_STORE_URL": url})


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def estim(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return finish(start(list(args), url))


def test_two_rooms_treat_one_patient_at_once(store_url: str, tmp_path: Path) -> None:
    with VisitStore(store_url) as store:
        store.add_patient("P1", "typical")
    first = estim(store_url, "visit", "start", "P1", "--no", "all", "--operator", "A")
    again = estim(store_url, "visit", "start", "P1", "--no", "all", "--operator", "B")   # screens A's visit again
    assert again.returncode == 0 and "visit 1 of P1 screened again: no answer changed" in again.stdout
    assert "--another" in again.stdout and "Traceback" not in again.stderr
    second = estim(store_url, "visit", "start", "P1", "--no", "all", "--operator", "B", "--another")
    assert "visit 2 of P1 started" in second.stdout, second.stderr
    ids = {room: int(done.stdout.split("store id ")[1].split(")")[0]) for room, done in (("A", first), ("B", second))}
    guessed = estim(store_url, *RUN, "--patient", "P1")
    assert guessed.returncode == 2 and "--visit P1/" in guessed.stderr             # two open: never guessed

    def room(name: str) -> list[str]:
        return [name, "P1/1" if name == "A" else str(ids[name])]     # by its number, or by the store's id

    steps = [
        lambda r, v: [*RUN, "--patient", "P1", "--visit", v, "--record", str(tmp_path / f"room-{r}.jsonl"),
                      "--operator", r],
        lambda r, v: ["visit", "outcome", "P1", "--visit", v, "--pain-before", "6" if r == "A" else "7",
                      "--pain-after", "2" if r == "A" else "5", "--felt", f"room {r}", "--operator", r],
        lambda r, v: ["visit", "end", "P1", "--visit", v, "--plan", "loading", "--text", f"room {r}", "--operator", r],
    ]
    for step in steps:                                             # both rooms at the same moment, step by step
        procs = [start(step(*room(name)), store_url) for name in ("A", "B")]
        for done in map(finish, procs):
            assert done.returncode == 0, done.stderr
    with VisitStore(store_url) as store:
        for name, visit_id in ids.items():
            visit = store.visit(visit_id)
            record = tmp_path / f"room-{name}.jsonl"
            record_id = next(e for e in read_entries(record) if e["kind"] == "open")["data"]["record_id"]
            assert visit.clinician == name and visit.ended_at is not None
            assert [d.record_id for d in visit.doses] == [record_id] and visit.doses[0].completed
            assert visit.records == ((record_id, str(record)),)
            assert visit.outcome.felt == f"room {name}" and len(visit.outcomes) == 1
            assert visit.plan.text == f"room {name}" and len(visit.plans) == 1
            opened = next(e for e in read_entries(record) if e["kind"] == "open")["data"]
            assert (opened["patient"], opened["visit"]) == ("P1", visit_id)
            assert verify_record(record, anchors=store).closed


def test_racing_commands_for_one_patient_are_refused_in_plain_words(store_url: str) -> None:
    """Four `visit start` at once make one visit (those that came after it screen it again);
    three first outcomes at once keep one and refuse the rest as corrections without a reason."""
    with VisitStore(store_url) as store:
        store.add_patient("P2", "typical")
    starts = [finish(p) for p in [start(["visit", "start", "P2", "--no", "all"], store_url) for _ in range(4)]]
    assert 0 in {d.returncode for d in starts} <= {0, 2}, [d.stderr for d in starts]
    assert all("already has visit" in d.stderr for d in starts if d.returncode)   # the rest screened it again
    outcomes = [finish(p) for p in [start(["visit", "outcome", "P2", "--pain-before", str(n)], store_url)
                                    for n in range(3)]]
    assert sorted(d.returncode for d in outcomes) == [0, 2, 2], [d.stderr for d in outcomes]
    for done in starts + outcomes:
        text = done.stdout + done.stderr
        assert "Traceback" not in text and "IntegrityError" not in text and "UNIQUE" not in text.upper()
    with VisitStore(store_url) as store:
        [visit] = store.visits("P2")
        assert len(visit.outcomes) == 1 and visit.number == 1
