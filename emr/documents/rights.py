"""Who may change a record document, beyond what the role allows.

The role matrix (``document.write``, ``document.cancel``) says which kinds of
users may edit or cancel documents at all; this module says which of them
may touch *this* document:

* a draft is edited only by its author — nobody can put words into a
  colleague's report before they sign it;
* a signed document (or one whose newest signed version is being amended) is
  amended, cancelled or restored only by one of its signers or by a head of
  the encounter's department (``User.is_department_head``);
* an unsigned draft is cancelled or restored by its author or that head.

Every refusal is audited (``outcome="denied"``) before it is raised.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.exceptions import EmrError
from emr.models import Document, DocumentVersion, Encounter, User
from emr.models.signing import DocumentSignature

__all__ = [
    "NotAllowedOnDocument",
    "capacity",
    "last_signed_version",
    "may_edit_draft",
    "require_author",
    "require_signer_or_head",
]


class NotAllowedOnDocument(EmrError):
    """The role may do this to documents, but not to this one (not its author, signer or head)."""

    code = "forbidden"
    http_status = 403


def last_signed_version(doc: Document) -> DocumentVersion | None:
    signed = [v for v in doc.versions if v.locked]
    return max(signed, key=lambda v: v.number) if signed else None


def _signers(session: Session, version: DocumentVersion) -> set[int]:
    ids = set(session.scalars(select(DocumentSignature.signer_id).where(DocumentSignature.version_id == version.id)))
    if version.signed_by is not None:
        ids.add(version.signed_by)
    return ids


def _is_head(session: Session, doc: Document, user_id: int | None) -> bool:
    user = session.get(User, user_id) if user_id else None
    enc = session.get(Encounter, doc.encounter_id)
    return bool(
        user is not None
        and user.active
        and user.is_department_head
        and enc is not None
        and user.department_id is not None
        and user.department_id == enc.department_id
    )


def _deny(session: Session, actor: Actor, doc: Document, action: str, key: str, why: str) -> NotAllowedOnDocument:
    audit.record(
        session,
        actor,
        action,
        outcome="denied",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"reason": why},
    )
    session.commit()
    return NotAllowedOnDocument(f"user {actor.user_id} may not {action} document {doc.id} ({why})", key=key)


def require_author(session: Session, actor: Actor, doc: Document, version: DocumentVersion, action: str) -> str:
    """Only the author of the draft ``version`` edits it. Returns ``"author"``."""
    if actor.user_id is not None and actor.user_id == version.created_by:
        return "author"
    raise _deny(session, actor, doc, action, "documents.error.not_author", "not_author")


def capacity(session: Session, doc: Document, user_id: int | None) -> str | None:
    """In which capacity ``user_id`` may cancel, restore or amend ``doc``: ``signer`` (of the newest signed
    version), ``author`` (of a never-signed draft), ``head`` (of the encounter's department), or None."""
    signed = last_signed_version(doc)
    if signed is not None:
        if user_id is not None and user_id in _signers(session, signed):
            return "signer"
    else:
        current = next((v for v in doc.versions if v.number == doc.current_version), None)
        if current is not None and user_id is not None and user_id == current.created_by:
            return "author"
    return "head" if _is_head(session, doc, user_id) else None


def may_edit_draft(doc: Document, user_id: int | None) -> bool:
    """For screens: is the current version a draft this user wrote?"""
    current = next((v for v in doc.versions if v.number == doc.current_version), None)
    return current is not None and not current.locked and user_id is not None and user_id == current.created_by


def require_signer_or_head(session: Session, actor: Actor, doc: Document, action: str) -> str:
    """Signer of the newest signed version (author, for a never-signed draft) or head of department.

    Returns the capacity in which the actor may act: ``signer``, ``author`` or ``head``.
    """
    found = capacity(session, doc, actor.user_id)
    if found is not None:
        return found
    signed = last_signed_version(doc) is not None
    key = "documents.error.not_signer" if signed else "documents.error.not_author"
    raise _deny(session, actor, doc, action, key, "not_signer_or_head" if signed else "not_author")
