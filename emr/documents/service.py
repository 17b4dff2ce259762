"""Record documents: drafts, signed versions, amendments, cancel and restore.

Signing itself is emr/signing's job; :func:`mark_signed` is the state change
it calls once a version is signed (or that an OTP confirmation calls).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import outbox
from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access
from emr.core.exceptions import InvalidState, ValidationFailed
from emr.core.states import StudyState, after_report_signed, after_report_withdrawn
from emr.documents.rights import require_author, require_signer_or_head
from emr.models.lookup import get_or_404, parse

from ..models import (
    RETENTION_YEARS,
    Document,
    DocumentVersion,
    Encounter,
    ImagingOrder,
    NetworkReceived,
    Study,
    utcnow,
)
from ..schemas import FORM_CONTENT, DocumentIn

__all__ = [
    "create_document",
    "update_draft",
    "amend_document",
    "mark_signed",
    "cancel_document",
    "restore_document",
    "get_document",
    "list_documents",
    "canonical_json",
    "document_dict",
]


def canonical_json(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _content(form_type: str, content: Any) -> dict[str, Any]:
    model = parse(FORM_CONTENT[form_type], content, prefix="content.")
    return model.model_dump()


def _retention_class(record_type: str) -> str:
    years = RETENTION_YEARS.get(record_type, 10)
    return "permanent" if years is None else f"{years}y"


def _version(doc: Document, number: int) -> DocumentVersion:
    for v in doc.versions:
        if v.number == number:
            return v
    raise InvalidState(f"document {doc.id} has no version {number}")


def _locked_row(session: Session, version: DocumentVersion) -> DocumentVersion:
    """Re-read the version with a row lock (PostgreSQL): an edit and a signature of the same draft
    cannot interleave; the second waits and then sees what the first did."""
    session.refresh(version, with_for_update=True)
    return version


def create_document(session: Session, actor: Actor, data: DocumentIn | dict[str, Any]) -> Document:
    data = parse(DocumentIn, data)
    enc = get_or_404(session, Encounter, data.encounter_id, "encounter")
    ensure_patient_access(session, actor, enc.patient_id)  # issue 10: care scope
    if enc.status == "cancelled":
        raise InvalidState("encounter cancelled", key="encounters.error.not_open")
    content = _content(data.form_type, data.content)
    if data.order_id is not None:
        order = session.get(ImagingOrder, data.order_id)
        if order is None or order.patient_id != enc.patient_id:
            raise ValidationFailed({"order_id": "documents.error.order"})
    doc = Document(
        patient_id=enc.patient_id,
        encounter_id=enc.id,
        order_id=data.order_id,
        form_type=data.form_type,
        status="draft",
        current_version=1,
        record_type=enc.record_type,
        retention_class=_retention_class(enc.record_type),
        created_by=actor.user_id or 0,
    )
    session.add(doc)
    session.flush()
    text = canonical_json(content)
    session.add(
        DocumentVersion(
            document_id=doc.id,
            number=1,
            content_json=text,
            content_sha256=hashlib.sha256(text.encode()).hexdigest(),
            created_by=actor.user_id or 0,
        )
    )
    audit.record(
        session,
        actor,
        "document.create",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"form_type": data.form_type},
    )
    session.commit()
    session.refresh(doc)
    return doc


def update_draft(session: Session, actor: Actor, document_id: int, content: Any) -> Document:
    """Edit the current version while it is an unsigned draft."""
    doc = get_or_404(session, Document, document_id, "document")
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    version = _locked_row(session, _version(doc, doc.current_version))
    if version.locked:
        raise InvalidState("signed versions cannot change; amend instead", key="documents.error.locked")
    require_author(session, actor, doc, version, "document.edit")
    text = canonical_json(_content(doc.form_type, content))
    previous = version.content_sha256
    version.content_json = text
    version.content_sha256 = hashlib.sha256(text.encode()).hexdigest()
    audit.record(
        session,
        actor,
        "document.edit",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": version.number, "sha256": version.content_sha256, "previous_sha256": previous},
    )
    session.commit()
    return doc


def amend_document(session: Session, actor: Actor, document_id: int, content: Any, reason: str | None) -> Document:
    """A new version referencing the signed one it amends; it must be signed again."""
    doc = get_or_404(session, Document, document_id, "document")
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    current = _version(doc, doc.current_version)
    if not current.locked:
        raise InvalidState("the current version is a draft; edit it instead", key="documents.error.not_signed")
    if not reason or not reason.strip():
        raise ValidationFailed({"reason": "documents.error.reason_required"})
    capacity = require_signer_or_head(session, actor, doc, "document.amend")
    text = canonical_json(_content(doc.form_type, content))
    new = DocumentVersion(
        document_id=doc.id,
        number=current.number + 1,
        content_json=text,
        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
        amends_version_id=current.id,
        amendment_reason=reason.strip(),
        created_by=actor.user_id or 0,
    )
    session.add(new)
    current.status = "superseded"
    doc.current_version = new.number
    doc.status = "amended"
    audit.record(
        session,
        actor,
        "document.amend",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": new.number, "amends": current.number, "reason": reason, "as": capacity},
    )
    session.commit()
    session.refresh(doc)
    return doc


# A report with a signed version (an amendment in progress still has its signed one).
_SIGNED = ("signed", "amended")


def _reflect_on_order(session: Session, doc: Document) -> None:
    """Keep a radiology report's order status in step with it: ``reported`` while a signed report of the
    order stands (or a reading site sent one, emr.network), back to waiting for a reader when the last
    one is cancelled. The unread queue, the reading worklist and the operations page go by the status."""
    if doc.form_type != "radiology_report" or doc.order_id is None:
        return
    order = session.get(ImagingOrder, doc.order_id, with_for_update=True)
    if order is None:
        return
    session.flush()
    signed = session.scalar(select(Document.id).where(
        Document.order_id == order.id, Document.form_type == "radiology_report", Document.status.in_(_SIGNED)
    ).limit(1))
    if signed is not None:
        order.status = after_report_signed(order.status)
        return
    remote = session.scalar(select(NetworkReceived.id).where(
        NetworkReceived.order_id == order.id, NetworkReceived.kind == "report").limit(1))
    if remote is None:
        images = session.scalar(select(Study.id).where(
            Study.order_id == order.id, Study.state == StudyState.LINKED.value).limit(1))
        order.status = after_report_withdrawn(order.status, images is not None)


def mark_signed(session: Session, actor: Actor, document_id: int, version_number: int) -> Document:
    """Lock a version as signed (called by the signing workflow after a successful signature)."""
    doc = get_or_404(session, Document, document_id, "document")
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    version = _version(doc, version_number)
    if version.number != doc.current_version or version.locked:
        raise InvalidState("only the current unsigned version can be signed", key="documents.error.locked")
    version.locked = True
    version.status = "signed"
    version.signed_at = utcnow()
    version.signed_by = actor.user_id
    doc.status = "signed"
    _reflect_on_order(session, doc)
    audit.record(
        session,
        actor,
        "document.sign",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": version.number, "sha256": version.content_sha256},
    )
    session.flush()
    outbox.publish(session, "document.signed", document=doc, version=version)  # issue 15: same transaction
    session.commit()
    return doc


def cancel_document(session: Session, actor: Actor, document_id: int, reason: str) -> Document:
    doc = get_or_404(session, Document, document_id, "document")
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if not reason or not reason.strip():
        raise ValidationFailed({"reason": "documents.error.reason_required"})
    if doc.status == "cancelled":
        raise InvalidState("already cancelled", key="documents.error.cancelled")
    capacity = require_signer_or_head(session, actor, doc, "document.cancel")
    doc.status_before_cancel = doc.status
    doc.status = "cancelled"
    if doc.status_before_cancel in _SIGNED:
        _reflect_on_order(session, doc)
    doc.cancel_reason = reason.strip()
    doc.cancelled_at = utcnow()
    doc.cancelled_by = actor.user_id
    audit.record(
        session,
        actor,
        "document.cancel",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"reason": reason, "as": capacity},
    )
    session.commit()
    return doc


def restore_document(session: Session, actor: Actor, document_id: int, reason: str) -> Document:
    doc = get_or_404(session, Document, document_id, "document")
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if not reason or not reason.strip():
        raise ValidationFailed({"reason": "documents.error.reason_required"})
    if doc.status != "cancelled":
        raise InvalidState("not cancelled", key="documents.error.not_cancelled")
    capacity = require_signer_or_head(session, actor, doc, "document.restore")
    doc.status = doc.status_before_cancel or "draft"
    doc.status_before_cancel = None
    if doc.status in _SIGNED:
        _reflect_on_order(session, doc)
    audit.record(
        session,
        actor,
        "document.restore",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"reason": reason, "previous_cancel_reason": doc.cancel_reason, "as": capacity},
    )
    session.commit()
    return doc


def get_document(session: Session, actor: Actor, document_id: int) -> Document:
    doc = get_or_404(session, Document, document_id, "document")
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: only patients in the user's care
    audit.record(session, actor, "document.view", patient_id=doc.patient_id, object_type="document", object_id=doc.id)
    session.commit()
    return doc


def list_documents(session: Session, patient_id: int) -> list[Document]:
    return list(
        session.scalars(
            select(Document)
            .where(Document.patient_id == patient_id)
            .order_by(Document.created_at.desc(), Document.id.desc())
        )
    )


def document_dict(doc: Document) -> dict[str, Any]:
    by_id = {v.id: v.number for v in doc.versions}
    return {
        "id": doc.id,
        "patient_id": doc.patient_id,
        "encounter_id": doc.encounter_id,
        "order_id": doc.order_id,
        "form_type": doc.form_type,
        "status": doc.status,
        "current_version": doc.current_version,
        "retention_class": doc.retention_class,
        "cancel_reason": doc.cancel_reason,
        "versions": [
            {
                "number": v.number,
                "status": v.status,
                "content": json.loads(v.content_json),
                "content_sha256": v.content_sha256,
                "amends_version": by_id.get(v.amends_version_id or -1),
                "amendment_reason": v.amendment_reason,
                "created_at": v.created_at,
                "signed_at": v.signed_at,
            }
            for v in doc.versions
        ],
    }
