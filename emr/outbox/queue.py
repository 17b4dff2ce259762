"""Putting messages in the outbox and reading them back (chart status, operator page).

``enqueue`` runs in the caller's transaction: the change (a signed report, a
closed visit) and the message to announce it are committed together or not
at all. It is idempotent on (kind, key): the unique constraint, not a
read-then-write, decides, so two requests racing with one key make one row.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from emr.access.audit import Actor, record
from emr.core import clock
from emr.core.exceptions import InvalidState, NotFoundError, ValidationFailed
from emr.models import OUTBOX_STATUSES, OutboxMessage

__all__ = [
    "OutboxOverview",
    "enqueue",
    "get_message",
    "list_messages",
    "messages_for_patient",
    "overview",
    "resend",
    "wake_event",
]

# Set after a transaction that enqueued something commits: the worker in this
# process sends at once instead of at its next poll.
wake_event = threading.Event()


def _wake(_session: Session) -> None:
    wake_event.set()


def enqueue(
    session: Session,
    kind: str,
    key: str,
    payload: dict[str, Any],
    *,
    target: str,
    patient_id: int | None = None,
    subject: str | None = None,
) -> OutboxMessage:
    """Store one message to deliver (the caller commits); the same (kind, key) returns the existing row."""
    if not kind or len(kind) > 40:
        raise ValidationFailed({"kind": "outbox.errors.kind"}, "kind must be 1-40 characters")
    if not key or len(key) > 160:
        raise ValidationFailed({"key": "outbox.errors.key"}, "key must be 1-160 characters")
    now = clock.utcnow()
    values: dict[str, Any] = {
        "kind": kind,
        "key": key,
        "target": target[:255],
        "subject": subject[:255] if subject else None,
        "patient_id": patient_id,
        "payload": payload,
        "status": "waiting",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(OutboxMessage).values(**values).on_conflict_do_nothing(index_elements=["kind", "key"])
    inserted = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    message = session.execute(
        select(OutboxMessage).where(OutboxMessage.kind == kind, OutboxMessage.key == key)
    ).scalar_one()
    if inserted:
        event.listen(session, "after_commit", _wake, once=True)
    return message


def messages_for_patient(session: Session, patient_id: int) -> list[OutboxMessage]:
    """Every message about one patient, newest first (the chart shows their status)."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.patient_id == patient_id)
            .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
        )
    )


def get_message(session: Session, message_id: int) -> OutboxMessage:
    message = session.get(OutboxMessage, message_id)
    if message is None:
        raise NotFoundError("outbox message", message_id)
    return message


def list_messages(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OutboxMessage]:
    """Messages for the operator page, oldest due first within a status."""
    if status is not None and status not in OUTBOX_STATUSES:
        raise ValidationFailed({"status": "outbox.errors.status"}, f"unknown status {status!r}")
    query = select(OutboxMessage)
    if status:
        query = query.where(OutboxMessage.status == status)
    if kind:
        query = query.where(OutboxMessage.kind == kind)
    query = query.order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    return list(session.scalars(query.limit(max(1, min(limit, 500))).offset(max(0, offset))))


@dataclass(frozen=True)
class OutboxOverview:
    """Counts per status, the kinds seen, and how long the oldest unsent message has waited."""

    counts: dict[str, int]
    kinds: list[str]
    oldest_pending_at: datetime | None

    def oldest_pending_age(self, now: datetime | None = None) -> timedelta | None:
        if self.oldest_pending_at is None:
            return None
        return (now or clock.utcnow()) - self.oldest_pending_at


def overview(session: Session) -> OutboxOverview:
    rows = session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all()
    counts = {status: 0 for status in OUTBOX_STATUSES}
    counts.update({status: n for status, n in rows})
    kinds = list(session.scalars(select(OutboxMessage.kind).distinct().order_by(OutboxMessage.kind)))
    oldest = session.scalar(
        select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status.in_(("waiting", "sending", "failed")))
    )
    return OutboxOverview(counts, kinds, oldest)


def resend(session: Session, message_id: int, actor: Actor) -> OutboxMessage:
    """Put a dead or failed message back in the queue for a new round of attempts (audited; caller commits)."""
    message = get_message(session, message_id)
    if message.status not in ("dead", "failed"):
        raise InvalidState(
            f"outbox message {message_id} is {message.status}", key="outbox.errors.not_resendable"
        )
    previous = message.status
    now = clock.utcnow()
    message.status = "waiting"
    message.attempts = 0
    message.next_attempt_at = now
    message.updated_at = now
    record(
        session,
        actor,
        "outbox.resend",
        patient_id=message.patient_id,
        object_type="outbox_message",
        object_id=message.id,
        details={"kind": message.kind, "previous_status": previous},
    )
    session.flush()
    event.listen(session, "after_commit", _wake, once=True)
    return message
