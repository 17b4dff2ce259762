"""Break the glass: a clinician opens a patient outside their care in an emergency.

A reason is required, the access lasts a few hours (``break_glass_hours`` in
the settings, 4 by default) and is written twice: a ``break_glass_access``
row, which the care rule reads, and an audit row with the reason. The admin
reviews every such access on /admin/break-glass: beside each one, what the
user did with that patient while it lasted (from the audit log), and a mark
"reviewed" with who, when and a note (migration 0022), itself audited. The head
of a department (trưởng khoa) reviews there the accesses of the users of their
own department (:class:`ReviewScope`, rule in emr.access.permissions).

While an access lasts, every page its user sees says so (:func:`active_grants`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from emr.access import audit
from emr.access.audit import Actor
from emr.access.permissions import allowed, break_glass_department
from emr.core.exceptions import ConflictError, PermissionDenied, ValidationFailed
from emr.models import AuditEntry, BreakGlassAccess, Patient, User, utcnow
from emr.models.lookup import get_or_404

__all__ = [
    "DEFAULT_HOURS",
    "MAX_NOTE",
    "MIN_REASON",
    "ActiveGrant",
    "BreakGlassRow",
    "ReviewScope",
    "active_grants",
    "mark_reviewed",
    "open_break_glass",
    "pending_count",
    "recent_break_glass",
    "review_scope",
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


@dataclass(frozen=True)
class ActiveGrant:
    """A patient the user holds an emergency access to now, and when the last of its accesses ends."""

    patient_id: int
    patient_name: str
    patient_code: str
    expires_at: datetime  # naive UTC


def active_grants(session: Session, user_id: int, now: datetime | None = None) -> list[ActiveGrant]:
    """The user's emergency accesses in force, one line per patient (the latest end), soonest ending first.

    One query on the (user_id, patient_id, expires_at) index: it runs on every page the user opens."""
    now = now or utcnow()
    rows = session.execute(
        select(Patient.id, Patient.full_name, Patient.code, func.max(BreakGlassAccess.expires_at))
        .select_from(BreakGlassAccess)
        .join(Patient, Patient.id == BreakGlassAccess.patient_id)
        .where(BreakGlassAccess.user_id == user_id, BreakGlassAccess.expires_at > now)
        .group_by(Patient.id, Patient.full_name, Patient.code)
    ).all()
    out = [ActiveGrant(int(pid), str(name), str(code), until) for pid, name, code, until in rows]
    return sorted(out, key=lambda g: (g.expires_at, g.patient_id))


@dataclass(frozen=True)
class ReviewScope:
    """Whose emergency accesses a reviewer sees and marks: every one (admins, ``department_id`` None), or
    those of the users now in ``department_id`` other than the reviewer (its head)."""

    reviewer_id: int | None
    department_id: int | None = None

    def where(self) -> list[Any]:
        """Conditions on ``BreakGlassAccess`` joined with its ``User``, for a list of what the scope covers."""
        if self.department_id is None:
            return []
        return [User.department_id == self.department_id, BreakGlassAccess.user_id != self.reviewer_id]

    def covers(self, grant: BreakGlassAccess, user: User | None) -> bool:
        if self.department_id is None:
            return True
        return user is not None and user.department_id == self.department_id and grant.user_id != self.reviewer_id


def review_scope(session: Session, actor: Actor) -> ReviewScope | None:
    """What ``actor`` may review: everything (admin), their department's accesses (its head), or None."""
    if allowed(actor.role, "break_glass.review"):
        return ReviewScope(actor.user_id)
    if actor.user_id is None:
        return None
    department = break_glass_department(session.get(User, actor.user_id))
    return ReviewScope(actor.user_id, department) if department is not None else None


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
    """The newest break-the-glass accesses ``actor`` may review (``pending_only``: those not reviewed yet);
    the review itself is audited."""
    scope = review_scope(session, actor)
    if scope is None:
        raise PermissionDenied("break_glass.review")
    now = now or utcnow()
    reviewer = aliased(User)
    stmt = (
        select(BreakGlassAccess, User, Patient, reviewer)
        .join(User, User.id == BreakGlassAccess.user_id)
        .join(Patient, Patient.id == BreakGlassAccess.patient_id)
        .outerjoin(reviewer, reviewer.id == BreakGlassAccess.reviewed_by)
        .where(*scope.where())
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
        details={"rows": len(rows), "pending_only": pending_only, "department_id": scope.department_id},
    )
    session.commit()
    return out


def pending_count(session: Session, scope: ReviewScope | None = None) -> int:
    """How many accesses nobody has reviewed yet (of those ``scope`` covers; all without one)."""
    stmt = select(func.count()).select_from(BreakGlassAccess).where(BreakGlassAccess.reviewed_at.is_(None))
    if scope is not None and scope.department_id is not None:
        stmt = stmt.join(User, User.id == BreakGlassAccess.user_id).where(*scope.where())
    return int(session.scalar(stmt) or 0)


def mark_reviewed(session: Session, actor: Actor, grant_id: int, note: str = "") -> BreakGlassAccess:
    """Mark one access reviewed by ``actor`` now, with an optional note (at most 1000 characters); audited.

    An admin marks any access, the head of a department those of their department's users (not their
    own); an access outside the reviewer's scope is refused and the refusal audited.
    Once only: a second mark (two admins, a replayed form) is refused with who reviewed it and when,
    so the first reviewer's note is never overwritten.
    """
    scope = review_scope(session, actor)
    if actor.user_id is None or scope is None:
        raise PermissionDenied("break_glass.review")
    grant = get_or_404(session, BreakGlassAccess, grant_id, "break_glass")
    if not scope.covers(grant, session.get(User, grant.user_id)):
        audit.record(
            session,
            actor,
            "break_glass.reviewed",
            outcome="denied",
            patient_id=grant.patient_id,
            object_type="break_glass",
            object_id=grant.id,
            details={"department_id": scope.department_id},
        )
        session.commit()
        raise PermissionDenied("break_glass.reviewed")
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
        details={"note": note, "user_id": grant.user_id, "department_id": scope.department_id},
    )
    session.commit()
    return grant
