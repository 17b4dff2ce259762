"""HL7 v2 interface with the hospital information system (issue 15 §5).

Every message in or out is one ``hl7_messages`` row holding the exact bytes as
they crossed the wire (so a replay reproduces the charset too), what was done
with it and the acknowledgement. The two link tables remember which local
patient and order stand for the HIS's patient identifier (PID-3) and placer
order number (ORC-2), so an update, merge or cancel finds them again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["Hl7Message", "Hl7PatientLink", "Hl7OrderLink", "HL7_DIRECTIONS", "HL7_STATUSES"]

HL7_DIRECTIONS = ("in", "out")
# in: processed (AA), error (AE: understood, could not be applied), rejected (AR: refused unread
# or malformed), duplicate (a retransmission of a processed message, answered AA again).
# out: queued (in the outbox), sent (AA from the receiver), failed (will retry), refused (AE/AR).
HL7_STATUSES = ("processed", "error", "rejected", "duplicate", "queued", "sent", "failed", "refused")


class Hl7Message(Base):
    __tablename__ = "hl7_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(String(3))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    peer: Mapped[str | None] = mapped_column(String(80))  # ip:port (in) or host:port (out)
    sending_application: Mapped[str | None] = mapped_column(String(180))
    sending_facility: Mapped[str | None] = mapped_column(String(180))
    message_type: Mapped[str | None] = mapped_column(String(20))  # e.g. ADT^A01
    control_id: Mapped[str | None] = mapped_column(String(199))  # MSH-10
    charset: Mapped[str | None] = mapped_column(String(40))  # the Python codec used
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(12))
    ack_code: Mapped[str | None] = mapped_column(String(2))  # AA / AE / AR
    ack: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_orders.id"))
    replay_of_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_messages.id"))
    replayed_by: Mapped[str | None] = mapped_column(String(64))
    # When ``raw`` and ``ack`` were emptied after FILMLESS_HL7_KEEP_DAYS (the row itself stays).
    raw_purged_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_hl7_messages_at", "at"),
        Index("ix_hl7_messages_control", "sending_facility", "control_id"),
        Index("ix_hl7_messages_status", "status", "at"),
    )


class Hl7PatientLink(Base):
    """The HIS's identifier (PID-3 with its assigning authority) → the local patient."""

    __tablename__ = "hl7_patient_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    authority: Mapped[str] = mapped_column(String(180))  # PID-3.4, else MSH-4
    identifier: Mapped[str] = mapped_column(String(80))  # PID-3.1
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("authority", "identifier", name="uq_hl7_patient_links"),)


class Hl7OrderLink(Base):
    """The HIS's placer order number (ORC-2) → the local imaging order (its accession number is the filler)."""

    __tablename__ = "hl7_order_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    authority: Mapped[str] = mapped_column(String(180))  # ORC-2.2, else MSH-4
    placer_number: Mapped[str] = mapped_column(String(80))
    order_id: Mapped[int] = mapped_column(ForeignKey("imaging_orders.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("authority", "placer_number", name="uq_hl7_order_links"),)
