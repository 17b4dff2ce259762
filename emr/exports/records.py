"""Reading what a visit holds, for every export: signed reports, progress notes, the people involved.

A document counts when it is not cancelled and has a signed version; the
newest signed version is the one exported (an amendment awaiting signature
does not replace what was signed). A version is signed once every signature
its form requires is there (``signed_at`` is set then, emr.signing.service);
one that has only some of them (``signing``: a discharge paper the head of
department has not signed yet) is listed apart, as awaiting signatures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import to_local
from emr.core.states import OrderStatus

from ..models import (
    Department,
    Document,
    DocumentVersion,
    Encounter,
    EncounterDiagnosis,
    Icd10Code,
    ImagingOrder,
    Patient,
    Study,
    User,
)
from ..models.signing import DocumentSignature

__all__ = [
    "SignedDocument",
    "VisitRecord",
    "load_visit",
    "latest_signed",
    "partially_signed",
    "latest_of",
    "admission_diagnosis",
    "local",
    "fmt_datetime",
    "fmt_date",
]


def local(value: datetime | None) -> datetime | None:
    """Stored times are naive UTC; exports use the facility's local time (emr.core.clock)."""
    return None if value is None else to_local(value)


def fmt_datetime(value: datetime | None) -> str:
    """``yyyyMMddHHmm`` in Vietnam time, or '' (QĐ 130 date-time format)."""
    v = local(value)
    return "" if v is None else v.strftime("%Y%m%d%H%M")


def fmt_date(value: date | None) -> str:
    return "" if value is None else value.strftime("%Y%m%d")


@dataclass
class SignedDocument:
    document: Document
    version: DocumentVersion
    content: dict[str, Any]
    signer: User | None
    author: User | None
    # The head of department's slot (a discharge paper): in which capacity it was signed — head, deputy
    # ("KT. Trưởng khoa") or acting ("Q. Trưởng khoa"), emr.access.substitutes; None without such a slot.
    signer_capacity: str | None = None


@dataclass
class VisitRecord:
    encounter: Encounter
    patient: Patient
    department: Department | None
    attending: User | None
    diagnoses: list[tuple[str, str]]  # (code, title), main first
    orders: list[ImagingOrder]
    studies: dict[int, list[Study]]  # order id → linked studies
    reports: dict[int, SignedDocument]  # order id → signed radiology report
    progress_notes: list[SignedDocument]
    other_documents: list[SignedDocument]
    users: dict[int, User]
    # Current versions with some but not all of their required signatures (not exported as signed).
    partially_signed: list[SignedDocument] = field(default_factory=list)

    def user(self, user_id: int | None) -> User | None:
        return None if user_id is None else self.users.get(user_id)


def latest_signed(doc: Document) -> DocumentVersion | None:
    """The newest version with all its required signatures (``signed_at`` is set only then)."""
    signed = [v for v in doc.versions if v.locked and v.signed_at is not None]
    return max(signed, key=lambda v: v.number) if signed else None


def partially_signed(doc: Document) -> DocumentVersion | None:
    """The current version when it is locked but still awaits signatures (status ``signing``)."""
    current = next((v for v in doc.versions if v.number == doc.current_version), None)
    return current if current is not None and current.locked and current.signed_at is None else None


def latest_of(record: VisitRecord, form_type: str) -> SignedDocument | None:
    """The most recently signed document of ``form_type`` in the visit (None: none signed)."""
    found = [s for s in record.other_documents if s.document.form_type == form_type]
    return max(found, key=lambda s: (s.version.signed_at or s.version.created_at, s.document.id)) if found else None


def admission_diagnosis(encounter: Encounter, admission_note: dict[str, Any] | None) -> str | None:
    """CHAN_DOAN_VAO, the diagnosis when the patient was received ("chẩn đoán sơ bộ", QĐ 4750 Bảng 1 field 24).

    The initial diagnosis of the signed admission note (``admission_note``: its content) is the signed
    statement of it; the diagnosis typed when the visit was opened stands in while no note is signed.
    None when neither says anything.
    """
    signed = str((admission_note or {}).get("initial_diagnosis") or "").strip()
    return signed or (encounter.admission_diagnosis or "").strip() or None


