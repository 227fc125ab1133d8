"""A whole session on the simulator -> record -> PDF report and FHIR bundle, both read back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import firmware_host as fh
from firmware_host.reports.fhir import DOSE_URL, build_bundle
from firmware_host.reports.pdf import write_report
from firmware_host.reports.session import read_session
from firmware_host.sim.process import child_env
from safety import TreatmentRecord, verify_record
from safety.record_keys import create_key, key_dir
from support import forearm_sites, prescription

pytestmark = pytest.mark.timeout(60)
SYSTEM = "https://clinic.example/patients"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Channel 1 ramps to 1 mA at 100 Hz, the patient says it is too strong, then Ctrl-C."""
    path = tmp_path_factory.mktemp("session") / "session.jsonl"
    keys = tmp_path_factory.mktemp("keys")
    key = create_key("reports", keys)
    with TreatmentRecord(path, key=key, patient="P001") as record:
        record.append("session_plan", {"operator": "JD", "mechanism": "segmental_inhibition", "patient": "P001",
                                       "integration_plan": "graded knee extension, 3x10", "sensitivity": "typical"})
        record.append("thresholds", {"channel": 1, "sensory": 0.4, "motor": 1.2, "tolerance": 2.5})
        with pytest.raises(KeyboardInterrupt):
            with fh.open("sim://", prescription=prescription(), placements=forearm_sites(1), record=record) as stim:
                stim.configure(1, frequency_hz=100, pulse_width_us=200)
                stim.enable(1)
                stim.ramp(1, 1.0)
                time.sleep(0.6)
                record.append("patient_feedback", {"channel": 1, "feedback": "too strong", "outcome": "e-stop"})
                raise KeyboardInterrupt
    return path, keys / f"{key.key_id}.json"


@pytest.fixture
def session_record(recorded: tuple[Path, Path]) -> Path:
    """The module's record, its key copied into this test's own key directory."""
    path, key_file = recorded
    key_dir().mkdir(parents=True, mode=0o700)
    shutil.copy2(key_file, key_dir() / key_file.name)
    return path


def test_the_session_reads_back(session_record: Path) -> None:
    assert verify_record(session_record).closed
    s = read_session(session_record)
    assert s.operator == "JD" and s.device["serial"] == "SIM-0001" and s.setup["sites"] == {
        "1": ["left forearm", "left forearm"]}
    (out,) = s.outputs
    assert out.peak_ma == pytest.approx(1.0) and out.frequencies_hz == {100.0}
    kinds = {e.kind for e in s.events}
    assert {"feedback", "estop", "stop"} <= kinds
    assert all(e.t_s is not None and 0 <= e.t_s <= out.samples[-1].t_s + 1 for e in s.events)
    assert s.doses[0].max_amplitude_ma == pytest.approx(1.0) and s.doses[0].frequencies_hz == (100.0,)


