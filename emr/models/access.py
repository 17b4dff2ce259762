"""Break-the-glass grants: a clinician opened a patient outside their care, with a reason, for a few hours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["BreakGlassAccess"]


class BreakGlassAccess(Base):
    """One emergency access: who, which patient, why, until when (naive UTC); kept for review."""

    __tablename__ = "break_glass_access"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    client_ip: Mapped[str | None] = mapped_column(String(45))
    # The review (migration 0022): who marked the access reviewed, when (naive UTC), and their note.
    reviewed_at: Mapped[datetime | None]
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    review_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_break_glass_user_patient", "user_id", "patient_id", "expires_at"),
        Index("ix_break_glass_created_at", "created_at"),
    )
