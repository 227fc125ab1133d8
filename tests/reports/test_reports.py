"""A whole session on the simulator -> record -> PDF report and FHIR bundle, both read back."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Channel 1 ramps to 1 mA at 100 Hz, the patient says it is too strong, then an e-stop."""
    path = tmp_path_factory.mktemp("session") / "session.jsonl"
    keys = tmp_path_factory.mktemp("keys")
    key = create_key("reports", keys)
    with TreatmentRecord(path, key=key) as record:
        record.append("session_plan", {"operator": "JD", "mechanism": "segmental_inhibition",
                                       "integration_plan": "graded knee extension, 3x10", "sensitivity": "typical"})
        record.append("thresholds", {"channel": 1, "sensory": 0.4, "motor": 1.2, "tolerance": 2.5})
        with fh.open("sim://", prescription=prescription(), placements=forearm_sites(1), record=record) as stim:
            stim.configure(1, frequency_hz=100, pulse_width_us=200)
            stim.enable(1)
            stim.ramp(1, 1.0)
            time.sleep(0.6)
            record.append("patient_feedback", {"channel": 1, "feedback": "too strong", "outcome": "e-stop"})
            stim.estop("patient asked to stop")
            time.sleep(0.3)
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


def test_pdf_report_text_and_rendering(session_record: Path, tmp_path: Path) -> None:
    from pypdf import PdfReader
    import pypdfium2

    pdf = write_report(read_session(session_record), verify_record(session_record), tmp_path / "visit.pdf")
    pages = PdfReader(pdf).pages
    assert 1 <= len(pages) <= 2
    text = " ".join(p.extract_text() for p in pages)
    for expected in ("Needle e-stim session report", "JD", "SIM-0001", "left forearm to left forearm",
                     "0.25 x 15 mm", "first felt 0.4 mA", "tolerance 2.5 mA", "segmental_inhibition",
                     "100 Hz", "patient asked to stop", "too strong", "graded knee extension",
                     "Output summary at the needle", "intact and closed", "research and investigational use only"):
        assert expected in text, expected
    image = np.asarray(pypdfium2.PdfDocument(str(pdf))[1].render(scale=2).to_pil().convert("RGB"), dtype=int)
    red = (image[..., 0] > 120) & (image[..., 1] < 80) & (image[..., 2] < 80)    # the stop and e-stop lines
    assert red.sum() > 100 and (image < 250).any(axis=2).mean() > 0.02


def test_fhir_bundle_validates_and_carries_the_dose(session_record: Path, tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    bundle = build_bundle(read_session(session_record), pain=(6, 3))
    again = Bundle.parse_raw(bundle.json())                       # validates every resource again
    by_type = {}
    for entry in again.entry:
        by_type.setdefault(entry.resource.resource_type, []).append(entry.resource)
    (device,) = by_type["Device"]
    (procedure,) = by_type["Procedure"]
    assert device.serialNumber == "SIM-0001" and device.version[0].value == "1.0"
    assert procedure.status == "stopped" and procedure.usedReference[0].reference == f"Device/{device.id}"
    (dose,) = [e for e in procedure.extension if e.url == DOSE_URL]
    parts = {e.url: e for e in dose.extension}
    assert parts["channel"].valueInteger == 1 and parts["pulse-rate"].valueString == "100 Hz"
    assert float(parts["peak-intensity"].valueQuantity.value) == pytest.approx(1.0)
    assert parts["peak-intensity"].valueQuantity.code == "mA"
    pains = sorted(by_type["Observation"], key=lambda o: o.id)
    assert [o.code.coding[0].code for o in pains] == ["72514-3", "72514-3"]
    assert sorted(o.valueInteger for o in pains) == [3, 6]
    assert any("patient asked to stop" in n.text for n in procedure.note)


def test_report_and_export_commands(session_record: Path, tmp_path: Path) -> None:
    pdf, bundle = tmp_path / "visit.pdf", tmp_path / "visit.json"
    for args in (["report", str(session_record), "--out", str(pdf)],
                 ["export", str(session_record), "--fhir", str(bundle)]):
        done = subprocess.run([sys.executable, "-m", "firmware_host", "record", *args], capture_output=True,
                              text=True, env=child_env(), timeout=50)
        assert done.returncode == 0, done.stderr
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert json.loads(bundle.read_text())["resourceType"] == "Bundle"
    missing = subprocess.run([sys.executable, "-m", "firmware_host", "record", "report", str(tmp_path / "no.jsonl"),
                              "--out", str(pdf)], capture_output=True, text=True, env=child_env(), timeout=30)
    assert missing.returncode == 2 and "no such record" in missing.stderr and "Traceback" not in missing.stderr


def test_report_and_export_take_the_visit_from_the_store(tmp_path: Path) -> None:
    """A session run for a patient: screening, outcomes and plan come from the visit the record
    is linked to in the visit store; pain before and after become the LOINC 72514-3 Observations."""
    from pypdf import PdfReader

    from firmware_host.visits import Outcome, Plan, VisitStore
    from safety import Question, Screening

    record = tmp_path / "patient.jsonl"
    with TreatmentRecord(record) as rec:
        rec.append("session_plan", {"operator": "JD", "patient": "P001"})
    record_id = read_session(record).record_id
    with VisitStore() as store:
        store.add_patient("P001", "typical")
        visit = store.start_visit("P001", Screening({**Screening.all_no().answers, Question.PREGNANT: True}), "JD")
        store.link_record(visit, record_id, str(record))
        store.set_outcome(visit, Outcome(pain_before=6, pain_after=3, felt="warm, heavy", soreness=True))
        store.end_visit(visit, Plan(("loading",), "3x10 knee extension"))
    pdf, bundle = tmp_path / "visit.pdf", tmp_path / "visit.json"
    for args in (["report", str(record), "--out", str(pdf)], ["export", str(record), "--fhir", str(bundle)]):
        done = subprocess.run([sys.executable, "-m", "firmware_host", "record", *args], capture_output=True,
                              text=True, env=child_env(), timeout=50)
        assert done.returncode == 0, done.stderr
    text = " ".join(p.extract_text() for p in PdfReader(pdf).pages)
    for expected in ("P001", "yes: pregnant", "pain (0-10): 6 before, 3 after", "warm, heavy", "soreness",
                     "loading; 3x10 knee extension"):
        assert expected in text, expected
    entries = json.loads(bundle.read_text())["entry"]
    pains = [e["resource"] for e in entries if e["resource"]["resourceType"] == "Observation"]
    assert sorted(p["valueInteger"] for p in pains) == [3, 6]
    assert all(p["code"]["coding"][0]["code"] == "72514-3" for p in pains)
