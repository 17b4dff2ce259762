"""Record documents with immutable versions, ready for signatures (issue 5).

A document has versions 1..n. A version is editable only while it is the
draft; once signed it is locked (a mapper event refuses any change), and an
amendment is a new version that references the one it amends with a reason.
Nothing is hard-deleted: cancel and restore carry a reason.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from emr.core.exceptions import InvalidState

from .base import Base, utcnow

__all__ = ["FORM_TYPES", "RETENTION_YEARS", "Document", "DocumentVersion"]

# "diagnosis": the treating physician's signed diagnosis (main and secondary ICD-10 codes), its own
# document so that the person responsible for it signs it (TT 13/2025; issue 14).
FORM_TYPES = (
    "outpatient_record",
    "admission_note",
    "progress_note",
    "diagnosis",
    "discharge_summary",
    "radiology_report",
)

# Circular 33/2025: years counted from the end of the closing year; None = permanent.
RETENTION_YEARS: dict[str, int | None] = {
    "ordinary": 10,
    "psychiatric": 20,
    "occupational": 20,
    "traffic_accident": 20,
    "death": 30,
    "incident": None,
}


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("encounters.id"), index=True)
    # Indexed (migration 0015): each order's report is looked up by it (reading worklist, operations page).
    order_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_orders.id"), index=True)
    form_type: Mapped[str] = mapped_column(String(30))
    # draft → signing (some of the form's required signatures, emr.signing.service.slots_for) → signed
    # → amended (a newer version awaits signing) | cancelled
    status: Mapped[str] = mapped_column(String(12), default="draft")
    status_before_cancel: Mapped[str | None] = mapped_column(String(12))
    current_version: Mapped[int] = mapped_column(default=1)
    record_type: Mapped[str] = mapped_column(String(20), default="ordinary")
    retention_class: Mapped[str] = mapped_column(String(10), default="10y")  # 10y|20y|30y|permanent
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    cancelled_at: Mapped[datetime | None]
    cancelled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[DocumentVersion]] = relationship(order_by="DocumentVersion.number", back_populates="document")


class DocumentVersion(Base):
    __tablename__ = "document_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    number: Mapped[int]
    content_json: Mapped[str] = mapped_column(Text)  # canonical JSON (sorted keys, UTF-8)
    content_sha256: Mapped[str] = mapped_column(String(64))
    # draft | signing | signed | superseded (an unsigned draft replaced before signing never exists: drafts are
    # edited in place). "signing": locked at its first signature (every signer signs the same content), not yet
    # signed by every required signer; it is "signed" when the last one signs.
    status: Mapped[str] = mapped_column(String(12), default="draft")
    locked: Mapped[bool] = mapped_column(default=False)
    amends_version_id: Mapped[int | None] = mapped_column(ForeignKey("document_versions.id"))
    amendment_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the version became signed (its last required signature) and who completed it; None while it is
    # a draft or still "signing" (each signature's own time is in document_signatures).
    signed_at: Mapped[datetime | None] = mapped_column(active_history=True)  # the old value is always known
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), active_history=True)

    document: Mapped[Document] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("document_id", "number", name="uq_document_versions_number"),)


_FROZEN = ("content_json", "content_sha256", "number", "document_id", "amends_version_id")
_SET_ONCE = ("signed_at", "signed_by")  # filled when the last signature of a locked version lands


@event.listens_for(DocumentVersion, "before_update")
def _refuse_changes_to_locked(mapper: object, connection: object, target: DocumentVersion) -> None:
    """A signed version is immutable: only its status may move on ('signing' → 'signed' → 'superseded'),
    and its signing time and completing signer are written once."""
    from sqlalchemy import inspect

    state = inspect(target)
    hist = state.attrs.locked.history
    before = hist.deleted or hist.unchanged
    if not (before and before[0]):
        return  # the version is being signed (locked now) or is still a draft
    for name in _FROZEN + _SET_ONCE:
        changes = state.attrs[name].history
        if not changes.has_changes():
            continue
        if name in _SET_ONCE and all(old is None for old in changes.deleted):
            continue  # None → value: the version is complete now
        raise InvalidState(
            f"document version {target.id} is signed and cannot change ({name})", key="documents.error.locked"
        )
