"""The append-only, hash-chained audit log.

Each row stores SHA-256(previous hash + canonical JSON of its own fields);
``audit_head`` holds the id and hash of the newest row so that deleting rows
at the end of the chain is detected too. Timestamps are ISO strings so the
hashed bytes are identical on every database.

``audit_anchors`` holds the external anchors of the chain: an RFC 3161
timestamp token from a trusted time-stamping authority over the SHA-256 of a
canonical statement of (last row id, its hash). Someone able to rewrite the
whole chain and its head cannot get a token for the rewritten hash dated in
the past, so verification catches a rewrite of every anchored row.
"""

from __future__ import annotations

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

__all__ = ["AuditAnchor", "AuditEntry", "AuditHead"]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(32))  # 2026-11-23T08:00:00.000000Z
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(12))  # success | denied | failure
    patient_id: Mapped[int | None] = mapped_column(Integer)
    object_type: Mapped[str | None] = mapped_column(String(30))
    object_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_patient", "patient_id", "id"),
        Index("ix_audit_log_user", "user_id", "id"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_username", "username", "id"),
        Index("ix_audit_log_action", "action", "id"),
    )


class AuditHead(Base):
    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=0)


class AuditAnchor(Base):
    """One trusted timestamp over the chain's head at that moment (append-only)."""

    __tablename__ = "audit_anchors"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The token's own time (genTime, UTC), same format as AuditEntry.at.
    created_at: Mapped[str] = mapped_column(String(32))
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    token: Mapped[bytes] = mapped_column(LargeBinary)  # DER ContentInfo (RFC 3161 TimeStampToken)
    tsa_url: Mapped[str] = mapped_column(String(500))