def _head_capacities(session: Session, version_ids: list[int]) -> dict[int, str]:
    """Version id → the capacity its head-of-department signature was given in. Rows from before migration 0024
    have none: only the head could sign then."""
    if not version_ids:
        return {}
    rows = session.execute(
        select(DocumentSignature.version_id, DocumentSignature.capacity)
        .where(DocumentSignature.version_id.in_(version_ids), DocumentSignature.signer_role == "head")
    ).all()
    return {version_id: capacity or "head" for version_id, capacity in rows}


def load_visit(session: Session, encounter: Encounter) -> VisitRecord:
    """Everything the exports need about one encounter, in a few queries."""
    patient = session.get(Patient, encounter.patient_id)
    assert patient is not None
    rows = session.execute(
        select(EncounterDiagnosis.icd10_code, Icd10Code.title)
        .join(Icd10Code, Icd10Code.code == EncounterDiagnosis.icd10_code)
        .where(EncounterDiagnosis.encounter_id == encounter.id)
        .order_by(EncounterDiagnosis.position)
    ).all()
    orders = list(
        session.scalars(
            select(ImagingOrder)
            .where(ImagingOrder.encounter_id == encounter.id, ImagingOrder.status != OrderStatus.CANCELLED)
            .order_by(ImagingOrder.ordered_at, ImagingOrder.id)
        )
    )
    studies: dict[int, list[Study]] = {o.id: [] for o in orders}
    if orders:
        for st in session.scalars(select(Study).where(Study.order_id.in_([o.id for o in orders])).order_by(Study.id)):
            studies[st.order_id or 0].append(st)
    docs = list(
        session.scalars(
            select(Document)
            .where(Document.encounter_id == encounter.id, Document.status != "cancelled")
            .order_by(Document.created_at, Document.id)
        )
    )
    user_ids = {encounter.attending_id, *(o.ordered_by for o in orders), *(o.performed_by for o in orders)}
    signed_docs: list[tuple[Document, DocumentVersion]] = []
    pending: list[tuple[Document, DocumentVersion]] = []
    for d in docs:
        v = latest_signed(d)
        if v is not None:
            signed_docs.append((d, v))
            user_ids.update({v.signed_by, v.created_by})
        waiting = partially_signed(d)
        if waiting is not None:
            pending.append((d, waiting))
            user_ids.add(waiting.created_by)
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_([i for i in user_ids if i])))}
    reports: dict[int, SignedDocument] = {}
    notes: list[SignedDocument] = []
    others: list[SignedDocument] = []
    head_slots = _head_capacities(session, [v.id for _d, v in signed_docs])
    for d, v in signed_docs:
        item = SignedDocument(d, v, json.loads(v.content_json), users.get(v.signed_by or 0), users.get(v.created_by),
                              head_slots.get(v.id))
        if d.form_type == "radiology_report" and d.order_id is not None:
            previous = reports.get(d.order_id)
            if previous is None or (v.signed_at or datetime.min) > (previous.version.signed_at or datetime.min):
                reports[d.order_id] = item
        elif d.form_type == "progress_note":
            notes.append(item)
        else:
            others.append(item)
    notes.sort(key=lambda n: (n.version.signed_at or n.version.created_at, n.document.id))
    return VisitRecord(
        encounter=encounter,
        patient=patient,
        department=session.get(Department, encounter.department_id),
        attending=users.get(encounter.attending_id),
        diagnoses=[(r[0], r[1]) for r in rows],
        orders=orders,
        studies=studies,
        reports=reports,
        progress_notes=notes,
        other_documents=others,
        users=users,
        partially_signed=[
            SignedDocument(d, v, json.loads(v.content_json), None, users.get(v.created_by)) for d, v in pending
        ],
    )
