"""FHIR export of a session: a `transaction` Bundle an EHR can take, built with the
`fhir.resources` R4B models (FHIR 4.3, whose resources used here are R4's), so every resource
is validated as it is made (the tests read the bundle back as R4 4.0.1 too, with `fhirclient`).

Every entry has a `urn:uuid:` fullUrl and a request (`POST`, the patient and the device only
if none exists yet with their identifier), and every reference is one of those fullUrls.

- Patient: by identifier, the clinic's code under the clinic's own identifier system (a
  setting: `--patient-system` or `ESTIM_PATIENT_SYSTEM`; no product-wide system stands in).
- Device: the stimulator (serial number as identifier, firmware as `version`).
- Procedure: the session, coded with CPT 97813 (acupuncture with electrical stimulation,
  initial 15 minutes; the additional 15-minute units, CPT 97814, in a note); no SNOMED CT
  concept for electroacupuncture could be checked here, so none is claimed. Status from
  what happened: `not-done` (never reached the device, or no output), `stopped` (a stop,
  fault or lost link ended it, or its record was not closed), `completed`. Narrative text;
  the target mechanism as `reasonCode`; stops, faults, patient remarks, the integration plan
  and the record's check as notes; the dose per channel in the `channel-dose` extension
  (`DOSE_URL`), every value a Quantity in UCUM units.
- Observations: pain before and after (LOINC 72514-3, 0-10), each stamped when it was
  recorded; each threshold measured (mA), stamped when measured.
- AdverseEvent: each adverse event the visit recorded, with the procedure as suspect.
"""

from __future__ import annotations

import uuid
from html import escape
from typing import Any

from .session import Session, output_summaries

DOSE_URL = "https://needle-estim.invalid/fhir/StructureDefinition/channel-dose"
"""Canonical URL of our dose extension (`.invalid` until the product has a registered base)."""
RECORD_SYSTEM = "urn:needle-estim:treatment-record"
DEVICE_SYSTEM = "urn:needle-estim:device-serial"
LOINC, UCUM, CPT = "http://loinc.org", "http://unitsofmeasure.org", "http://www.ama-assn.org/go/cpt"
CPT_INITIAL = ("97813", "Acupuncture, 1 or more needles; with electrical stimulation, initial 15 minutes of personal "
                        "one-on-one contact with the patient")
CPT_ADDITIONAL = "97814"
THRESHOLD_NAMES = {"sensory": "first felt (sensory threshold)", "motor": "visible twitch (motor threshold)",
                   "tolerance": "tolerance threshold"}


class ExportRefused(ValueError):
    """The session cannot be exported as asked (no patient, no identifier system)."""


