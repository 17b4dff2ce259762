"""The reading room: which linked studies await a report, who may open a study, saved measurements.

A study is visible in the viewer only once it is linked to a patient in the
EMR (an unmatched study belongs to no one yet). Opening it writes one
``study.view`` audit row in its own short transaction; the DICOMweb proxy
calls that once per reader and study, not per frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session, aliased

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import in_care_clause
from emr.core.exceptions import ValidationFailed
from emr.core.states import OrderStatus, StudyState

from ..models import Document, DocumentVersion, ImagingOrder, Patient, Study, StudyMeasurements, User, utcnow
from ..models.signing import SignedArtifact

__all__ = [
    "REPORT_STATUSES",
    "WORKLIST_LIMIT",
    "ReportPdf",
    "WorklistFilter",
    "WorklistRow",
    "find_linked_study",
    "get_measurements",
    "latest_report",
    "reading_list",
    "reading_worklist",
    "record_report_view",
    "record_study_view",
    "report_pdfs",
    "report_status",
    "save_measurements",
    "study_arriving",
]

log = logging.getLogger(__name__)

# unread: no report yet; draft: written, not signed; amended: a signed report
# has a newer unsigned version; signed.
REPORT_STATUSES = ("unread", "draft", "amended", "signed")
_IN_FORCE = ("signed", "amended")  # a signed version stands (an amendment in progress keeps it)
_STATUS_RANK = {"unread": 0, "draft": 1, "amended": 1, "signed": 2}
_URGENCY_RANK = {"stat": 0, "urgent": 1, "routine": 2}
MAX_MEASUREMENTS_BYTES = 512 * 1024


def find_linked_study(session: Session, study_uid: str) -> Study | None:
    """The EMR's linked study with that StudyInstanceUID, or None (unknown or unmatched)."""
    return session.scalar(
        select(Study)
        .where(Study.study_instance_uid == study_uid, Study.state == StudyState.LINKED, Study.patient_id.is_not(None))
        .order_by(Study.id)
        .limit(1)
    )


def study_arriving(
    session: Session, study_uid: str, seconds: float, is_stable: Callable[[str], bool] | None = None
) -> bool:
    """First seen by the linker less than ``seconds`` ago: Orthanc may still be receiving it.

    A study Orthanc already calls stable (no instance for its StableAge) is complete,
    so the notice goes away then rather than after the whole window. A study whose
    report is already signed is complete as far as anyone is concerned (the
    radiologist read it): no "still arriving" notice, neither for staff nor on the
    patient's share link.
    """
    row = session.execute(
        select(Study.first_seen_at, Study.order_id, Study.orthanc_id)
        .where(Study.study_instance_uid == study_uid)
        .limit(1)
    ).first()
    if row is None or row.first_seen_at is None or utcnow() - row.first_seen_at >= timedelta(seconds=seconds):
        return False
    if is_stable is not None:
        try:
            if is_stable(row.orthanc_id):
                return False
        except Exception:  # noqa: BLE001 - Orthanc unreachable: fall back to the time window
            log.debug("stability of %s unknown", row.orthanc_id, exc_info=True)
    if row.order_id is not None:
        doc = latest_report(session, row.order_id)
        if doc is not None and signed_version(doc) is not None:
            return False
    return True


def record_study_view(
    session: Session, actor: Actor, study: Study, *, via: str, share_link_id: int | None = None
) -> None:
    """One audit row for one study opened (own transaction: the proxy commits nothing else)."""
    details: dict[str, Any] = {"study_uid": study.study_instance_uid, "via": via}
    if share_link_id is not None:
        details["share_link"] = share_link_id
    audit.record(
        session,
        actor,
        "study.view",
        patient_id=study.patient_id,
        object_type="study",
        object_id=study.id,
        details=details,
    )
    session.commit()


def record_report_view(
    session: Session, actor: Actor, doc: Document, version: int, study: Study, *, via: str = "reading"
) -> None:
    """One audit row each time report content is shown beside the images (issue 10)."""
    audit.record(
        session,
        actor,
        "document.view",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": version, "via": via, "study_uid": study.study_instance_uid},
    )
    session.commit()


def latest_report(session: Session, order_id: int) -> Document | None:
    """The order's radiology report that is not cancelled: the one with a signed version in force first.

    An exam has one report (emr.documents.service refuses a second); should older data hold several, the
    signed one is shown beside the images, never a newer draft someone else wrote over it."""
    docs = session.scalars(
        select(Document)
        .where(Document.order_id == order_id, Document.form_type == "radiology_report", Document.status != "cancelled")
        .order_by(Document.created_at.desc(), Document.id.desc())
    ).all()
    return next((d for d in docs if d.status in _IN_FORCE), docs[0] if docs else None)


