"""The live FHIR API's reads and searches: FHIR search parameters → SQL → validated resources.

The resources themselves are built in :mod:`emr.exports.fhir` (shared with the exports); the
R4 search parameter rules (dates, tokens, references, names) are in :mod:`emr.fhir.params`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, false, or_, select
from sqlalchemy.orm import Session

from emr.core.clock import local_isoformat
from emr.core.states import StudyState
from emr.exports.artifacts import ArtifactSource, NoArtifacts
from emr.exports.fhir import (
    RESOURCE_TYPES,
    SYSTEM_ALIASES,
    SYSTEMS,
    VN_ENCOUNTER_PROFILE,
    VN_PATIENT_PROFILE,
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
from emr.fhir import params as fp
from emr.models import (
    AuditEntry,
    Document,
    DocumentVersion,
    Encounter,
    ImagingOrder,
    Patient,
    Study,
)

__all__ = ["SearchResult", "capability_statement", "known_params", "read_resource", "search_resources"]


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


def _token(value: str) -> tuple[str | None, str | None]:
    """(system, code) per R4 token rules; known aliases mapped to the VN Core URIs."""
    system, code = fp.parse_token(value)
    return (SYSTEM_ALIASES.get(system, system) if system else system), code


def _ids(values: list[str], kind: str) -> list[int]:
    return [_id(fp.reference_id(x, kind)) for v in values for x in v.split(",")]


def _patient_filter(args: dict[str, list[str]], column: Any) -> list[Any]:
    return [column.in_(_ids([v], "Patient")) for v in args.get("patient", []) + args.get("subject", [])]


def _one_of(clauses: list[Any]) -> Any:
    return or_(*clauses) if len(clauses) != 1 else clauses[0]


def _identifier(values: list[str], columns: dict[str | None, list[Any]]) -> list[Any]:
    """identifier=[system]|[code] on the columns each system maps to (None: identifiers without a system).

    ``|code`` matches only identifiers that have no system; ``system|`` any value in the system;
    an unknown system matches nothing (it may be a valid system this server does not hold).
    """
    out = []
    for raw in values:
        alternatives: list[Any] = []
        for part in raw.split(","):
            system, code = _token(part)
            if system is None:
                targets = [c for cols in columns.values() for c in cols]
            else:
                targets = columns.get(system or None, [])
            if not targets:
                alternatives.append(false())
            elif code is None:
                alternatives.append(or_(*[c.is_not(None) for c in targets]))
            else:
                alternatives.append(or_(*[c == code for c in targets]))
        out.append(_one_of(alternatives))
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
# Result parameters the API itself handles (paging, format); never "unknown".
CONTROL_PARAMS = frozenset({"_count", "_offset", "_format"})


def known_params(kind: str) -> set[str]:
    return _SEARCH_PARAMS.get(kind, set()) | CONTROL_PARAMS


def _order_ids_for_accession(session: Session, value: str) -> Select[Any]:
    return select(ImagingOrder.id).where(ImagingOrder.accession_number == value)


def _query(  # noqa: C901 - one branch per type
    session: Session, kind: str, args: dict[str, list[str]], *, lenient: bool = False
) -> Select[Any]:
    unknown = set(args) - known_params(kind)
    if unknown and not lenient:
        raise FhirError(f"unsupported search parameter(s) for {kind}: {', '.join(sorted(unknown))}")
    args = {k: [v for v in vs if v != ""] for k, vs in args.items() if k not in unknown}
    ids = _ids(args.get("_id", []), kind)
    q: Select[Any]
    if kind == "Patient":
        q = select(Patient)
        if ids:
            q = q.where(Patient.id.in_(ids))
        q = q.where(
            *_identifier(
                args.get("identifier", []),
                {
                    SYSTEMS["cccd"]: [Patient.cccd],
                    SYSTEMS["bhyt"]: [Patient.bhyt_number],
                    SYSTEMS["bhxh"]: [Patient.bhyt_ssn],
                    SYSTEMS["patient"]: [Patient.code],
                },
            )
        )
        for v in args.get("name", []):
            q = q.where(_one_of([fp.name_clause(Patient.search_name, part) for part in v.split(",")]))
        q = q.where(*fp.local_date_clauses(Patient.birth_date, args.get("birthdate", [])))
        return q.order_by(Patient.id)
    if kind == "Encounter":
        q = select(Encounter).where(*_patient_filter(args, Encounter.patient_id))
        if ids:
            q = q.where(Encounter.id.in_(ids))
        q = q.where(*fp.date_clauses(Encounter.admitted_at, args.get("date", [])))
        q = q.where(
            *_identifier(
                args.get("identifier", []),
                {SYSTEMS["visit"]: [Encounter.visit_code], SYSTEMS["record"]: [Encounter.record_no]},
            )
        )
        return q.order_by(Encounter.admitted_at, Encounter.id)
    if kind == "ServiceRequest":
        q = select(ImagingOrder).where(*_patient_filter(args, ImagingOrder.patient_id))
        if ids:
            q = q.where(ImagingOrder.id.in_(ids))
        q = q.where(*fp.date_clauses(ImagingOrder.ordered_at, args.get("authored", [])))
        q = q.where(*_identifier(args.get("identifier", []), {SYSTEMS["accession"]: [ImagingOrder.accession_number]}))
        for v in args.get("encounter", []):
            q = q.where(ImagingOrder.encounter_id.in_(_ids([v], "Encounter")))
        return q.order_by(ImagingOrder.ordered_at, ImagingOrder.id)
    if kind == "ImagingStudy":
        q = select(Study).where(Study.state == StudyState.LINKED, *_patient_filter(args, Study.patient_id))
        if ids:
            q = q.where(Study.id.in_(ids))
        for v in args.get("identifier", []):
            system, code = _token(v)
            if system == SYSTEMS["dicom_uid"] or (code or "").startswith("urn:oid:"):
                q = q.where(Study.study_instance_uid == (code or "").removeprefix("urn:oid:"))
            elif system in (None, SYSTEMS["accession"]) and code:
                q = q.where(Study.accession_number == code)
            elif system == SYSTEMS["accession"]:
                q = q.where(Study.accession_number.is_not(None))
            else:
                q = q.where(false())
        q = q.where(*fp.day_string_clauses(Study.study_date, args.get("started", [])))
        return q.order_by(Study.id)
    if kind in ("DiagnosticReport", "DocumentReference"):
        q = select(Document).where(*_patient_filter(args, Document.patient_id))
        if kind == "DiagnosticReport":
            q = q.where(Document.form_type == "radiology_report")
        if ids:
            q = q.where(Document.id.in_(ids))
        if args.get("date"):
            signed = select(DocumentVersion.document_id).where(
                *fp.date_clauses(DocumentVersion.signed_at, args["date"])
            )
            q = q.where(Document.id.in_(signed))
        for v in args.get("identifier", []):
            code = _token(v)[1]
            q = q.where(Document.order_id.in_(_order_ids_for_accession(session, code or "")))
        for v in args.get("based-on", []):
            q = q.where(Document.order_id.in_(_ids([v], "ServiceRequest")))
        for v in args.get("encounter", []):
            q = q.where(Document.encounter_id.in_(_ids([v], "Encounter")))
        return q.order_by(Document.id)
    if kind == "Provenance":
        q = select(DocumentVersion).where(DocumentVersion.signed_at.is_not(None))
        if ids:
            q = q.where(DocumentVersion.id.in_(ids))
        if args.get("patient"):
            pats = _ids(args["patient"], "Patient")
            q = q.where(DocumentVersion.document_id.in_(select(Document.id).where(Document.patient_id.in_(pats))))
        for v in args.get("target", []):
            q = q.where(DocumentVersion.document_id == _id(v.rstrip("/").split("/")[-1]))
        q = q.where(*fp.date_clauses(DocumentVersion.signed_at, args.get("recorded", [])))
        return q.order_by(DocumentVersion.id)
    if kind == "AuditEvent":
        q = select(AuditEntry).where(*_patient_filter(args, AuditEntry.patient_id))
        if ids:
            q = q.where(AuditEntry.id.in_(ids))
        for v in args.get("action", []):
            q = q.where(AuditEntry.action.in_(v.split(",")))
        q = q.where(*fp.iso_string_clauses(AuditEntry.at, args.get("date", [])))
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


def _max_time(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _last_updated(kind: str, obj: Any, session: Session) -> datetime | None:
    """The last time the row behind a resource changed (naive UTC), as far as the EMR records it."""
    if kind == "Patient":
        return _max_time(obj.updated_at, obj.created_at)
    if kind == "Encounter":
        # The visit's own times (opened, admitted, discharged and closed, when its diagnoses are set), and the
        # signing or cancelling of its admission notes: the signed note's coded initial diagnosis is the
        # Encounter's AD diagnosis (emr.exports.fhir.visit_diagnoses).
        notes = session.scalars(
            select(Document).where(Document.encounter_id == obj.id, Document.form_type == "admission_note")
        ).all()
        return _max_time(
            obj.created_at,
            obj.inpatient_at,
            obj.discharged_at,
            obj.closed_at,
            *(d.cancelled_at for d in notes),
            *(v.signed_at for d in notes for v in d.versions),
        )
    if kind == "ServiceRequest":
        return _max_time(obj.ordered_at, obj.performed_at, obj.result_at)
    if kind in ("DiagnosticReport", "DocumentReference"):
        return _max_time(
            obj.created_at,
            obj.cancelled_at,
            *(v.created_at for v in obj.versions),
            *(v.signed_at for v in obj.versions),
        )
    if kind == "ImagingStudy":
        return _max_time(obj.first_seen_at, obj.linked_at)
    if kind == "Provenance":
        return _max_time(obj.signed_at)
    if kind == "AuditEvent":
        return datetime.fromisoformat(obj.at.replace("Z", "+00:00")).replace(tzinfo=None)
    return _max_time(getattr(obj, "updated_at", None), getattr(obj, "created_at", None))


def _with_meta(resource: dict[str, Any], updated: datetime | None) -> dict[str, Any]:
    """meta.versionId: a digest of the content (changes whenever the resource does); meta.lastUpdated."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = digest
    if updated is not None:
        meta["lastUpdated"] = local_isoformat(updated)
    return {**resource, "meta": meta}


