"""Break the glass: a clinician opens a patient outside their care in an emergency.

A reason is required, the access lasts a few hours (``break_glass_hours`` in
the settings, 4 by default) and is written twice: a ``break_glass_access``
row, which the care rule reads, and an audit row with the reason. The admin
reviews every such access on /admin/break-glass: beside each one, what the
user did with that patient while it lasted (from the audit log), and a mark
"reviewed" with who, when and a note (migration 0022), itself audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from emr.access import audit
from emr.access.audit import Actor
from emr.access.permissions import allowed
from emr.core.exceptions import ConflictError, PermissionDenied, ValidationFailed
from emr.models import AuditEntry, BreakGlassAccess, Patient, User, utcnow
from emr.models.lookup import get_or_404

__all__ = [
    "DEFAULT_HOURS",
    "MAX_NOTE",
    "MIN_REASON",
    "BreakGlassRow",
    "mark_reviewed",
    "open_break_glass",
    "pending_count",
    "recent_break_glass",
]

DEFAULT_HOURS = 4
MIN_REASON = 10
MAX_REASON = 1000
MAX_NOTE = 1000


def open_break_glass(
    session: Session, actor: Actor, patient_id: int, reason: str, *, hours: int = DEFAULT_HOURS
) -> BreakGlassAccess:
    """Grant ``actor`` access to the patient for ``hours``; the reason must say why (at least 10 characters)."""
    if actor.user_id is None or not allowed(actor.role, "patient.break_glass"):
        raise PermissionDenied("patient.break_glass")
    patient = get_or_404(session, Patient, patient_id, "patient")
    reason = " ".join((reason or "").split())
    if len(reason) < MIN_REASON:
        raise ValidationFailed({"reason": "care.error.reason_required"})
    if len(reason) > MAX_REASON:
        raise ValidationFailed({"reason": "errors.field_too_long_max"}, params={"reason": {"max": MAX_REASON}})
    if not 1 <= hours <= 24:
        raise ValueError("break-the-glass hours must be 1..24")
    now = utcnow()
    grant = BreakGlassAccess(
        user_id=actor.user_id,
        patient_id=patient.id,
        reason=reason,
        created_at=now,
        expires_at=now + timedelta(hours=hours),
        client_ip=actor.client_ip,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        actor,
        "patient.break_glass",
        patient_id=patient.id,
        object_type="break_glass",
        object_id=grant.id,
        details={"reason": reason, "hours": hours},
    )
    session.commit()
    return grant


@dataclass(frozen=True)
class BreakGlassRow:
    grant: BreakGlassAccess
    user: User
    patient: Patient
    active: bool
    reviewer: User | None = None
    # What the user did with the patient while the access lasted: (audit action, times), most first.
    opened: tuple[tuple[str, int], ...] = ()


def _stamp(moment: datetime) -> str:
    """A naive UTC time as the audit log stores ``at`` (text that sorts as time)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _opened(session: Session, grant: BreakGlassAccess) -> tuple[tuple[str, int], ...]:
    """The audit rows of the grant's user on its patient between the grant and its end, by action.

    Walks the (patient_id, id) index: one patient's rows, not the log.
    """
    rows = session.execute(
        select(AuditEntry.action, func.count())
        .where(
            AuditEntry.patient_id == grant.patient_id,
            AuditEntry.user_id == grant.user_id,
            AuditEntry.at >= _stamp(grant.created_at),
            AuditEntry.at <= _stamp(grant.expires_at),
            AuditEntry.action != "patient.break_glass",
        )
        .group_by(AuditEntry.action)
    ).all()
    return tuple(sorted(((str(a), int(n)) for a, n in rows), key=lambda x: (-x[1], x[0])))


def recent_break_glass(
    session: Session, actor: Actor, limit: int = 500, now: datetime | None = None, *, pending_only: bool = False
) -> list[BreakGlassRow]:
    """The newest break-the-glass accesses (``pending_only``: those not reviewed yet), for review;
    the review itself is audited."""
    now = now or utcnow()
    reviewer = aliased(User)
    stmt = (
        select(BreakGlassAccess, User, Patient, reviewer)
        .join(User, User.id == BreakGlassAccess.user_id)
        .join(Patient, Patient.id == BreakGlassAccess.patient_id)
        .outerjoin(reviewer, reviewer.id == BreakGlassAccess.reviewed_by)
    )
    if pending_only:
        stmt = stmt.where(BreakGlassAccess.reviewed_at.is_(None))
    rows = session.execute(
        stmt.order_by(BreakGlassAccess.created_at.desc(), BreakGlassAccess.id.desc()).limit(limit)
    ).all()
    out = [BreakGlassRow(g, u, p, g.expires_at > now, r, _opened(session, g)) for g, u, p, r in rows]
    audit.record(
        session,
        actor,
        "break_glass.review",
        object_type="break_glass",
        details={"rows": len(rows), "pending_only": pending_only},
    )
    session.commit()
    return out


def pending_count(session: Session) -> int:
    """How many accesses nobody has reviewed yet."""
    return int(
        session.scalar(select(func.count()).select_from(BreakGlassAccess).where(BreakGlassAccess.reviewed_at.is_(None)))
        or 0
    )


def mark_reviewed(session: Session, actor: Actor, grant_id: int, note: str = "") -> BreakGlassAccess:
    """Mark one access reviewed by ``actor`` now, with an optional note (at most 1000 characters); audited.

    Once only: a second mark (two admins, a replayed form) is refused with who reviewed it and when,
    so the first reviewer's note is never overwritten.
    """
    if actor.user_id is None or not allowed(actor.role, "break_glass.review"):
        raise PermissionDenied("break_glass.review")
    grant = get_or_404(session, BreakGlassAccess, grant_id, "break_glass")
    note = " ".join((note or "").split())
    if len(note) > MAX_NOTE:
        raise ValidationFailed({"note": "errors.field_too_long_max"}, params={"note": {"max": MAX_NOTE}})
    # One conditional UPDATE: of two reviewers at once, one marks it and the other is told.
    marked = session.execute(
        update(BreakGlassAccess)
        .where(BreakGlassAccess.id == grant.id, BreakGlassAccess.reviewed_at.is_(None))
        .values(reviewed_at=utcnow(), reviewed_by=actor.user_id, review_note=note or None)
        .execution_options(synchronize_session=False)
    )
    if marked.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError("break-the-glass access already reviewed", field="note", key="care.review.error.already")
    session.refresh(grant)
    audit.record(
        session,
        actor,
        "break_glass.reviewed",
        patient_id=grant.patient_id,
        object_type="break_glass",
        object_id=grant.id,
        details={"note": note, "user_id": grant.user_id},
    )
    session.commit()
    return grant
