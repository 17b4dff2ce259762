"""The FHIR document Bundle pushed to the electronic health record, following the HL7 Vietnam VN Core IG.

Shape (FHIR R4 Bundle rules bdl-9/bdl-10 for documents): ``Bundle.type = document`` with an identifier
(``urn:ietf:rfc:3986``, a ``urn:uuid``) and a timestamp; the first entry is the Composition (identifier,
type, subject, date, author 1..*, title, custodian — the facility by its MA_CSKCB in VNCoreProvider's
MaCSKCB system — and sections), then every resource it or another entry references, each with a
``fullUrl`` so relative references (``Patient/12``) resolve inside the Bundle. The VN Core IG (github
hl7vn/vn-core-ig) defines no Bundle or Composition profile, so those two claim none; the entries claim the
IG's where they conform (:mod:`emr.exports.vn_core`). The patient is VNCorePatient (TheCCCD slice,
``http://fhir.ehealth.gov.vn/core/sid/national_id``), diagnoses are ICD-10 Conditions
that Encounter.diagnosis names with their role (DiagnosisRole AD, CC, CM, DD;
:func:`emr.exports.fhir.visit_diagnoses`),
images are ImagingStudy (with the ServiceRequest they are based on), the
signed report is a DiagnosticReport whose ``presentedForm`` is the signed
PDF; other signed documents of the visit are DocumentReferences.

The resources come from :mod:`emr.exports.fhir` (one builder per resource,
shared with the FHIR API and the exports). Everything in the Bundle is
derived from stored data (no "now" inside the entries), so the same content
always gives the same :func:`content_key`; only ``Bundle.timestamp`` and the
ids derived from the key differ between two builds.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import rfc8785
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import local_isoformat, utcnow
from emr.core.settings import EmrSettings
from emr.exports.fhir import (
    SYSTEMS,
    Ctx,
    VisitDiagnoses,
    diagnostic_report_resource,
    document_reference_resource,
    encounter_resource,
    facility_identifier,
    imaging_study_resource,
    patient_resource,
    service_request_resource,
    validated,
    visit_diagnoses,
)
from emr.exports.records import latest_signed
from emr.exports.vn_core import OWN
from emr.i18n import t
from emr.models import Document, Encounter, ImagingOrder, Patient, Study, User
from emr.signing.service import DbArtifacts

__all__ = [
    "Built",
    "content_key",
    "report_bundle",
    "visit_bundle",
]

_LOINC = "http://loinc.org"
# Composition.type: FHIR document type codes (LOINC), the binding VNCoreComposition prefers.
_VISIT_TYPE = ("34133-9", "Summary of episode note")
_REPORT_TYPE = ("18748-4", "Diagnostic imaging study")
# Section codes (LOINC), as in the IPS-style sections the VN Core IG maps to; the Vietnamese section title a
# person reads is ehr.section.<name> in the catalogue.
_SECTIONS = {
    "diagnoses": ("29548-5", "Diagnosis Narrative"),
    "imaging": ("18726-0", "Radiology studies (set)"),
    "documents": ("55108-5", "Clinical presentation Document"),
}


class Built:
    """A Bundle and what the outbox needs to know about it."""

    def __init__(self, bundle: dict[str, Any], key: str, subject: str, patient_id: int) -> None:
        self.bundle = bundle
        self.key = key
        self.subject = subject
        self.patient_id = patient_id


def _ctx(session: Session, settings: EmrSettings) -> Ctx:
    base = settings.public_url.rstrip("/")
    return Ctx(session, base, f"{base}/dicomweb", DbArtifacts())


def _full_url(settings: EmrSettings, resource: dict[str, Any]) -> str:
    """``<public URL>/fhir/<Type>/<id>``: relative references in the entries resolve against it (FHIR R4 Bundle)."""
    return f"{settings.public_url.rstrip('/')}/fhir/{resource['resourceType']}/{resource['id']}"


def _section(name: str, refs: list[dict[str, Any]], lines: list[str]) -> dict[str, Any]:
    code, display = _SECTIONS[name]
    title = t(f"ehr.section.{name}")
    from xml.sax.saxutils import escape

    items = "".join(f"<li>{escape(line)}</li>" for line in lines) or "<li>—</li>"
    section: dict[str, Any] = {
        "title": title,
        "code": {"coding": [{"system": _LOINC, "code": code, "display": display}]},
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><ul>{items}</ul></div>'},
    }
    if refs:
        section["entry"] = refs
    return section


def _ref(resource: dict[str, Any]) -> dict[str, Any]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _author(session: Session, user_id: int | None, settings: EmrSettings) -> dict[str, Any]:
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        return {"display": settings.hospital_name}
    ref: dict[str, Any] = {"display": user.full_name}
    if user.practising_cert_no:
        ref["identifier"] = {"system": SYSTEMS["cchn"], "value": user.practising_cert_no}
    return ref


def _custodian(settings: EmrSettings) -> dict[str, Any]:
    """The facility: its name, and its MA_CSKCB once set (the default 00000 is no facility's code)."""
    ref: dict[str, Any] = {"display": settings.hospital_name}
    if settings.facility_code and settings.facility_code != "00000":
        ref["identifier"] = facility_identifier(settings.facility_code)
    return ref


def content_key(entries: list[dict[str, Any]]) -> str:
    """SHA-256 of the entries in RFC 8785 canonical JSON: same content, same key."""
    return hashlib.sha256(rfc8785.dumps(entries)).hexdigest()


def _assemble(
    settings: EmrSettings, composition: dict[str, Any], resources: list[dict[str, Any]], patient: Patient, subject: str
) -> Built:
    entries = [{"fullUrl": _full_url(settings, r), "resource": validated(r)} for r in [composition, *resources]]
    key = content_key(entries)
    bundle_id = str(uuid.UUID(key[:32]))
    bundle = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "language": "vi",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
        "type": "document",
        "timestamp": local_isoformat(utcnow()),
        "entry": entries,
    }
    return Built(validated(bundle), key, subject, patient.id)


