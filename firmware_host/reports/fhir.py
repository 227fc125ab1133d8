"""FHIR export of a session: a `collection` Bundle of Device, Procedure and (when pain
scores were taken) Observations, built with the `fhir.resources` R4B models (FHIR 4.3, the
R4-compatible line), so every resource is validated as it is made.

- Device: the stimulator (serial number, firmware as `version`).
- Procedure: the session (status `completed`, or `stopped` when a stop ended it; the
  period; the clinician as performer; the device as `usedReference`; the target
  mechanism as `reasonCode` text; every stop, fault and patient remark as a `note`). The
  dose is carried per channel in the `channel-dose` extension (see `DOSE_URL` and the
  README): channel, the two needle sites, needle size, pulse rates, phase widths, peak
  intensity, delivered charge and time at output, from the device's readings.
- Observation (LOINC 72514-3, pain severity 0-10 verbal numeric rating), one before and
  one after the session, when the visit recorded them.
"""

from __future__ import annotations

from typing import Any

from .session import Session, output_summaries

DOSE_URL = "https://needle-estim.invalid/fhir/StructureDefinition/channel-dose"
"""Canonical URL of our dose extension (`.invalid` until the product has a registered base)."""
PATIENT_CODE_SYSTEM = "urn:needle-estim:patient-code"
RECORD_SYSTEM = "urn:needle-estim:treatment-record"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def build_bundle(session: Session, pain: tuple[int | None, int | None] = (None, None)) -> Any:
    """A validated R4B Bundle for the session; `pain` is (before, after) on 0-10 when known."""
    from fhir.resources.R4B.bundle import Bundle, BundleEntry
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.period import Period
    from fhir.resources.R4B.procedure import Procedure, ProcedurePerformer
    from fhir.resources.R4B.reference import Reference

    rid = session.record_id or "unknown"
    subject = Reference(identifier=Identifier(system=PATIENT_CODE_SYSTEM, value=session.patient_code),
                        display=f"patient {session.patient_code}") if session.patient_code else \
        Reference(display="patient not identified in the treatment record")
    device = Device(
        id=f"device-{_safe(session.device['serial'] or 'unknown')}",
        serialNumber=session.device["serial"],
        deviceName=[DeviceDeviceName(name="needle e-stim stimulator", type="user-friendly-name")],
        version=[DeviceVersion(value=session.device["firmware"])] if session.device["firmware"] else None,
    )
    stopped = bool(session.stops) and not session.session_end
    procedure = Procedure(
        id=f"session-{rid}",
        identifier=[Identifier(system=RECORD_SYSTEM, value=rid)],
        status="stopped" if stopped else "completed",
        code=CodeableConcept(text="Electroacupuncture: electrical stimulation through acupuncture needles"),
        subject=subject,
        performedPeriod=Period(start=session.started, end=session.ended),
        performer=[ProcedurePerformer(actor=Reference(display=session.operator))] if session.operator else None,
        usedReference=[Reference(reference=f"Device/{device.id}")],
        reasonCode=[CodeableConcept(text=f"target mechanism: {session.plan['mechanism']}")]
        if session.plan.get("mechanism") else None,
        note=_notes(session) or None,
        extension=_dose_extensions(session) or None,
    )
    resources: list[Any] = [device, procedure]
    for when, score in zip(("before", "after"), pain):
        if score is not None:
            resources.append(_pain(session, rid, when, score, subject, procedure.id))
    return Bundle(type="collection", identifier=Identifier(system=RECORD_SYSTEM, value=rid),
                  entry=[BundleEntry(fullUrl=f"urn:uuid:{_uuid(rid, r.id)}", resource=r) for r in resources])


def _pain(session: Session, rid: str, when: str, score: int, subject: Any, procedure_id: str) -> Any:
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.coding import Coding
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.reference import Reference

    return Observation(
        id=f"pain-{when}-{rid}",
        status="final",
        category=[CodeableConcept(coding=[Coding(system="http://terminology.hl7.org/CodeSystem/observation-category",
                                                 code="survey")])],
        code=CodeableConcept(coding=[Coding(system=LOINC, code="72514-3",
                                            display="Pain severity - 0-10 verbal numeric rating [Score] - Reported")],
                             text=f"pain {when} the session"),
        subject=subject,
        effectiveDateTime=session.started if when == "before" else session.ended,
        valueInteger=score,
        partOf=[Reference(reference=f"Procedure/{procedure_id}")],
    )


def _dose_extensions(session: Session) -> list[Any]:
    from fhir.resources.R4B.extension import Extension
    from fhir.resources.R4B.quantity import Quantity

    summaries = {s.channel: s for s in output_summaries(session)[0]}
    sites = session.setup.get("sites") or {}
    out = []
    for o in session.outputs:
        summary = summaries.get(o.channel)
        parts = [Extension(url="channel", valueInteger=o.channel)]
        parts += [Extension(url=f"site-{ab}", valueString=site) for ab, site in zip("ab", sites.get(str(o.channel), []))]
        needle = summary.needle if summary is not None else None
        if needle is not None:
            parts.append(Extension(url="needle", valueString=f"{needle.diameter_mm:g} x {needle.length_mm:g} mm"))
        parts += [
            Extension(url="pulse-rate", valueString="/".join(f"{f:g}" for f in sorted(o.frequencies_hz)) + " Hz"),
            Extension(url="phase-width", valueString="/".join(f"{w:g}" for w in sorted(o.pulse_widths_us)) + " us"),
            Extension(url="peak-intensity", valueQuantity=_q(Quantity, o.peak_ma, "mA")),
            Extension(url="delivered-charge", valueQuantity=_q(Quantity, o.charge_device_uc, "uC")),
            Extension(url="time-at-output", valueQuantity=_q(Quantity, round(o.on_s, 1), "s")),
        ]
        if summary is not None and summary.max_shannon_k is not None:
            parts.append(Extension(url="max-shannon-k", valueDecimal=round(summary.max_shannon_k, 3)))
        out.append(Extension(url=DOSE_URL, extension=parts))
    return out


def _q(quantity: Any, value: float, unit: str) -> Any:
    return quantity(value=value, unit=unit.replace("u", "µ") if unit == "uC" else unit, system=UCUM, code=unit)


def _notes(session: Session) -> list[Any]:
    from fhir.resources.R4B.annotation import Annotation

    texts = [f"stopped: {reason}" for reason in session.stops]
    texts += [f"device fault {f.get('code')} on {'the device' if f.get('channel') is None else 'channel ' + str(f.get('channel'))}"
              for f in session.faults]
    texts += [f"patient, channel {f.get('channel')}: {f.get('feedback')} ({f.get('outcome', '')})" for f in session.feedback]
    if session.plan.get("integration_plan"):
        texts.append(f"integration plan: {session.plan['integration_plan']}")
    return [Annotation(text=t) for t in texts]


def _safe(text: str) -> str:
    """A FHIR id: letters, digits, '-' and '.', at most 64 characters."""
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:48] or "unknown"


def _uuid(record_id: str, resource_id: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{RECORD_SYSTEM}:{record_id}:{resource_id}"))
