"""Identity checks against the national population database, and their reconciliation (issue 15 §3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["IdentityCheck", "CHECK_STATUSES", "DECISIONS"]

# queued: waiting for the gateway (registration never waits for it); matched; mismatch and
# not_found: a reconciliation item until decided; failed: the gateway's answer was unusable.
CHECK_STATUSES = ("queued", "matched", "mismatch", "not_found", "failed")
# accept_national: the patient now carries the national data; keep_local: the local record
# stands (reason given); escalated: handed to an administrator, still open.
DECISIONS = ("accept_national", "keep_local", "escalated")


class IdentityCheck(Base):
    """One check of one patient's CCCD; the national answer is stored as received, never as typed."""

    __tablename__ = "identity_checks"
    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    cccd: Mapped[str] = mapped_column(String(12))
    trigger: Mapped[str] = mapped_column(String(12))  # registration | update | export
    status: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(300))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime | None]
    # The local record when checked, and the national answer (birth date 'YYYY-MM-DD' or 'YYYY').
    local_name: Mapped[str | None] = mapped_column(String(200))
    local_birth: Mapped[str | None] = mapped_column(String(10))
    local_sex: Mapped[str | None] = mapped_column(String(1))
    national_name: Mapped[str | None] = mapped_column(String(200))
    national_birth: Mapped[str | None] = mapped_column(String(10))
    national_sex: Mapped[str | None] = mapped_column(String(1))
    differences: Mapped[str | None] = mapped_column(String(60))  # comma-separated field names
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
    resolved: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index("ix_identity_checks_patient", "patient_id", "requested_at"),
        Index("ix_identity_checks_open", "resolved", "status"),
    )
