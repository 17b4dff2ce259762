"""Filtering the audit log for the admin page (itself audited)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor

from ..models import AuditEntry

__all__ = ["search_audit"]


def _day(value: str) -> date | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None


def search_audit(
    session: Session,
    actor: Actor,
    *,
    patient: str = "",
    user: str = "",
    date_from: str = "",
    date_to: str = "",
    limit: int = 200,
) -> list[AuditEntry]:
    stmt = select(AuditEntry)
    if patient.isdigit() and int(patient) < 2**31:
        stmt = stmt.where(AuditEntry.patient_id == int(patient))
    if user:
        stmt = stmt.where(AuditEntry.username == user)
    lo, hi = _day(date_from), _day(date_to)
    if lo:
        stmt = stmt.where(AuditEntry.at >= lo.isoformat())
    if hi:
        stmt = stmt.where(AuditEntry.at < (hi + timedelta(days=1)).isoformat())
    rows = list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)))
    audit.record(
        session,
        actor,
        "audit.view",
        object_type="audit",
        details={"patient": patient, "user": user, "from": date_from, "to": date_to},
    )
    session.commit()
    return rows
