"""The live FHIR API's reads and searches: FHIR search parameters → SQL → validated resources.

The resources themselves are built in :mod:`emr.exports.fhir` (shared with the exports).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from emr.core.clock import to_utc
from emr.core.states import StudyState
from emr.exports.artifacts import ArtifactSource, NoArtifacts
from emr.exports.fhir import (
    RESOURCE_TYPES,
    SYSTEMS,
    Ctx,
    FhirError,
    audit_event_resource,
    diagnostic_report_resource,
    document_reference_resource,
    encounter_resource,
    imaging_study_resource,
    patient_resource,
    provenance_resource,
    service_request_resource,
    validated,
)
from emr.models import (
    AuditEntry,
    Document,
    DocumentVersion,
    Encounter,
    ImagingOrder,
    Patient,
    Study,
)

__all__ = ["SearchResult", "capability_statement", "read_resource", "search_resources"]


# -- reads and searches ---------------------------------------------------------
@dataclass
class SearchResult:
    resources: list[dict[str, Any]]
    total: int
    patient_ids: set[int]


def _id(value: str) -> int:
    if not re.fullmatch(r"\d{1,10}", value) or int(value) > 2**31 - 1:
        raise FhirError(f"unknown id {value!r}", 404, "not-found")
    return int(value)


_PREFIX = re.compile(r"^(eq|ge|le|gt|lt)?(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}(:\d{2})?)?$")


def _date_clause(column: Any, values: list[str], *, local_dates: bool = True) -> list[Any]:
    """FHIR date search (eq/ge/le/gt/lt, day or minute precision) on a naive-UTC column."""
    clauses = []
    for raw in values:
        m = _PREFIX.match(raw)
        if not m:
            raise FhirError(f"bad date {raw!r}: use [eq|ge|le|gt|lt]YYYY-MM-DD[THH:MM]")
        prefix = m.group(1) or "eq"
        if m.group(3):
            start = datetime.fromisoformat(m.group(2) + m.group(3))
            end = start + timedelta(minutes=1)
        else:
            start = datetime.combine(date.fromisoformat(m.group(2)), datetime.min.time())
            end = start + timedelta(days=1)
        if local_dates:
            start, end = to_utc(start), to_utc(end)
        clauses.append(
            {
                "eq": and_(column >= start, column < end),
                "ge": column >= start,
                "gt": column >= end,
                "le": column < end,
                "lt": column < start,
            }[prefix]
        )
    return clauses


def _token(value: str) -> tuple[str | None, str]:
    system, sep, code = value.partition("|")
    return (system or None, code) if sep else (None, value)


def _patient_filter(args: dict[str, list[str]], column: Any) -> list[Any]:
    out = []
    for v in args.get("patient", []) + args.get("subject", []):
        out.append(column == _id(v.removeprefix("Patient/")))
    return out


_SEARCH_PARAMS: dict[str, set[str]] = {
    "Patient": {"identifier", "name", "birthdate", "_id"},
    "Encounter": {"patient", "subject", "date", "identifier", "_id"},
    "ServiceRequest": {"patient", "subject", "identifier", "authored", "encounter", "_id"},
    "ImagingStudy": {"patient", "subject", "identifier", "started", "_id"},
    "DiagnosticReport": {"patient", "subject", "identifier", "date", "based-on", "_id"},
    "DocumentReference": {"patient", "subject", "date", "encounter", "_id"},
    "Provenance": {"patient", "target", "recorded", "_id"},
    "AuditEvent": {"patient", "date", "action", "_id"},
}


def _order_ids_for_accession(session: Session, value: str) -> Select[Any]:
    return select(ImagingOrder.id).where(ImagingOrder.accession_number == value)


def _query(session: Session, kind: str, args: dict[str, list[str]]) -> Select[Any]:  # noqa: C901 - one branch per type
    unknown = set(args) - _SEARCH_PARAMS[kind] - {"_count", "_format"}
    if unknown:
        raise FhirError(f"unsupported search parameter(s) for {kind}: {', '.join(sorted(unknown))}")
    ids = [_id(x) for v in args.get("_id", []) for x in v.split(",")]
    q: Select[Any]
    if kind == "Patient":
        q = select(Patient)
        if ids:
            q = q.where(Patient.id.in_(ids))
        for v in args.get("identifier", []):
            system, code = _token(v)
            cols: dict[str, list[Any]] = {
                SYSTEMS["cccd"]: [Patient.cccd],
                SYSTEMS["bhyt"]: [Patient.bhyt_number, Patient.bhyt_ssn],
                SYSTEMS["patient"]: [Patient.code],
            }
            if system is not None and system not in cols:
                raise FhirError(f"unknown identifier system {system!r}")
            targets = cols[system] if system else [Patient.cccd, Patient.bhyt_number, Patient.bhyt_ssn, Patient.code]
            q = q.where(or_(*[c == code for c in targets]))
        for v in args.get("name", []):
            from emr.core.normalize import fold

            q = q.where(Patient.search_name.startswith(fold(v)))
        for v in args.get("birthdate", []):
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                raise FhirError("birthdate must be YYYY-MM-DD")
            q = q.where(Patient.birth_date == date.fromisoformat(v))
        return q.order_by(Patient.id)
    if kind == "Encounter":
        q = select(Encounter).where(*_patient_filter(args, Encounter.patient_id))
        if ids:
            q = q.where(Encounter.id.in_(ids))
        q = q.where(*_date_clause(Encounter.admitted_at, args.get("date", [])))
        for v in args.get("identifier", []):
            q = q.where(or_(Encounter.visit_code == _token(v)[1], Encounter.record_no == _token(v)[1]))
        return q.order_by(Encounter.admitted_at, Encounter.id)
    if kind == "ServiceRequest":
        q = select(ImagingOrder).where(*_patient_filter(args, ImagingOrder.patient_id))
        if ids:
            q = q.where(ImagingOrder.id.in_(ids))
        q = q.where(*_date_clause(ImagingOrder.ordered_at, args.get("authored", [])))
        for v in args.get("identifier", []):
            q = q.where(ImagingOrder.accession_number == _token(v)[1])
        for v in args.get("encounter", []):
            q = q.where(ImagingOrder.encounter_id == _id(v.removeprefix("Encounter/")))
        return q.order_by(ImagingOrder.ordered_at, ImagingOrder.id)
    if kind == "ImagingStudy":
        q = select(Study).where(Study.state == StudyState.LINKED, *_patient_filter(args, Study.patient_id))
        if ids:
            q = q.where(Study.id.in_(ids))
        for v in args.get("identifier", []):
            system, code = _token(v)
            if system == SYSTEMS["dicom_uid"] or code.startswith("urn:oid:"):
                q = q.where(Study.study_instance_uid == code.removeprefix("urn:oid:"))
            else:
                q = q.where(Study.accession_number == code)
        for v in args.get("started", []):
            m = _PREFIX.match(v)
            if not m or m.group(3):
                raise FhirError("started must be [prefix]YYYY-MM-DD")
            day = m.group(2).replace("-", "")
            op = m.group(1) or "eq"
            col = Study.study_date
            q = q.where({"eq": col == day, "ge": col >= day, "le": col <= day, "gt": col > day, "lt": col < day}[op])
        return q.order_by(Study.id)
    if kind in ("DiagnosticReport", "DocumentReference"):
        q = select(Document).where(*_patient_filter(args, Document.patient_id))
        if kind == "DiagnosticReport":
            q = q.where(Document.form_type == "radiology_report")
        if ids:
            q = q.where(Document.id.in_(ids))
        if args.get("date"):
            signed = select(DocumentVersion.document_id).where(*_date_clause(DocumentVersion.signed_at, args["date"]))
            q = q.where(Document.id.in_(signed))
        for v in args.get("identifier", []):
            code = _token(v)[1]
            q = q.where(Document.order_id.in_(_order_ids_for_accession(session, code)))
        for v in args.get("based-on", []):
            q = q.where(Document.order_id == _id(v.removeprefix("ServiceRequest/")))
        for v in args.get("encounter", []):
            q = q.where(Document.encounter_id == _id(v.removeprefix("Encounter/")))
        return q.order_by(Document.id)
    if kind == "Provenance":
        q = select(DocumentVersion).where(DocumentVersion.signed_at.is_not(None))
        if ids:
            q = q.where(DocumentVersion.id.in_(ids))
        if args.get("patient"):
            pats = [_id(v.removeprefix("Patient/")) for v in args["patient"]]
            q = q.where(DocumentVersion.document_id.in_(select(Document.id).where(Document.patient_id.in_(pats))))
        for v in args.get("target", []):
            q = q.where(DocumentVersion.document_id == _id(v.split("/")[-1]))
        q = q.where(*_date_clause(DocumentVersion.signed_at, args.get("recorded", [])))
        return q.order_by(DocumentVersion.id)
    if kind == "AuditEvent":
        q = select(AuditEntry).where(*_patient_filter(args, AuditEntry.patient_id))
        if ids:
            q = q.where(AuditEntry.id.in_(ids))
        for v in args.get("action", []):
            q = q.where(AuditEntry.action == v)
        for raw in args.get("date", []):
            m = _PREFIX.match(raw)
            if not m:
                raise FhirError("bad date")
            day = m.group(2)  # audit times are UTC ISO strings
            op = m.group(1) or "eq"
            col = AuditEntry.at
            nxt = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
            q = q.where(
                {
                    "eq": and_(col >= day, col < nxt),
                    "ge": col >= day,
                    "gt": col >= nxt,
                    "le": col < nxt,
                    "lt": col < day,
                }[op]
            )
        return q.order_by(AuditEntry.id.desc())
    raise FhirError(f"unsupported resource type {kind}", 404, "not-supported")


_BUILDERS: dict[str, Callable[[Ctx, Any], dict[str, Any]]] = {
    "Patient": patient_resource,
    "Encounter": encounter_resource,
    "ServiceRequest": service_request_resource,
    "ImagingStudy": imaging_study_resource,
    "DiagnosticReport": diagnostic_report_resource,
    "DocumentReference": document_reference_resource,
    "Provenance": provenance_resource,
    "AuditEvent": audit_event_resource,
}


def _patient_of(kind: str, obj: Any, session: Session) -> int | None:
    if kind == "Patient":
        return int(obj.id)
    if kind == "Provenance":
        d = session.get(Document, obj.document_id)
        return d.patient_id if d else None
    return getattr(obj, "patient_id", None)


def search_resources(
    session: Session,
    kind: str,
    args: dict[str, list[str]],
    *,
    public_url: str,
    dicomweb_url: str,
    artifacts: ArtifactSource | None = None,
    limit: int = 50,
) -> SearchResult:
    """Validated resources of ``kind`` matching ``args`` (FHIR search parameters)."""
    if kind not in _BUILDERS:
        raise FhirError(f"unsupported resource type {kind}", 404, "not-supported")
    ctx = Ctx(session, public_url, dicomweb_url, artifacts or NoArtifacts())
    q = _query(session, kind, args)
    from sqlalchemy import func

    total = session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = list(session.scalars(q.limit(limit)))
    resources = [validated(_BUILDERS[kind](ctx, r)) for r in rows]
    patients = {p for r in rows if (p := _patient_of(kind, r, session)) is not None}
    return SearchResult(resources, int(total), patients)


def read_resource(
    session: Session,
    kind: str,
    ident: str,
    *,
    public_url: str,
    dicomweb_url: str,
    artifacts: ArtifactSource | None = None,
) -> tuple[dict[str, Any], int | None]:
    """One validated resource and its patient id; :class:`FhirError` 404 when absent."""
    result = search_resources(
        session, kind, {"_id": [str(_id(ident))]}, public_url=public_url, dicomweb_url=dicomweb_url, artifacts=artifacts
    )
    if not result.resources:
        raise FhirError(f"{kind}/{ident} not found", 404, "not-found")
    return result.resources[0], next(iter(result.patient_ids), None)


def capability_statement(base_url: str) -> dict[str, Any]:
    return validated(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-23",
            "kind": "instance",
            "software": {"name": "filmless"},
            "implementation": {"description": "filmless EMR FHIR API (read, search)", "url": base_url},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {"description": "Bearer token (same tokens as /api); every access is audited"},
                    "resource": [
                        {
                            "type": kind,
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {
                                    "name": p,
                                    "type": "date"
                                    if p in ("date", "birthdate", "authored", "started", "recorded")
                                    else (
                                        "reference"
                                        if p in ("patient", "subject", "encounter", "based-on", "target")
                                        else "token"
                                    ),
                                }
                                for p in sorted(_SEARCH_PARAMS[kind])
                            ],
                        }
                        for kind in RESOURCE_TYPES
                    ],
                }
            ],
        }
    )
