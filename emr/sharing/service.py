"""Film-less patient access: a short link + PIN (printed on an A5 slip) to one study and its signed report.

Why a code *and* a PIN: the QR code may be photographed or forwarded; the
PIN, printed apart and never stored in clear, is the second factor. PIN
guessing is bounded: every ``PIN_LOCK_AFTER`` wrong PINs lock the link for
``PIN_LOCK_MINUTES``; after ``PIN_MAX_FAILURES`` wrong PINs in total the
link is dead (the hospital prints a new slip). Every access is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access
from emr.access.permissions import allowed
from emr.core.exceptions import EmrError, InvalidState, NotFoundError, PermissionDenied
from emr.core.states import StudyState
from emr.models.lookup import get_or_404
from emr.reading.service import latest_report, signed_version

from ..models import Document, DocumentVersion, ShareLink, Study, utcnow

__all__ = [
    "DEFAULT_DAYS",
    "ShareDenied",
    "ShareLocked",
    "WrongPin",
    "check_pin",
    "create_share_link",
    "find_link",
    "list_share_links",
    "live_link",
    "record_share_access",
    "revoke_share_link",
    "share_actor",
    "share_link_rows",
    "shared_report",
    "shared_report_pdf",
]

DEFAULT_DAYS = 30
PIN_LOCK_AFTER = 5
PIN_LOCK_MINUTES = 15
PIN_MAX_FAILURES = 20
_CODE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read aloud over the phone
_CODE_LENGTH = 12  # ≈ 59 bits
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class ShareDenied(EmrError):
    """The link cannot be used: ``reason`` is ``expired`` or ``revoked``."""

    code = "share_denied"
    http_status = 410

    def __init__(self, reason: str) -> None:
        super().__init__(f"share link {reason}", key=f"share.error.{reason}")
        self.reason = reason


class ShareLocked(EmrError):
    code = "share_locked"
    http_status = 429

    def __init__(self) -> None:
        super().__init__("too many wrong PINs", key="share.error.locked")


class WrongPin(EmrError):
    code = "wrong_pin"
    http_status = 403

    def __init__(self) -> None:
        super().__init__("wrong PIN", key="share.error.pin")


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode("utf-8")).hexdigest()


def share_actor(link: ShareLink, client_ip: str | None) -> Actor:
    """Who a share-link visitor is in the audit log: the link, not a user."""
    return Actor(None, f"share:{link.id}", None, client_ip)


def create_share_link(
    session: Session, actor: Actor, study_id: int, *, days: int = DEFAULT_DAYS
) -> tuple[ShareLink, str, str]:
    """A new link to a linked study whose report is signed; returns (link, code, PIN) — shown once.

    The link shows images and the signed report, so the actor's role must hold
    ``share.create`` (which implies both; issue 10: a slip is no way around the role matrix).
    """
    if not allowed(actor.role, "share.create"):
        _refuse(session, actor, "share.create", "study", study_id)
    study = get_or_404(session, Study, study_id, "study")
    if study.state != StudyState.LINKED or study.patient_id is None or study.order_id is None:
        raise InvalidState("study not linked to a patient", key="share.error.not_linked")
    ensure_patient_access(session, actor, study.patient_id)  # issue 10: care scope, as for revoking
    report = latest_report(session, study.order_id)
    if report is None or signed_version(report) is None:
        raise InvalidState("the report is not signed yet", key="share.error.not_signed")
    if not 1 <= days <= 365:
        raise InvalidState("validity out of range", key="share.error.days")
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    pin = f"{secrets.randbelow(10**6):06d}"
    now = utcnow()
    link = ShareLink(
        code_sha256=_code_hash(code),
        pin_hash=_HASHER.hash(pin),
        study_id=study.id,
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        document_id=report.id,
        created_by=actor.user_id or 0,
        created_at=now,
        expires_at=now + timedelta(days=days),
        failed_attempts=0,
        code_hint=code[-4:],
    )
    session.add(link)
    session.flush()
    audit.record(
        session,
        actor,
        "share.create",
        patient_id=study.patient_id,
        object_type="share_link",
        object_id=link.id,
        details={"study_uid": study.study_instance_uid, "days": days},
    )
    session.commit()
    return link, code, pin


def list_share_links(session: Session, study_id: int) -> list[ShareLink]:
    return list(session.scalars(select(ShareLink).where(ShareLink.study_id == study_id).order_by(ShareLink.id.desc())))


def share_link_rows(session: Session, study_id: int) -> list[dict[str, Any]]:
    """The study's links as staff see them: code ending, who printed it, when last opened, state.

    Every *In phiếu* prints a new valid link and PIN, so the desk needs to see which
    ones exist before revoking; the full code is never stored, only its last characters.
    """
    from ..models import User

    links = list_share_links(session, study_id)
    ids = {link.created_by for link in links}
    names = {uid: name for uid, name in session.execute(select(User.id, User.full_name).where(User.id.in_(ids)))}
    now = utcnow()
    return [
        {
            "id": link.id,
            "code_hint": link.code_hint or "",
            "created_at": link.created_at,
            "created_by": names.get(link.created_by, ""),
            "expires_at": link.expires_at,
            "last_access_at": link.last_access_at,
            "state": _status(link, now) or "active",
        }
        for link in links
    ]


def _shared_version(session: Session, link: ShareLink) -> DocumentVersion | None:
    """The signed version of the report a link shares; ``None`` without one or when it was cancelled."""
    if link.document_id is None:
        return None
    doc = session.get(Document, link.document_id)
    if doc is None or doc.status == "cancelled":
        return None
    return signed_version(doc)


def shared_report_pdf(session: Session, link: ShareLink) -> bytes | None:
    """The signed report PDF of a link (the complete, signed artifact only), for the patient to keep."""
    from emr.signing.service import artifact_for

    version = _shared_version(session, link)
    if version is None:
        return None
    artifact = artifact_for(session, version.id)
    if artifact is None or not artifact.complete:
        return None
    return artifact.pdf


def _refuse(session: Session, actor: Actor, action: str, object_type: str, object_id: int) -> NoReturn:
    """Audit a refused slip action (own transaction), then refuse it: the service holds the rule too,
    so an API or a future view that forgets ``@requires`` cannot forget the check."""
    session.rollback()
    audit.record(session, actor, action, outcome="denied", object_type=object_type, object_id=object_id)
    session.commit()
    raise PermissionDenied(action)


def revoke_share_link(session: Session, actor: Actor, link_id: int) -> ShareLink:
    """End a link (the patient's access with that slip). Only roles holding ``share.manage`` — those
    that print slips, and the records clerk — and, for scoped roles, for a patient in their care."""
    if not allowed(actor.role, "share.manage"):
        _refuse(session, actor, "share.revoke", "share_link", link_id)
    link = get_or_404(session, ShareLink, link_id, "share_link")
    ensure_patient_access(session, actor, link.patient_id)  # issue 10: care scope
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        link.revoked_by = actor.user_id
        audit.record(
            session, actor, "share.revoke", patient_id=link.patient_id, object_type="share_link", object_id=link.id
        )
        session.commit()
    return link


def _status(link: ShareLink, now: datetime) -> str | None:
    if link.revoked_at is not None or link.failed_attempts >= PIN_MAX_FAILURES:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    return None


def live_link(session: Session, link_id: int) -> ShareLink:
    """The link by id if it may still be used (viewer tokens name the link by id)."""
    link = session.get(ShareLink, link_id)
    if link is None:
        raise NotFoundError("share_link", link_id)
    reason = _status(link, utcnow())
    if reason:
        raise ShareDenied(reason)
    return link


def find_link(session: Session, code: str) -> ShareLink:
    """The link a short code names; unknown, expired and revoked links raise."""
    code = (code or "").strip().lower()
    if not code or len(code) > 32 or any(c not in _CODE_ALPHABET for c in code):
        raise NotFoundError("share_link", "?")
    link = session.scalar(select(ShareLink).where(ShareLink.code_sha256 == _code_hash(code)))
    if link is None:
        raise NotFoundError("share_link", "?")
    reason = _status(link, utcnow())
    if reason:
        raise ShareDenied(reason)
    return link


def check_pin(session: Session, link: ShareLink, pin: str, client_ip: str | None) -> None:
    """Verify the PIN (rate-limited); success and failure are audited and committed."""
    now = utcnow()
    actor = share_actor(link, client_ip)
    if link.locked_until is not None and link.locked_until > now:
        audit.record(
            session,
            actor,
            "share.pin",
            outcome="denied",
            patient_id=link.patient_id,
            object_type="share_link",
            object_id=link.id,
            details={"locked": True},
        )
        session.commit()
        raise ShareLocked()
    pin = (pin or "").strip()
    ok = False
    if pin.isdigit() and len(pin) == 6:
        try:
            ok = _HASHER.verify(link.pin_hash, pin)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        # Same cost for malformed input: timing does not tell a format error from a wrong PIN.
        hmac.compare_digest(pin.encode(), b"000000")
    if not ok:
        link.failed_attempts += 1
        if link.failed_attempts % PIN_LOCK_AFTER == 0:
            link.locked_until = now + timedelta(minutes=PIN_LOCK_MINUTES)
        audit.record(
            session,
            actor,
            "share.pin",
            outcome="denied",
            patient_id=link.patient_id,
            object_type="share_link",
            object_id=link.id,
            details={"failures": link.failed_attempts},
        )
        session.commit()
        if link.failed_attempts >= PIN_MAX_FAILURES:
            raise ShareDenied("revoked")
        raise WrongPin()
    link.last_access_at = now
    record_share_access(session, link, client_ip, "share.open")


def record_share_access(
    session: Session, link: ShareLink, client_ip: str | None, action: str, details: dict[str, Any] | None = None
) -> None:
    """Audit one use of a link and remember when it was last opened (shown beside the link to staff)."""
    link.last_access_at = utcnow()
    audit.record(
        session,
        share_actor(link, client_ip),
        action,
        patient_id=link.patient_id,
        object_type="share_link",
        object_id=link.id,
        details={"study_uid": link.study_instance_uid, **(details or {})},
    )
    session.commit()


def shared_report(session: Session, link: ShareLink) -> dict[str, Any] | None:
    """The signed report content the link shows (findings, conclusion, reader, signed time)."""
    import json

    from ..models import User

    version = _shared_version(session, link)
    if version is None:
        return None
    reader = session.get(User, version.signed_by or version.created_by)
    content = json.loads(version.content_json)
    return {
        "content": content,
        "reader": reader.full_name if reader else "",
        "signed_at": version.signed_at,
        "version": version.number,
    }