def build_bundle(session: Session, verdict: Any, visit: Any = None, patient_system: str | None = None) -> Any:
    """A validated transaction Bundle for the session; `verdict` is the record's check and
    `visit` the visit store's visit the record belongs to, if any."""
    from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.meta import Meta

    if not session.patient_code:
        raise ExportRefused("this session was run without --patient: a FHIR procedure needs the patient it was for")
    if not patient_system:
        raise ExportRefused("give the clinic's identifier system for patient codes: --patient-system URI or "
                            "ESTIM_PATIENT_SYSTEM (e.g. https://clinic.example/patients)")
    rid = session.record_id or "unknown"
    urls: dict[str, str] = {}

    def url(name: str) -> str:
        return urls.setdefault(name, f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{RECORD_SYSTEM}:{rid}:{name}')}")

    entries: list[tuple[Any, str, str | None]] = []
    patient = _patient(session.patient_code, patient_system)
    entries.append((patient, url("patient"), f"identifier={patient_system}|{session.patient_code}"))
    device = _device(session)
    entries.append((device, url("device"), f"identifier={DEVICE_SYSTEM}|{session.device['serial']}"
                    if session.device["serial"] else None))
    procedure = _procedure(session, verdict, visit, url)
    entries.append((procedure, url("procedure"), None))
    outcome = visit.outcome if visit is not None else None
    for when, score, at in (("before", outcome and outcome.pain_before, outcome and outcome.pain_before_at),
                            ("after", outcome and outcome.pain_after, None)):
        if score is not None:
            entries.append((_pain(when, score, at.isoformat() if at else session.ended, url), url(f"pain-{when}"),
                            None))
    for n, (channel, kind, value, when) in enumerate(_thresholds(session, visit)):
        entries.append((_threshold(session, channel, kind, value, when, url), url(f"threshold-{n}"), None))
    for n, event in enumerate(outcome.adverse_events if outcome is not None else []):
        entries.append((_adverse_event(event, session, url), url(f"adverse-{n}"), None))
    tags = [] if verdict.closed else [_coding(RECORD_SYSTEM, f"record-{verdict.status.name.lower()}",
                                              f"treatment record {verdict.status.value}")]
    return Bundle(type="transaction", identifier=Identifier(system=RECORD_SYSTEM, value=rid),
                  meta=Meta(tag=tags) if tags else None,
                  entry=[BundleEntry(fullUrl=full_url, resource=resource,
                                     request=BundleEntryRequest(method="POST", url=resource.resource_type,
                                                                ifNoneExist=if_none))
                         for resource, full_url, if_none in entries])


def _coding(system: str, code: str, display: str | None = None) -> Any:
    from fhir.resources.R4B.coding import Coding

    return Coding(system=system, code=code, display=display)


def _narrative(lines: list[str]) -> Any:
    from fhir.resources.R4B.narrative import Narrative

    return Narrative(status="generated", div='<div xmlns="http://www.w3.org/1999/xhtml">'
                     + "".join(f"<p>{escape(line)}</p>" for line in lines) + "</div>")


def _ref(target: str, display: str | None = None) -> Any:
    from fhir.resources.R4B.reference import Reference

    return Reference(reference=target, display=display)


def _patient(code: str, system: str) -> Any:
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.patient import Patient

    return Patient(identifier=[Identifier(system=system, value=code)],
                   text=_narrative([f"Patient {code} (the clinic's code; no name is kept)"]))


def _device(session: Session) -> Any:
    from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
    from fhir.resources.R4B.identifier import Identifier

    serial, firmware = session.device["serial"], session.device["firmware"]
    return Device(
        identifier=[Identifier(system=DEVICE_SYSTEM, value=serial)] if serial else None,
        serialNumber=serial,
        deviceName=[DeviceDeviceName(name="needle e-stim stimulator", type="user-friendly-name")],
        version=[DeviceVersion(value=firmware)] if firmware else None,
        text=_narrative([f"Needle e-stim stimulator, serial {serial or 'not recorded'}, firmware "
                         f"{firmware or 'not recorded'}"]))


def status_of(session: Session, verdict: Any) -> str:
    """What happened: never reached the device or delivered nothing, ended early, or completed."""
    if session.not_started or not session.outputs:
        return "not-done"
    if session.stops or session.faults or not session.closed or not verdict.closed:
        return "stopped"
    return "completed"


def _procedure(session: Session, verdict: Any, visit: Any, url: Any) -> Any:
    from fhir.resources.R4B.annotation import Annotation
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.period import Period
    from fhir.resources.R4B.procedure import Procedure, ProcedurePerformer

    status = status_of(session, verdict)
    minutes = _minutes(session)
    notes = _notes(session, verdict, visit)
    if minutes > 22.5:
        extra = int((minutes - 15 + 7.5) // 15)
        notes.append(f"CPT {CPT_ADDITIONAL} x {extra}: each additional 15 minutes of personal one-on-one contact")
    mechanism = session.plan.get("mechanism")
    return Procedure(
        identifier=[Identifier(system=RECORD_SYSTEM, value=session.record_id or "unknown")],
        status=status,
        code=CodeableConcept(coding=[_coding(CPT, *CPT_INITIAL)],
                             text="Electroacupuncture: electrical stimulation through acupuncture needles"),
        subject=_ref(url("patient"), f"patient {session.patient_code}"),
        performedPeriod=Period(start=session.started, end=session.ended),
        performer=[ProcedurePerformer(actor=_ref(url("device"), "needle e-stim stimulator"))]
        + ([ProcedurePerformer(actor=_display(session.operator))] if session.operator else []),
        usedReference=[_ref(url("device"))],
        reasonCode=[CodeableConcept(text=f"target mechanism: {mechanism}")] if mechanism else None,
        note=[Annotation(text=t) for t in notes] or None,
        extension=_dose_extensions(session) or None,
        text=_narrative([f"Electroacupuncture session for patient {session.patient_code}, {status}, "
                         f"{session.started} to {session.ended} ({minutes:.1f} min), by {session.operator or 'not recorded'}."]
                        + notes),
    )


def _display(name: str) -> Any:
    from fhir.resources.R4B.reference import Reference

    return Reference(display=name)


def _minutes(session: Session) -> float:
    from datetime import datetime

    if not session.started or not session.ended:
        return 0.0
    return (datetime.fromisoformat(session.ended) - datetime.fromisoformat(session.started)).total_seconds() / 60


def _pain(when: str, score: int, at: str | None, url: Any) -> Any:
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.observation import Observation

    return Observation(
        status="final",
        category=[CodeableConcept(coding=[_coding("http://terminology.hl7.org/CodeSystem/observation-category",
                                                  "survey")])],
        code=CodeableConcept(coding=[_coding(LOINC, "72514-3",
                                             "Pain severity - 0-10 verbal numeric rating [Score] - Reported")],
                             text=f"pain {when} the session"),
        subject=_ref(url("patient")), effectiveDateTime=at, valueInteger=score, partOf=[_ref(url("procedure"))],
        text=_narrative([f"Pain {when} the session: {score} of 10"]))


def _thresholds(session: Session, visit: Any) -> list[tuple[int, str, float, str | None]]:
    """(channel, kind, mA, when measured) from the visit's titrations, else the record's."""
    out = []
    if visit is not None and visit.thresholds:
        for t in visit.thresholds:
            for kind in THRESHOLD_NAMES:
                value = getattr(t, f"{kind}_ma")
                if value is not None:
                    out.append((t.channel, kind, value, t.measured_at.isoformat()))
        return out
    for t in session.thresholds:
        for kind in THRESHOLD_NAMES:
            if t.get(kind) is not None:
                out.append((int(t.get("channel", 0)), kind, float(t[kind]), t.get("t") or session.started))
    return out


def _threshold(session: Session, channel: int, kind: str, value: float, when: str | None, url: Any) -> Any:
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.observation import Observation

    sites = (session.setup.get("sites") or {}).get(str(channel), [])
    return Observation(
        status="final",
        code=CodeableConcept(text=f"{THRESHOLD_NAMES[kind]} to electrical stimulation through needles"),
        subject=_ref(url("patient")), effectiveDateTime=when, valueQuantity=_q(value, "mA"),
        bodySite=CodeableConcept(text=" to ".join(sites)) if sites else None,
        partOf=[_ref(url("procedure"))], device=_ref(url("device")),
        text=_narrative([f"Channel {channel}: {THRESHOLD_NAMES[kind]} {value:g} mA"]))


def _adverse_event(event: str, session: Session, url: Any) -> Any:
    from fhir.resources.R4B.adverseevent import AdverseEvent, AdverseEventSuspectEntity
    from fhir.resources.R4B.codeableconcept import CodeableConcept

    return AdverseEvent(actuality="actual", subject=_ref(url("patient")), event=CodeableConcept(text=event),
                        date=session.ended, suspectEntity=[AdverseEventSuspectEntity(instance=_ref(url("procedure")))],
                        text=_narrative([f"Adverse event after electroacupuncture: {event}"]))


def _dose_extensions(session: Session) -> list[Any]:
    from fhir.resources.R4B.extension import Extension

    summaries = {s.channel: s for s in output_summaries(session)[0]}
    sites = session.setup.get("sites") or {}
    out = []
    for o in session.outputs:
        summary = summaries.get(o.channel)
        parts = [Extension(url="channel", valueInteger=o.channel)]
        parts += [Extension(url=f"site-{ab}", valueString=site) for ab, site in zip("ab", sites.get(str(o.channel), []))]
        needle = summary.needle if summary is not None else None
        if needle is not None:
            parts += [Extension(url="needle-diameter", valueQuantity=_q(needle.diameter_mm, "mm")),
                      Extension(url="inserted-depth", valueQuantity=_q(needle.length_mm, "mm"))]
        parts += [Extension(url="pulse-rate", valueQuantity=_q(f, "Hz")) for f in sorted(o.frequencies_hz)]
        parts += [Extension(url="phase-width", valueQuantity=_q(w, "us")) for w in sorted(o.pulse_widths_us)]
        parts += [
            Extension(url="peak-intensity", valueQuantity=_q(o.peak_ma, "mA")),
            Extension(url="delivered-charge", valueQuantity=_q(o.charge_device_uc, "uC")),
            Extension(url="time-at-output", valueQuantity=_q(round(o.on_s, 1), "s")),
        ]
        if summary is not None and summary.max_shannon_k is not None:
            parts.append(Extension(url="max-shannon-k", valueDecimal=round(summary.max_shannon_k, 3)))
        out.append(Extension(url=DOSE_URL, extension=parts))
    return out


def _q(value: float, unit: str) -> Any:
    from fhir.resources.R4B.quantity import Quantity

    return Quantity(value=value, unit={"uC": "µC", "us": "µs"}.get(unit, unit), system=UCUM, code=unit)


def _notes(session: Session, verdict: Any, visit: Any) -> list[str]:
    texts = [] if verdict.closed else [f"treatment record check: {verdict.status.value}: {verdict.reason}"]
    texts += [f"stopped: {reason}" for reason in session.stops]
    texts += [f"device fault {f.get('code')} on "
              f"{'the device' if f.get('channel') is None else 'channel ' + str(f.get('channel'))}"
              for f in session.faults]
    texts += [f"patient, channel {f.get('channel')}: {f.get('feedback')} ({f.get('outcome', '')})"
              for f in session.feedback]
    plan = visit.plan if visit is not None else None
    if plan is not None:
        texts.append("integration plan: " + "; ".join([*plan.kinds, plan.text] if plan.text else plan.kinds))
    elif session.plan.get("integration_plan"):
        texts.append(f"integration plan: {session.plan['integration_plan']}")
    return texts