def _imaging(ctx: Ctx, orders: list[ImagingOrder]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ServiceRequests and the ImagingStudies based on them."""
    requests = [service_request_resource(ctx, o) for o in orders]
    ids = [o.id for o in orders]
    studies = ctx.session.scalars(select(Study).where(Study.order_id.in_(ids)).order_by(Study.id)).all() if ids else []
    return requests, [imaging_study_resource(ctx, st) for st in studies]


@dataclass
class _Visit:
    """What every Bundle carries: the patient, the visit and its diagnoses."""

    ctx: Ctx
    patient: Patient
    encounter: Encounter
    patient_res: dict[str, Any]
    encounter_res: dict[str, Any]
    diagnoses: VisitDiagnoses

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return self.diagnoses.conditions

    def diagnoses_section(self, fallback: str = "") -> dict[str, Any]:
        """The diagnoses, one line per role in the visit (Encounter.diagnosis), each Condition referenced once."""
        return _section("diagnoses", [_ref(c) for c in self.conditions], self.diagnoses.lines() or [fallback])

    def composition(
        self, cid: str, ident: tuple[str, str], kind: tuple[str, str], title: str, date: str,
        author: dict[str, Any], sections: list[dict[str, Any]], settings: EmrSettings,
    ) -> dict[str, Any]:
        return {
            "resourceType": "Composition",
            "id": cid,
            "language": "vi",
            "identifier": {"system": ident[0], "value": ident[1]},
            "status": "final",
            "type": {"coding": [{"system": _LOINC, "code": kind[0], "display": kind[1]}]},
            "subject": _ref(self.patient_res),
            "encounter": _ref(self.encounter_res),
            "date": date,
            "author": [author],
            "title": title,
            "custodian": _custodian(settings),
            "section": sections,
        }

    def assemble(
        self, settings: EmrSettings, composition: dict[str, Any], more: list[dict[str, Any]], subject: str
    ) -> Built:
        resources = [self.patient_res, self.encounter_res, *self.conditions, *more]
        return _assemble(settings, composition, resources, self.patient, subject)


def _visit(session: Session, settings: EmrSettings, encounter_id: int) -> _Visit:
    enc = session.get(Encounter, encounter_id)
    assert enc is not None
    patient = session.get(Patient, enc.patient_id)
    assert patient is not None
    ctx = _ctx(session, settings)
    diagnoses = visit_diagnoses(ctx, enc)  # the Conditions are entries; the Encounter references them
    return _Visit(ctx, patient, enc, patient_resource(ctx, patient), encounter_resource(ctx, enc, diagnoses),
                  diagnoses)


def visit_bundle(session: Session, settings: EmrSettings, encounter_id: int) -> Built:
    """The summary of one closed visit: diagnoses, imaging, its signed reports and documents."""
    v = _visit(session, settings, encounter_id)
    enc = v.encounter
    orders = list(
        session.scalars(
            select(ImagingOrder)
            .where(ImagingOrder.encounter_id == enc.id, ImagingOrder.status != "cancelled")
            .order_by(ImagingOrder.id)
        )
    )
    requests, studies = _imaging(v.ctx, orders)
    docs = [
        d
        for d in session.scalars(select(Document).where(Document.encounter_id == enc.id).order_by(Document.id))
        if d.status != "cancelled" and latest_signed(d) is not None
    ]
    reports = [diagnostic_report_resource(v.ctx, d) for d in docs if d.form_type == "radiology_report"]
    others = [document_reference_resource(v.ctx, d) for d in docs if d.form_type != "radiology_report"]
    images = [*studies, *reports]
    sections = [
        v.diagnoses_section(enc.discharge_diagnosis or ""),
        _section("imaging", [_ref(r) for r in images],
                 [r.get("conclusion") or r.get("description") or r["resourceType"] for r in images]),
    ]
    if others:
        sections.append(_section("documents", [_ref(r) for r in others], [r["type"]["text"] for r in others]))
    title = t("ehr.subject.visit", code=enc.visit_code)  # also the Composition's title (Vietnamese document)
    composition = v.composition(
        f"visit-{enc.id}", (OWN["visit_summary"], enc.visit_code), _VISIT_TYPE, title,
        local_isoformat(enc.closed_at or enc.admitted_at), _author(session, enc.attending_id, settings),
        sections, settings,
    )
    return v.assemble(settings, composition, [*requests, *images, *others], title)


def report_bundle(session: Session, settings: EmrSettings, document_id: int) -> Built:
    """One signed imaging report with its patient, visit, diagnoses, order and studies."""
    doc = session.get(Document, document_id)
    assert doc is not None
    version = latest_signed(doc)
    assert version is not None, "only signed reports are pushed"
    v = _visit(session, settings, doc.encounter_id)
    order = session.get(ImagingOrder, doc.order_id) if doc.order_id else None
    requests, studies = _imaging(v.ctx, [order] if order is not None else [])
    report = diagnostic_report_resource(v.ctx, doc)
    sections = [
        _section("imaging", [_ref(r) for r in [report, *studies]], [report.get("conclusion") or ""]),
        v.diagnoses_section(),
    ]
    number = f"{doc.id}-v{version.number}"
    composition = v.composition(
        f"report-{number}", (OWN["document"], number), _REPORT_TYPE,
        t("ehr.title.report"), local_isoformat(version.signed_at or version.created_at),
        _author(session, version.signed_by, settings), sections, settings,
    )
    subject = t("ehr.subject.report", code=number)
    return v.assemble(settings, composition, [*requests, *studies, report], subject)
