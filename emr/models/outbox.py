"""The durable outbox: messages to other systems, written in the same transaction as the change.

A message is one thing to deliver (a FHIR Bundle to the health record, a
study to another site, an HL7 message to the HIS). It is stored before it is
sent, so a crash, a restart or an unreachable receiver loses nothing; the
unique (kind, key) makes enqueueing idempotent so nothing is sent twice.
Every delivery attempt is kept in ``outbox_attempts`` for the operator page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

__all__ = ["OUTBOX_STATUSES", "OutboxAttempt", "OutboxMessage"]

# waiting: never tried or resent; sending: claimed by a worker (lease);
# sent: delivered; failed: last attempt failed, will retry; dead: gave up.
OUTBOX_STATUSES = ("waiting", "sending", "sent", "failed", "dead")


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # handler name, e.g. "ehr.bundle"
    key: Mapped[str] = mapped_column(String(160))  # idempotency key within the kind (e.g. content hash)
    target: Mapped[str] = mapped_column(String(255))  # where it goes (URL, site name), shown to operators
    subject: Mapped[str | None] = mapped_column(String(255))  # one line for people: "Visit 12 summary"
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="waiting")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts in the current round (resend resets)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_token: Mapped[str | None] = mapped_column(String(40))  # who holds it while "sending"
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)  # what the receiver answered (id, location), shown
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    attempt_log: Mapped[list[OutboxAttempt]] = relationship(
        back_populates="message", order_by="OutboxAttempt.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("kind", "key", name="uq_outbox_messages_kind_key"),
        Index("ix_outbox_messages_due", "status", "next_attempt_at"),
        Index("ix_outbox_messages_kind_status", "kind", "status"),
    )


class OutboxAttempt(Base):
    """One delivery attempt: when, by which worker, how it ended."""

    __tablename__ = "outbox_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("outbox_messages.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime] = mapped_column(DateTime)
    outcome: Mapped[str] = mapped_column(String(10))  # sent | failed | dead
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(80))

    message: Mapped[OutboxMessage] = relationship(back_populates="attempt_log")
