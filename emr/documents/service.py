"""Record documents: drafts, signed versions, amendments, cancel and restore.

Signing itself is emr/signing's job; :func:`mark_signed` is the state change
it calls once a version is signed (or that an OTP confirmation calls).

An amendment is a new draft version; the signed version it amends stays the
valid one (status ``signed``) until the amendment is signed, and only then
becomes ``superseded``. An amendment never signed may be discarded by its
author (:func:`discard_amendment`): it stays on record as ``discarded`` and the
signed version is current again.

Concurrency: every change re-reads the document inside its own transaction
and locks it first (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite each
transaction begins ``IMMEDIATE``, emr.db, so writers are serialised anyway).
A screen passes the version its form was filled from (``base_version``): when
the document moved on meanwhile (another tab amended or signed it),
:class:`DocumentChanged` (409) is raised and nothing is written.
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
from emr.catalogues import unknown_icd10
from emr.core.clock import local_today
from emr.core.exceptions import ConflictError, InvalidState, NotFoundError, ValidationFailed
from emr.core.states import StudyState, after_report_signed, after_report_withdrawn
from emr.documents.rights import require_author, require_signer_or_head
from emr.i18n import t
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
    "AFTER_DISCHARGE_FORMS",
    "update_draft",
    "amend_document",
    "discard_amendment",
    "mark_signed",
    "complete_signing",
    "cancel_document",
    "restore_document",
    "get_document",
    "list_documents",
    "canonical_json",
    "document_dict",
    "DocumentChanged",
    "ReportExists",
    "live_report",
    "REASON_MAX_LENGTH",
]

# Reasons (amendment, cancel, restore, discard) are refused beyond this, never cut (the API's ReasonIn agrees).
REASON_MAX_LENGTH = 1000


class DocumentChanged(ConflictError):
    """The document moved on since the form was shown (another tab or user amended, signed or discarded)."""

    code = "document_changed"

    def __init__(
        self, document_id: int, base_version: int | None, current_version: int, *, base_sha256: str | None = None
    ) -> None:
        if base_sha256 is not None:  # the same draft version, edited in place by another save meanwhile
            message = (
                f"document {document_id} changed since it was read: its draft (version {current_version}) is no "
                f"longer the text with content_sha256 {base_sha256}; read the document again and make the change "
                "on its current text"
            )
        else:
            message = (
                f"document {document_id} changed since version {base_version} was shown (now version {current_version})"
            )
        super().__init__(message, field="base_sha256" if base_sha256 is not None else None,
                         key="documents.error.changed")
        self.document_id = document_id
        self.base_version = base_version
        self.current_version = current_version
        self.base_sha256 = base_sha256


class ReportExists(ConflictError):
    """The exam already has a radiology report that is not cancelled: one report per exam (a second one,
    written and signed by someone else, contradicted the first and only the newer was shown). A signed
    report is changed by an amendment of it, a draft by its author; ``document_id`` names it."""

    code = "report_exists"

    def __init__(self, order_id: int, document_id: int, status: str) -> None:
        key = "documents.error.report_exists_signed" if status in _SIGNED else "documents.error.report_exists_draft"
        super().__init__(t(key, id=document_id), field="order_id", key=key)  # the JSON API shows the message
        self.params = {"id": document_id}
        self.order_id = order_id
        self.document_id = document_id
        self.status = status


# A report with a signed version (an amendment in progress still has its signed one).
_SIGNED = ("signed", "amended")


def live_report(session: Session, order_id: int, *, excluding: int | None = None) -> Document | None:
    """The exam's radiology report that is not cancelled (draft, being signed, signed or amended); the one
    with a signed version first should older data hold several."""
    q = select(Document).where(
        Document.order_id == order_id, Document.form_type == "radiology_report", Document.status != "cancelled"
    )
    if excluding is not None:
        q = q.where(Document.id != excluding)
    q = q.order_by(Document.created_at.desc(), Document.id.desc()).execution_options(populate_existing=True)
    docs = list(session.scalars(q))
    return next((d for d in docs if d.status in _SIGNED), docs[0] if docs else None)


def _lock_order_for_report(session: Session, order_id: int, *, excluding: int | None = None) -> ImagingOrder | None:
    """Hold the exam's order row until commit, then refuse when it already has a live report.

    Two radiology reports created (or restored) at once for one exam: on PostgreSQL the second transaction
    waits on ``FOR UPDATE`` here and then sees the first one's report; on SQLite writing transactions begin
    ``IMMEDIATE`` (emr.db), and the rows are read again (``populate_existing``), never from what this
    session saw in an earlier transaction."""
    order = session.get(ImagingOrder, order_id, with_for_update=True, populate_existing=True)
    if order is None:
        return None
    existing = live_report(session, order.id, excluding=excluding)
    if existing is not None:
        raise ReportExists(order.id, existing.id, existing.status)
    return order


def canonical_json(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# Content fields holding ICD-10 codes (one, or several joined by ';'), checked against the catalogue.
_ICD10_FIELDS = {"diagnosis": ("main_code", "secondary_codes"), "admission_note": ("initial_diagnosis_code",)}


def _content(session: Session, form_type: str, content: Any) -> dict[str, Any]:
    """The content, validated: its format (the form's schema), then its ICD-10 codes against the catalogue
    in force today, as on the visit form (``emr.catalogues.unknown_icd10``, same message)."""
    data = parse(FORM_CONTENT[form_type], content, prefix="content.").model_dump()
    problems: dict[str, str] = {}
    params: dict[str, dict[str, object]] = {}
    for name in _ICD10_FIELDS.get(form_type, ()):
        unknown = unknown_icd10(session, [c for c in str(data.get(name) or "").split(";") if c], local_today())
        if unknown:
            problems[f"content.{name}"] = "encounters.error.icd10"
            params[f"content.{name}"] = {"codes": ", ".join(unknown)}
    if problems:
        raise ValidationFailed(problems, params=params)
    return data


def _retention_class(record_type: str) -> str:
    years = RETENTION_YEARS.get(record_type, 10)
    return "permanent" if years is None else f"{years}y"


def _version(doc: Document, number: int) -> DocumentVersion:
    for v in doc.versions:
        if v.number == number:
            return v
    raise InvalidState(f"document {doc.id} has no version {number}")


def _reason(reason: str | None) -> str:
    """A required reason, stripped; too long is an error stating the limit (silently cutting it lost text)."""
    text = (reason or "").strip()
    if not text:
        raise ValidationFailed({"reason": "documents.error.reason_required"})
    if len(text) > REASON_MAX_LENGTH:
        raise ValidationFailed({"reason": "errors.field_too_long_max"}, params={"reason": {"max": REASON_MAX_LENGTH}})
    return text


def _fresh_document(session: Session, document_id: int, *, lock: bool) -> Document:
    """The document and its versions as committed now, not as an earlier transaction of this session saw them
    (sessions keep objects across commits). ``lock``: hold the document row until commit (PostgreSQL
    ``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already serialises writing transactions)."""
    doc = session.get(Document, document_id, with_for_update=lock or None, populate_existing=True)
    if doc is None:
        raise NotFoundError("document", document_id)
    session.scalars(
        select(DocumentVersion)
        .where(DocumentVersion.document_id == doc.id)
        .execution_options(populate_existing=True)
    ).all()
    return doc


def _version_by_id(doc: Document, version_id: int) -> DocumentVersion | None:
    return next((v for v in doc.versions if v.id == version_id), None)


def _locked_row(session: Session, version: DocumentVersion) -> DocumentVersion:
    """Re-read the version with a row lock (PostgreSQL): an edit and a signature of the same draft
    cannot interleave; the second waits and then sees what the first did."""
    session.refresh(version, with_for_update=True)
    return version


# Papers that may still be created on a visit already ended: the discharge paper (signed only once the visit
# is closed, emr.signing.service.discharge_pending).
AFTER_DISCHARGE_FORMS = ("discharge_summary",)


def _written_after_discharge(session: Session, enc: Encounter, data: DocumentIn) -> bool:
    """May this new document be created on the closed visit ``enc``? Only the discharge paper, and the report of
    an exam ordered in that visit (images are often read after the patient left; the reading room attaches
    the exam to its visit, emr.imaging.order_visit). Anything else would enter the record after the discharge
    time; signed documents of the visit are still amended (a new version, audited)."""
    if data.form_type in AFTER_DISCHARGE_FORMS:
        return True
    if data.form_type == "radiology_report" and data.order_id is not None:
        order = session.get(ImagingOrder, data.order_id)
        return order is not None and order.encounter_id == enc.id
    return False


def create_document(session: Session, actor: Actor, data: DocumentIn | dict[str, Any]) -> Document:
    data = parse(DocumentIn, data)
    enc = get_or_404(session, Encounter, data.encounter_id, "encounter")
    ensure_patient_access(session, actor, enc.patient_id)  # issue 10: care scope
    if enc.status == "cancelled":
        raise InvalidState("encounter cancelled", key="encounters.error.not_open")
    if enc.status == "closed" and not _written_after_discharge(session, enc, data):
        # Vietnamese in the message too: the JSON API shows it as it is.
        raise InvalidState(t("documents.error.visit_closed"), key="documents.error.visit_closed")
    content = _content(session, data.form_type, data.content)
    if data.order_id is not None:
        order = session.get(ImagingOrder, data.order_id)
        if order is None or order.patient_id != enc.patient_id:
            raise ValidationFailed({"order_id": "documents.error.order"})
        if data.form_type == "radiology_report":
            _lock_order_for_report(session, order.id)  # one report per exam, checked under the order's lock
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


def update_draft(
    session: Session,
    actor: Actor,
    document_id: int,
    content: Any,
    *,
    base_version: int | None = None,
    base_sha256: str | None = None,
) -> Document:
    """Edit the current version while it is an unsigned draft.

    ``base_version``: the version the form was filled from; when the draft is no longer that
    version, or was signed or discarded meanwhile, :class:`DocumentChanged` and nothing changes.
    ``base_sha256``: the draft's content hash the form (the edit page, the reading page, an API client
    through ``PUT /api/documents/{id}/draft``) was filled from. A draft is edited in place (its number
    stays), so two tabs share ``base_version``; when another save changed the text meanwhile,
    :class:`DocumentChanged` too, rather than the second save silently replacing the first. None: not
    checked (API clients written before the field existed: the last save wins, as it always did).
    """
    doc = _fresh_document(session, document_id, lock=False)
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    # The version row only (as signing does): signing locks the version, then the document.
    version = _locked_row(session, _version(doc, doc.current_version))
    if version.status == "discarded" or (
        base_version is not None and (version.number != base_version or version.locked)
    ):
        raise DocumentChanged(doc.id, base_version, version.number)
    if version.locked:
        raise InvalidState("signed versions cannot change; amend instead", key="documents.error.locked")
    require_author(session, actor, doc, version, "document.edit")
    # After the author check: someone else's draft stays a 403 whatever hash is sent (a 409 against a
    # guessed hash would tell a non-author whether the guess was the draft's text).
    if base_sha256 is not None and base_sha256 != version.content_sha256:
        raise DocumentChanged(doc.id, base_version, version.number, base_sha256=base_sha256)
    text = canonical_json(_content(session, doc.form_type, content))
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


def amend_document(
    session: Session,
    actor: Actor,
    document_id: int,
    content: Any,
    reason: str | None,
    *,
    base_version: int | None = None,
) -> Document:
    """A new version referencing the signed one it amends; it must be signed again.

    The signed version stays the valid one until the amendment is signed (:func:`mark_signed`
    supersedes it then). ``base_version``: the signed version the form was filled from; when the
    document moved on meanwhile (a second amendment from another tab), :class:`DocumentChanged`.
    """
    doc = _fresh_document(session, document_id, lock=True)  # two amendments at once: the second waits
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    current = _version(doc, doc.current_version)
    if base_version is not None and (current.number != base_version or not current.locked):
        raise DocumentChanged(doc.id, base_version, current.number)
    if not current.locked:
        raise InvalidState("the current version is a draft; edit it instead", key="documents.error.not_signed")
    reason = _reason(reason)
    capacity = require_signer_or_head(session, actor, doc, "document.amend")
    text = canonical_json(_content(session, doc.form_type, content))
    if text == current.content_json:  # nothing to correct: a new version would only need signing again
        raise InvalidState("the amendment is the signed content unchanged", key="documents.error.unchanged")
    new = DocumentVersion(
        document_id=doc.id,
        number=max(v.number for v in doc.versions) + 1,  # after a discarded amendment too
        content_json=text,
        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
        amends_version_id=current.id,
        amendment_reason=reason,
        created_by=actor.user_id or 0,
    )
    session.add(new)
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


def discard_amendment(
    session: Session, actor: Actor, document_id: int, reason: str | None, *, base_version: int | None = None
) -> Document:
    """Drop an amendment that was never signed: its author gives a reason, the signed version it amends
    is current again. The draft stays on record as ``discarded`` (its number is not reused), audited."""
    doc = _fresh_document(session, document_id, lock=False)
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    # Version row first, then the document: the order signing takes them in (no deadlock with a signature).
    version = _locked_row(session, _version(doc, doc.current_version))
    doc = _fresh_document(session, document_id, lock=True)
    if doc.current_version != version.number or version.status == "discarded" or (
        base_version is not None and base_version != version.number
    ):
        raise DocumentChanged(doc.id, base_version, doc.current_version)
    if version.locked:
        raise InvalidState("a signed version is never discarded", key="documents.error.locked")
    if version.amends_version_id is None:
        raise InvalidState("not an amendment; cancel the draft instead", key="documents.error.not_amendment")
    reason = _reason(reason)
    require_author(session, actor, doc, version, "document.discard_amendment")
    signed = _version_by_id(doc, version.amends_version_id)
    assert signed is not None  # an amendment's signed version is never deleted
    version.status = "discarded"
    doc.current_version = signed.number
    doc.status = "signing" if signed.status == "signing" else "signed"  # as before the amendment
    audit.record(
        session,
        actor,
        "document.discard_amendment",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": version.number, "sha256": version.content_sha256, "current": signed.number,
                 "reason": reason},
    )
    session.commit()
    return doc


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


def mark_signed(
    session: Session, actor: Actor, document_id: int, version_number: int, *, complete: bool = True
) -> Document:
    """Lock a version at its first signature (called by the signing workflow after a successful signature).

    ``complete=False``: the form needs more signatures (a discharge paper: the head of department too). The
    version is locked, as every signer signs the same content, but it is ``signing``, not signed, until
    :func:`complete_signing`; a first version's document is ``signing`` too (an amendment's stays ``amended``).
    """
    doc = get_or_404(session, Document, document_id, "document")
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    version = _version(doc, version_number)
    if version.number != doc.current_version or version.locked or version.status == "discarded":
        raise InvalidState("only the current unsigned version can be signed", key="documents.error.locked")
    version.locked = True
    if not complete:
        version.status = "signing"
        if doc.status == "draft":
            doc.status = "signing"
        session.commit()
        return doc
    return _now_signed(session, actor, doc, version)


def complete_signing(session: Session, actor: Actor, document_id: int, version_number: int) -> Document:
    """The last required signature of a ``signing`` version landed: the version is signed now (emr.signing)."""
    doc = get_or_404(session, Document, document_id, "document")
    version = _version(doc, version_number)
    if doc.status == "cancelled" or not version.locked or version.status != "signing":
        raise InvalidState("only a version awaiting signatures can be completed", key="documents.error.locked")
    return _now_signed(session, actor, doc, version)


def _now_signed(session: Session, actor: Actor, doc: Document, version: DocumentVersion) -> Document:
    version.status = "signed"
    version.signed_at = utcnow()
    version.signed_by = actor.user_id
    if version.amends_version_id is not None:  # the amendment is signed: only now is the old version replaced
        amended = _version_by_id(doc, version.amends_version_id)
        if amended is not None and amended.status in ("signed", "signing"):
            amended.status = "superseded"
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
    doc = _fresh_document(session, document_id, lock=True)
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    reason = _reason(reason)
    if doc.status == "cancelled":
        raise InvalidState("already cancelled", key="documents.error.cancelled")
    capacity = require_signer_or_head(session, actor, doc, "document.cancel")
    doc.status_before_cancel = doc.status
    doc.status = "cancelled"
    if doc.status_before_cancel in _SIGNED:
        _reflect_on_order(session, doc)
    doc.cancel_reason = reason
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
    doc = _fresh_document(session, document_id, lock=True)
    ensure_patient_access(session, actor, doc.patient_id)  # issue 10: care scope
    reason = _reason(reason)
    if doc.status != "cancelled":
        raise InvalidState("not cancelled", key="documents.error.not_cancelled")
    capacity = require_signer_or_head(session, actor, doc, "document.restore")
    if doc.form_type == "radiology_report" and doc.order_id is not None:
        _lock_order_for_report(session, doc.order_id, excluding=doc.id)  # another report was written meanwhile
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