def report_status(doc: Document | None) -> str:
    if doc is None:
        return "unread"
    return doc.status if doc.status in _STATUS_RANK else "draft"


def signed_version(doc: Document) -> DocumentVersion | None:
    """The newest signed version (an amended report keeps its last signed one)."""
    signed = [v for v in doc.versions if v.status in ("signed", "superseded") and v.locked]
    return max(signed, key=lambda v: v.number) if signed else None


@dataclass(frozen=True)
class ReportPdf:
    """One fully signed version of a study's report, as the viewer lists it.

    ``current``: the version in force (the newest ``signed`` one; an amendment not signed yet leaves it in
    force); the others were superseded by a signed amendment. ``pacs_sop_instance_uid``: the Encapsulated
    PDF instance the signing workflow stored in the study for that version (None: not stored, or not yet)."""

    document_id: int
    version: int
    current: bool
    signed_at: datetime | None
    pacs_sop_instance_uid: str | None


def report_pdfs(session: Session, doc: Document) -> list[ReportPdf]:
    """The report's fully signed versions, newest first, the one in force marked ``current``.

    Every amendment is stored in the study as an Encapsulated PDF instance of its own (a series of its own),
    so the PACS holds one per signed version, all alike; only the EMR knows which one is in force."""
    artifacts = {
        a.version_id: a
        for a in session.scalars(
            select(SignedArtifact).where(SignedArtifact.document_id == doc.id, SignedArtifact.complete.is_(True))
        )
    }
    signed = sorted(
        (v for v in doc.versions if v.locked and v.id in artifacts and v.status in ("signed", "superseded")),
        key=lambda v: v.number,
        reverse=True,
    )
    in_force = next((v.number for v in signed if v.status == "signed"), None)
    return [
        ReportPdf(
            document_id=doc.id,
            version=v.number,
            current=v.number == in_force,
            signed_at=v.signed_at,
            pacs_sop_instance_uid=artifacts[v.id].pacs_sop_instance_uid if artifacts[v.id].pacs_error is None
            else None,
        )
        for v in signed
    ]


@dataclass(frozen=True)
class WorklistFilter:
    modality: str = ""
    date_from: str = ""  # YYYYMMDD (StudyDate)
    date_to: str = ""
    urgency: str = ""
    status: str = ""


@dataclass(frozen=True)
class WorklistRow:
    study: Study
    order: ImagingOrder
    patient: Patient
    report: Document | None
    status: str
    reader: str


WORKLIST_LIMIT = 300


def _report_status_is(status: str) -> ColumnElement[bool]:
    """SQL for :func:`report_status` of the order's newest radiology report not cancelled being ``status``.

    As (NOT) EXISTS, not as "(SELECT status ... ORDER BY created_at DESC LIMIT 1) = ?": PostgreSQL plans these
    as (anti-)joins with sane estimates, where the scalar subquery was a subplan costed per study (over 300k
    on a radiologist's list of 100k studies: JIT-compiled for 0.15 s on top of the query).
    """

    def live(doc: type[Document]) -> ColumnElement[bool]:
        return and_(doc.form_type == "radiology_report", doc.status != "cancelled")

    report, newer = aliased(Document), aliased(Document)
    if status == "unread":
        return ~exists().where(report.order_id == ImagingOrder.id, live(report))
    newest = ~exists().where(
        newer.order_id == report.order_id,
        live(newer),
        or_(newer.created_at > report.created_at, and_(newer.created_at == report.created_at, newer.id > report.id)),
    )
    is_status = report.status == status if status in ("signed", "amended") else report.status.not_in(
        ("signed", "amended", "cancelled")
    )  # draft, or being signed
    return exists().where(report.order_id == ImagingOrder.id, live(report), is_status, newest)