@pytest.fixture
def eastern(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A clinic whose local time is not UTC."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_pdf_report_text_and_rendering(session_record: Path, tmp_path: Path, eastern: None) -> None:
    from pypdf import PdfReader
    import pypdfium2

    session = read_session(session_record)
    pdf = write_report(session, verify_record(session_record), tmp_path / "visit.pdf")
    assert pdf.stat().st_mode & 0o777 == 0o600
    reader = PdfReader(pdf)
    pages = [p.extract_text() for p in reader.pages]
    assert len(pages) == 2
    text = " ".join(pages)
    for expected in ("Needle e-stim session report", "JD", "SIM-0001", "left forearm to left forearm",
                     "0.25 mm across, inserted 15 mm", "first felt 0.4 mA", "tolerance 2.5 mA", "segmental_inhibition",
                     "100 Hz", "Ctrl-C (e-stop)", "too strong", "graded knee extension", "the session ended early",
                     "Output summary at the needle", "intact and closed", "research and investigational use only"):
        assert expected in text, expected
    for raw in ("KeyboardInterrupt", "None", "{'", "UTC"):
        assert raw not in text, raw
    local_start = __import__("datetime").datetime.fromisoformat(session.started).astimezone()
    assert f"{local_start:%H:%M}" in pages[0] and "EST" in pages[0]
    for n, page in enumerate(pages, start=1):                      # who, when, which record, which page
        assert "patient P001" in page and session.record_id in page and f"page {n} of 2" in page
    sizes = {round(float(m), 1) for m in re.findall(rb"/F\d+ ([\d.]+) Tf", b"".join(
        p.get_contents().get_data() for p in reader.pages))}
    assert sizes and min(sizes) >= 8.0, sizes
    image = np.asarray(pypdfium2.PdfDocument(str(pdf))[1].render(scale=2).to_pil().convert("RGB"), dtype=int)
    red = (image[..., 0] > 120) & (image[..., 1] < 80) & (image[..., 2] < 80)    # the stop and e-stop lines
    assert red.sum() > 100 and (image < 250).any(axis=2).mean() > 0.02


def test_a_normally_completed_session_says_so(tmp_path: Path) -> None:
    path = tmp_path / "done.jsonl"
    with TreatmentRecord(path, patient="P002") as record:
        with fh.open("sim://", prescription=prescription(), placements=forearm_sites(1), record=record) as stim:
            stim.configure(1, frequency_hz=100, pulse_width_us=200)
            stim.enable(1)
            stim.ramp(1, 0.5)
            time.sleep(0.3)
    from pypdf import PdfReader

    pdf = write_report(read_session(path), verify_record(path), tmp_path / "done.pdf")
    text = " ".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "ran to its end" in text and "ended early" not in text


def resources(bundle: dict) -> dict[str, list[dict]]:
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return by_type


def test_fhir_transaction_bundle_an_ehr_can_take(session_record: Path, tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhirclient.models.bundle import Bundle as R4Bundle

    from firmware_host.visits import Outcome, Plan, VisitStore
    from safety import Screening

    with VisitStore() as store:                                   # the visit the record belongs to
        store.add_patient("P001", "typical")
        visit_id = store.start_visit("P001", Screening.all_no(), "JD")
        store.add_outcome(visit_id, Outcome(pain_before=6), by="JD")
        time.sleep(0.05)
        store.add_outcome(visit_id, Outcome(pain_after=3, soreness=True, other_events="bruise"), by="JD")
        store.end_visit(visit_id, Plan(("loading",), "3x10 knee extension"), by="JD")
        visit = store.visit(visit_id)
    bundle = json.loads(build_bundle(read_session(session_record), verify_record(session_record), visit,
                                     SYSTEM).json())
    Bundle.parse_obj(bundle)                                      # validates every resource again (R4B)
    assert R4Bundle(bundle).as_json() == bundle                   # and as FHIR R4 4.0.1 (SMART's fhirclient models)
    assert bundle["type"] == "transaction"
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(u.startswith("urn:uuid:") for u in urls) and all(e["request"]["method"] == "POST"
                                                                and e["request"]["url"] == e["resource"]["resourceType"]
                                                                for e in bundle["entry"])
    references = re.findall(r'"reference": "([^"]+)"', json.dumps(bundle))
    assert references and set(references) <= urls                 # every reference resolves inside the bundle
    by_type = resources(bundle)
    (patient,) = by_type["Patient"]
    assert patient["identifier"] == [{"system": SYSTEM, "value": "P001"}] and "text" in patient
    assert next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")["request"][
        "ifNoneExist"] == f"identifier={SYSTEM}|P001"
    (procedure,) = by_type["Procedure"]
    assert procedure["status"] == "stopped" and "div" in procedure["text"]
    assert {"system": "http://www.ama-assn.org/go/cpt", "code": "97813"}.items() <= procedure["code"]["coding"][0].items()
    assert any("integration plan: loading; 3x10 knee extension" in n["text"] for n in procedure["note"])
    (dose,) = [e for e in procedure["extension"] if e["url"] == DOSE_URL]
    parts = {e["url"]: e for e in dose["extension"]}
    assert parts["pulse-rate"]["valueQuantity"] == {"value": 100.0, "unit": "Hz", "system": "http://unitsofmeasure.org",
                                                    "code": "Hz"}
    assert parts["inserted-depth"]["valueQuantity"]["value"] == 15 and parts["peak-intensity"]["valueQuantity"][
        "code"] == "mA"
    assert not any("valueString" in part and part["url"] not in ("site-a", "site-b") for part in dose["extension"])
    observations = by_type["Observation"]
    pains = {o["code"]["text"]: o for o in observations if o["code"].get("coding", [{}])[0].get("code") == "72514-3"}
    before = pains["pain before the session"]
    assert before["valueInteger"] == 6 and before["effectiveDateTime"] == visit.outcome.pain_before_at.isoformat()
    assert before["effectiveDateTime"] != procedure["performedPeriod"]["start"]
    thresholds = [o for o in observations if "threshold" in o["code"]["text"]]
    assert sorted(o["valueQuantity"]["value"] for o in thresholds) == [0.4, 1.2, 2.5]
    assert sorted(a["event"]["text"] for a in by_type["AdverseEvent"]) == ["bruise", "soreness"]


def test_report_and_export_commands(session_record: Path, tmp_path: Path) -> None:
    pdf, bundle = tmp_path / "visit.pdf", tmp_path / "visit.json"
    env = {**child_env(), "ESTIM_PATIENT_SYSTEM": SYSTEM}
    for args in (["report", str(session_record), "--out", str(pdf), "--no-store"],
                 ["export", str(session_record), "--fhir", str(bundle), "--no-store"]):
        done = subprocess.run([sys.executable, "-m", "firmware_host", "record", *args], capture_output=True,
                              text=True, env=env, timeout=50)
        assert done.returncode == 0, done.stderr
    assert pdf.read_bytes()[:5] == b"%PDF-" and json.loads(bundle.read_text())["resourceType"] == "Bundle"
    assert pdf.stat().st_mode & 0o777 == 0o600 and bundle.stat().st_mode & 0o777 == 0o600
    missing = subprocess.run([sys.executable, "-m", "firmware_host", "record", "report", str(tmp_path / "no.jsonl"),
                              "--out", str(pdf)], capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 2 and "no such record" in missing.stderr and "Traceback" not in missing.stderr
    altered = tmp_path / "altered.jsonl"
    altered.write_bytes(session_record.read_bytes().replace(b"too strong", b"just fine"))
    refused = subprocess.run([sys.executable, "-m", "firmware_host", "record", "export", str(altered), "--fhir",
                              str(tmp_path / "altered.json"), "--no-store"], capture_output=True, text=True, env=env,
                             timeout=30)
    assert refused.returncode == 6 and "nothing was exported" in refused.stderr
    assert not (tmp_path / "altered.json").exists()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(session_record.read_bytes().split(b"\n")[:-2]) + b"\n")
    marked = subprocess.run([sys.executable, "-m", "firmware_host", "record", "export", str(cut), "--fhir",
                             str(tmp_path / "cut.json"), "--no-store"], capture_output=True, text=True, env=env,
                            timeout=30)
    assert marked.returncode == 5
    exported = json.loads((tmp_path / "cut.json").read_text())
    assert exported["meta"]["tag"][0]["code"].startswith("record-")
    assert resources(exported)["Procedure"][0]["status"] == "stopped"


def test_report_and_export_take_the_visit_from_the_store(tmp_path: Path) -> None:
    """A session run for a patient: screening, outcomes, thresholds and plan come from the visit
    the record names; pain before and after become the LOINC 72514-3 Observations."""
    from pypdf import PdfReader

    from firmware_host.cli.anchoring import StoreAnchor
    from firmware_host.visits import Outcome, Plan, VisitStore
    from safety.thresholds import ChannelThresholds, TitrationWaveform
    from safety import Question, Screening, Shape

    with VisitStore() as store:
        store.add_patient("P001", "typical")
        visit = store.start_visit("P001", Screening({**Screening.all_no().answers, Question.PREGNANT: True}), "KL")
        store.add_thresholds(visit, ChannelThresholds(1, forearm_sites(1)[1], TitrationWaveform(Shape.BIPHASIC, 2, 200),
                                                      __import__("datetime").datetime.now().astimezone(), 0.7, 1.4,
                                                      3.0, "P001"))
    record = tmp_path / "patient.jsonl"
    with TreatmentRecord(record, patient="P001", visit=visit, anchor=StoreAnchor(None)) as rec:
        rec.append("session_plan", {"patient": "P001", "visit": visit})
    with VisitStore() as store:
        store.link_record(visit, read_session(record).record_id, record)
        store.add_outcome(visit, Outcome(pain_before=6, pain_after=3, felt="warm, heavy", soreness=True,
                                         ppt_local_before_kpa=250.0, ppt_local_after_kpa=310.0), by="KL")
        store.end_visit(visit, Plan(("loading",), "3x10 knee extension"), by="KL")
    pdf, bundle = tmp_path / "visit.pdf", tmp_path / "visit.json"
    env = {**child_env(), "ESTIM_PATIENT_SYSTEM": SYSTEM}
    for args in (["report", str(record), "--out", str(pdf)], ["export", str(record), "--fhir", str(bundle)]):
        done = subprocess.run([sys.executable, "-m", "firmware_host", "record", *args], capture_output=True,
                              text=True, env=env, timeout=50)
        assert done.returncode == 0, done.stderr
    text = " ".join(p.extract_text() for p in PdfReader(pdf).pages)
    for expected in ("P001", "yes: pregnant", "pain (0-10): 6 before, 3 after", "warm, heavy", "soreness",
                     "loading; 3x10 knee extension", "first felt 0.7 mA",
                     "pressure-pain threshold, near the needles: 250 kPa before, 310 kPa after"):
        assert expected in text, expected
    assert re.search(r"clinician:\s+KL", text)                    # the visit names the clinician
    entries = json.loads(bundle.read_text())["entry"]
    pains = [e["resource"] for e in entries if e["resource"]["resourceType"] == "Observation"
             and e["resource"]["code"].get("coding")]
    assert sorted(p["valueInteger"] for p in pains) == [3, 6]


def test_the_procedure_status_says_what_happened(session_record: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from firmware_host.reports.fhir import status_of

    verdict = verify_record(session_record)
    stopped = read_session(session_record)
    assert status_of(stopped, verdict) == "stopped"
    assert status_of(replace(stopped, stops=[], faults=[]), verdict) == "completed"
    assert status_of(replace(stopped, not_started="refused: x"), verdict) == "not-done"
    assert status_of(replace(stopped, outputs=[]), verdict) == "not-done"
    assert status_of(replace(stopped, stops=[], faults=[], closed=False), verdict) == "stopped"