def search_resources(
    session: Session,
    kind: str,
    args: dict[str, list[str]],
    *,
    public_url: str,
    dicomweb_url: str,
    artifacts: ArtifactSource | None = None,
    limit: int = 50,
    offset: int = 0,
    lenient: bool = False,
) -> SearchResult:
    """Validated resources of ``kind`` matching ``args`` (FHIR search parameters), one page.

    ``lenient``: unknown parameters are ignored (``Prefer: handling=lenient``) instead of refused.
    """
    if kind not in _BUILDERS:
        raise FhirError(f"unsupported resource type {kind}", 404, "not-supported")
    ctx = Ctx(session, public_url, dicomweb_url, artifacts or NoArtifacts())
    q = _query(session, kind, args, lenient=lenient)
    from sqlalchemy import func

    total = session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = list(session.scalars(q.offset(offset).limit(limit))) if limit > 0 else []
    resources = [validated(_with_meta(_BUILDERS[kind](ctx, r), _last_updated(kind, r, session))) for r in rows]
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


_PROFILES = {"Patient": VN_PATIENT_PROFILE, "Encounter": VN_ENCOUNTER_PROFILE}  # the VN Core IG's, claimed


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
                            **({"supportedProfile": [_PROFILES[kind]]} if kind in _PROFILES else {}),
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "versioning": "versioned",
                            "searchParam": [
                                {
                                    "name": p,
                                    "type": "date"
                                    if p in ("date", "birthdate", "authored", "started", "recorded")
                                    else (
                                        "reference"
                                        if p in ("patient", "subject", "encounter", "based-on", "target")
                                        else ("string" if p == "name" else "token")
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
