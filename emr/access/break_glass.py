"""Break the glass: a clinician opens a patient outside their care in an emergency.

A reason is required, the access lasts a few hours (``break_glass_hours`` in
the settings, 4 by default) and is written twice: a ``break_glass_access``
row, which the care rule reads, and an audit row with the reason. The admin
reviews every such access on /admin/break-glass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.permissions import allowed
from emr.core.exceptions import PermissionDenied, ValidationFailed
from emr.models import BreakGlassAccess, Patient, User, utcnow
from emr.models.lookup import get_or_404

__all__ = ["DEFAULT_HOURS", "MIN_REASON", "BreakGlassRow", "open_break_glass", "recent_break_glass"]

DEFAULT_HOURS = 4
MIN_REASON = 10
MAX_REASON = 1000


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


def recent_break_glass(
    session: Session, actor: Actor, limit: int = 500, now: datetime | None = None
) -> list[BreakGlassRow]:
    """The newest break-the-glass accesses, for review; the review itself is audited."""
    now = now or utcnow()
    rows = session.execute(
        select(BreakGlassAccess, User, Patient)
        .join(User, User.id == BreakGlassAccess.user_id)
        .join(Patient, Patient.id == BreakGlassAccess.patient_id)
        .order_by(BreakGlassAccess.created_at.desc(), BreakGlassAccess.id.desc())
        .limit(limit)
    ).all()
    audit.record(session, actor, "break_glass.review", object_type="break_glass", details={"rows": len(rows)})
    session.commit()
    return [BreakGlassRow(g, u, p, g.expires_at > now) for g, u, p in rows]