def reading_worklist(
    session: Session, flt: WorklistFilter, limit: int = WORKLIST_LIMIT, *, scope: ColumnElement[bool] | None = None
) -> list[WorklistRow]:
    """Linked studies, unread first, then by urgency (stat, urgent, routine), newest first.

    ``scope``: a condition on ``Study.patient_id`` (the user's care, :func:`reading_list`). It and every
    filter, the report status included, are part of the query, so its LIMIT counts only lines that are
    shown: none the user may see is left out to make room for lines filtered out afterwards.

    The newest ids first, then their rows: a narrow query lets PostgreSQL join the care scope on ids alone
    (a radiologist's scope over 100k studies: 0.37 s, against 1.4 s selecting whole rows; EXPLAIN ANALYZE on
    PostgreSQL 15, 2 cores at load ~6).
    """
    q = (
        select(Study.id)
        .join(ImagingOrder, ImagingOrder.id == Study.order_id)
        .where(
            Study.state == StudyState.LINKED,
            Study.patient_id.is_not(None),
            ImagingOrder.status != OrderStatus.CANCELLED,
        )
    )
    if scope is not None:
        q = q.where(scope)
    if flt.status:
        q = q.where(_report_status_is(flt.status))
    if flt.modality:
        q = q.where(ImagingOrder.modality == flt.modality)
    if flt.urgency:
        q = q.where(ImagingOrder.urgency == flt.urgency)
    if flt.date_from:
        q = q.where(Study.study_date >= flt.date_from)
    if flt.date_to:
        q = q.where(Study.study_date <= flt.date_to)
    ids = list(session.scalars(q.order_by(Study.id.desc()).limit(limit * 2)))
    rows = (
        session.execute(
            select(Study, ImagingOrder, Patient)
            .join(ImagingOrder, ImagingOrder.id == Study.order_id)
            .join(Patient, Patient.id == Study.patient_id)
            .where(Study.id.in_(ids))
            .order_by(Study.id.desc())
        ).all()
        if ids
        else []
    )
    order_ids = [o.id for _, o, _ in rows]
    reports: dict[int, Document] = {}
    if order_ids:
        docs = session.scalars(
            select(Document)
            .where(
                Document.order_id.in_(order_ids),
                Document.form_type == "radiology_report",
                Document.status != "cancelled",
            )
            .order_by(Document.created_at, Document.id)
        )
        for d in docs:
            kept = reports.get(d.order_id or 0)
            if kept is None or d.status in _IN_FORCE or kept.status not in _IN_FORCE:
                reports[d.order_id or 0] = d  # the newest wins, a signed report over any draft (latest_report)
    readers = {
        u.id: u.full_name
        for u in session.scalars(select(User).where(User.id.in_({d.created_by for d in reports.values()} or {0})))
    }
    out: list[WorklistRow] = []
    for study, order, patient in rows:
        doc = reports.get(order.id)
        status = report_status(doc)
        if flt.status and status != flt.status:
            continue
        out.append(WorklistRow(study, order, patient, doc, status, readers.get(doc.created_by, "") if doc else ""))
    out.sort(
        key=lambda r: (
            _STATUS_RANK[r.status],
            _URGENCY_RANK.get(r.order.urgency, 3),
            -int(r.study.study_date or 0) if (r.study.study_date or "").isdigit() else 0,
            -r.study.id,
        )
    )
    return out[:limit]


def reading_list(
    session: Session, actor: Actor, flt: WorklistFilter, limit: int = WORKLIST_LIMIT
) -> list[WorklistRow]:
    """The reading list as ``actor`` may see it: the studies of patients in their care (issue 10; the
    care scope is in the query, :func:`emr.access.care.in_care_clause`), audited like the other lists
    of patients: one row per listing, naming the filters and how many studies it showed."""
    rows = reading_worklist(session, flt, limit, scope=in_care_clause(session, actor, Study.patient_id))
    audit.record(
        session,
        actor,
        "reading.worklist",
        object_type="study",
        details={
            "list": "reading",
            "modality": flt.modality,
            "date_from": flt.date_from,
            "date_to": flt.date_to,
            "urgency": flt.urgency,
            "status": flt.status,
            "results": len(rows),
        },
    )
    session.commit()
    return rows


def get_measurements(session: Session, user_id: int, study_uid: str) -> tuple[Any, datetime | None]:
    row = session.scalar(
        select(StudyMeasurements).where(
            StudyMeasurements.user_id == user_id, StudyMeasurements.study_instance_uid == study_uid
        )
    )
    if row is None:
        return [], None
    return json.loads(row.data_json), row.updated_at


def save_measurements(session: Session, actor: Actor, study: Study, data: Any) -> datetime:
    """Replace this reader's measurements on the study (a list of annotation objects)."""
    if not isinstance(data, list) or not all(isinstance(a, dict) for a in data):
        raise ValidationFailed({"measurements": "errors.field_invalid"})
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_MEASUREMENTS_BYTES:
        raise ValidationFailed({"measurements": "errors.field_too_long"})
    user_id = actor.user_id or 0
    row = session.scalar(
        select(StudyMeasurements).where(
            StudyMeasurements.user_id == user_id, StudyMeasurements.study_instance_uid == study.study_instance_uid
        )
    )
    if row is None:
        row = StudyMeasurements(user_id=user_id, study_instance_uid=study.study_instance_uid, data_json=text)
        session.add(row)
    row.data_json = text
    row.updated_at = utcnow()
    audit.record(
        session,
        actor,
        "study.measure",
        patient_id=study.patient_id,
        object_type="study",
        object_id=study.id,
        details={"count": len(data)},
    )
    session.commit()
    return row.updated_at
