"""Suggesting orders for studies in the reconciliation queue.

A study lands in the queue when neither its accession number nor its Study
Instance UID matches an order, usually because the technician typed the
patient by hand at the console. What the modality did send (PatientID,
PatientName, study date, modality) still points at the right order most of
the time; the clerk confirms the suggestion instead of typing order numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from emr.core.clock import local_day_bounds, to_local
from emr.core.dicom_dates import parse_da
from emr.core.normalize import fold
from emr.core.states import AWAITING_IMAGES, OrderStatus, StudyState
from emr.models.lookup import get_or_404

from ..models import ImagingOrder, Patient, Study

__all__ = [
    "Candidate",
    "QueueItem",
    "candidates_for",
    "link_mismatches",
    "reconciliation_queue",
    "queue_page",
    "QueuePage",
    "best_candidate",
    "get_unmatched",
    "resolve_order",
    "order_patient",
    "count_unmatched",
    "REASONS",
]

# Why an order is suggested, strongest first; the score is the sum of weights.
REASONS: dict[str, int] = {"patient_id": 8, "name": 4, "date": 2, "modality": 1, "waiting": 1}


@dataclass
class Candidate:
    order: ImagingOrder
    patient: Patient
    reasons: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(REASONS[r] for r in self.reasons)


@dataclass
class QueueItem:
    study: Study
    candidates: list[Candidate]


def _dicom_name_folded(name: str | None) -> str:
    """'TRAN^VAN DUC' or 'Trần^Văn Đức' → 'tran van duc' (components joined by spaces)."""
    if not name:
        return ""
    parts = [p for p in name.split("=")[0].split("^")[:3] if p.strip()]
    return fold(" ".join(parts))


def _study_day(study: Study) -> datetime | None:
    day = parse_da(study.study_date)
    return None if day is None else datetime.combine(day, datetime.min.time())


def candidates_for(session: Session, study: Study, limit: int = 5) -> list[Candidate]:
    """Orders that probably belong to ``study``, best first (empty when nothing plausible)."""
    found: dict[int, Candidate] = {}
    patient_reasons: dict[int, list[str]] = {}
    if study.dicom_patient_id:
        code = study.dicom_patient_id.strip().upper()
        for pid in session.scalars(select(Patient.id).where(Patient.code == code, Patient.status == "active")):
            patient_reasons.setdefault(pid, []).append("patient_id")
    folded = _dicom_name_folded(study.dicom_patient_name)
    if folded:
        stmt = select(Patient.id).where(Patient.search_name == folded, Patient.status == "active").limit(20)
        for pid in session.scalars(stmt):
            patient_reasons.setdefault(pid, []).append("name")
    modalities = set((study.modalities or "").split("\\")) - {""}
    day = _study_day(study)

    def add(order: ImagingOrder, reasons: list[str]) -> None:
        cand = found.get(order.id)
        if cand is None:
            patient = session.get(Patient, order.patient_id)
            if patient is None:
                return
            cand = found[order.id] = Candidate(order, patient)
        for r in reasons:
            if r not in cand.reasons:
                cand.reasons.append(r)

    if patient_reasons:
        stmt_orders = (
            select(ImagingOrder)
            .where(ImagingOrder.patient_id.in_(patient_reasons), ImagingOrder.status != OrderStatus.CANCELLED)
            .order_by(ImagingOrder.ordered_at.desc())
            .limit(50)
        )
        for order in session.scalars(stmt_orders):
            add(order, patient_reasons[order.patient_id])
    if day is not None:
        # The study date is facility-local time; orders store naive UTC.
        lo, hi = local_day_bounds(day.date())
        stmt_day = (
            select(ImagingOrder)
            .where(
                ImagingOrder.scheduled_at >= lo,
                ImagingOrder.scheduled_at < hi,
                ImagingOrder.status.in_(AWAITING_IMAGES),
            )
            .limit(50)
        )
        if modalities:
            stmt_day = stmt_day.where(ImagingOrder.modality.in_(modalities))
        for order in session.scalars(stmt_day):
            add(order, [])
    for cand in found.values():
        local_day = to_local(cand.order.scheduled_at)
        if day is not None and local_day.date() == day.date():
            cand.reasons.append("date")
        if cand.order.modality in modalities:
            cand.reasons.append("modality")
        if cand.order.status in AWAITING_IMAGES:
            cand.reasons.append("waiting")
    ranked = sorted(found.values(), key=lambda c: (-c.score, -c.order.id))
    # Only the date and modality agreeing is a weak hint: keep it only while nothing better exists.
    strong = [c for c in ranked if {"patient_id", "name"} & set(c.reasons)]
    return (strong or ranked)[:limit]


def link_mismatches(study: Study, order: ImagingOrder) -> list[str]:
    """What disagrees between a study and the order it is about to be linked to: ``modality``
    (the study holds no series of the ordered modality) and ``date`` (the study date is not the
    order's scheduled day, facility time). The clerk must confirm each before linking."""
    found: list[str] = []
    modalities = set((study.modalities or "").split("\\")) - {"", "SR", "PR", "KO", "DOC"}
    if modalities and order.modality not in modalities:
        found.append("modality")
    day = _study_day(study)
    if day is not None and to_local(order.scheduled_at).date() != day.date():
        found.append("date")
    return found


QUEUE_PAGE = 20


@dataclass
class QueuePage:
    items: list[QueueItem]
    total: int
    page: int
    pages: int


def reconciliation_queue(session: Session, limit: int = 200) -> list[QueueItem]:
    """Unmatched studies, oldest first, each with its suggested orders."""
    return queue_page(session, size=limit).items


def queue_page(session: Session, *, query: str = "", page: int = 1, size: int = QUEUE_PAGE) -> QueuePage:
    """One page of the queue, oldest first, optionally only studies whose name, patient ID,
    accession number or description contains ``query`` (accents and case ignored for names)."""
    stmt = select(Study).where(Study.state == StudyState.UNMATCHED)
    q = query.strip()[:64]
    if q:
        like = f"%{q}%"
        folded = f"%{fold(q)}%"
        stmt = stmt.where(
            or_(
                Study.dicom_patient_id.ilike(like),
                Study.accession_number.ilike(like),
                Study.description.ilike(like),
                func.lower(Study.dicom_patient_name).like(folded.replace(" ", "%")),
                Study.dicom_patient_name.ilike(like),
            )
        )
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    pages = max(1, -(-total // size))
    page = min(max(1, page), pages)
    studies = session.scalars(stmt.order_by(Study.first_seen_at, Study.id).offset((page - 1) * size).limit(size))
    return QueuePage([QueueItem(s, candidates_for(session, s)) for s in studies], total, page, pages)


def best_candidate(session: Session, study: Study) -> Candidate | None:
    """The suggestion a bulk link may take without a person looking: the patient matched by ID or
    name, exactly one such order, and neither modality nor date disagreeing."""
    strong = [c for c in candidates_for(session, study, limit=5) if {"patient_id", "name"} & set(c.reasons)]
    if len(strong) != 1 or link_mismatches(study, strong[0].order):
        return None
    return strong[0]


def count_unmatched(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Study).where(Study.state == StudyState.UNMATCHED)) or 0)


def get_unmatched(session: Session, study_id: int) -> Study:
    return get_or_404(session, Study, study_id, "study")


def resolve_order(session: Session, value: str) -> ImagingOrder | None:
    """What a clerk types to name an order: its accession number (from the paper slip) or its id."""
    value = value.strip()
    if not value or len(value) > 16:
        return None
    order = session.scalar(select(ImagingOrder).where(ImagingOrder.accession_number == value))
    if order is None and value.isdigit() and int(value) < 2**31:
        order = session.get(ImagingOrder, int(value))
    return order


def order_patient(session: Session, order: ImagingOrder) -> Patient:
    return get_or_404(session, Patient, order.patient_id, "patient")
