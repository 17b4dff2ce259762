"""The HL7 message log: listing and reading it (admin page, CLI) and replaying a message.

Replaying an inbound message applies its stored bytes again, exactly as they
arrived (same charset), as a new log row pointing at the original; the sender
check is skipped (an administrator asked for it) and so is the retransmission
check (that is the point). Replaying an outbound one queues it in the outbox
again. Both are audited as ``hl7.replay``; opening a message as ``hl7.view``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core import clock
from emr.core.exceptions import InvalidState, NotFoundError
from emr.core.settings import EmrSettings
from emr.models import HL7_DIRECTIONS, HL7_STATUSES, Hl7Message

from .inbound import Outcome, process

__all__ = [
    "MessageFilter",
    "get_message",
    "list_hl7_messages",
    "list_messages",
    "message_text",
    "purge_raw",
    "replay",
    "replay_hl7_message",
    "status_counts",
]

log = logging.getLogger(__name__)
# Outbound messages still to be delivered keep their bytes whatever their age.
_UNSENT = ("queued", "failed")

PAGE = 50


@dataclass(frozen=True)
class MessageFilter:
    direction: str = ""
    status: str = ""
    message_type: str = ""
    control_id: str = ""

    @classmethod
    def parse(cls, args: Any) -> MessageFilter:
        direction = args.get("direction", "")
        status = args.get("status", "")
        return cls(
            direction=direction if direction in HL7_DIRECTIONS else "",
            status=status if status in HL7_STATUSES else "",
            message_type=str(args.get("type", ""))[:20].strip().upper(),
            control_id=str(args.get("control_id", ""))[:199].strip(),
        )

    def as_args(self) -> dict[str, str]:
        return {k: v for k, v in (("direction", self.direction), ("status", self.status),
                                  ("type", self.message_type), ("control_id", self.control_id)) if v}


def list_messages(session: Session, flt: MessageFilter, *, before: int | None = None, limit: int = PAGE
                  ) -> list[Hl7Message]:
    """Newest first, ``limit`` rows older than id ``before`` (keyset paging: fast on a year of messages)."""
    stmt = select(Hl7Message)
    if flt.direction:
        stmt = stmt.where(Hl7Message.direction == flt.direction)
    if flt.status:
        stmt = stmt.where(Hl7Message.status == flt.status)
    if flt.message_type:
        stmt = stmt.where(Hl7Message.message_type.startswith(flt.message_type, autoescape=True))
    if flt.control_id:
        stmt = stmt.where(Hl7Message.control_id == flt.control_id)
    if before is not None:
        stmt = stmt.where(Hl7Message.id < before)
    return list(session.scalars(stmt.order_by(Hl7Message.id.desc()).limit(limit)))


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Hl7Message.status, func.count()).group_by(Hl7Message.status))
    return {status: int(n) for status, n in rows}


def get_message(session: Session, actor: Actor, message_id: int) -> Hl7Message:
    row = session.get(Hl7Message, message_id)
    if row is None:
        raise NotFoundError("HL7 message", message_id)
    audit.record(session, actor, "hl7.view", patient_id=row.patient_id, object_type="hl7_message", object_id=row.id)
    session.commit()
    return row


def message_text(raw: bytes | None, charset: str | None) -> list[str]:
    """The segments of a stored message as text lines (undecodable bytes shown as U+FFFD)."""
    if not raw:
        return []
    try:
        text = raw.decode(charset or "utf-8", "replace")
    except LookupError:
        text = raw.decode("utf-8", "replace")
    return [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]


def replay(session: Session, actor: Actor, message_id: int, settings: EmrSettings) -> Outcome | Hl7Message:
    """Apply an inbound message again (returns its new outcome) or resend an outbound one (its new row)."""
    row = session.get(Hl7Message, message_id)
    if row is None:
        raise NotFoundError("HL7 message", message_id)
    if row.direction == "out":
        from .oru import resend

        return resend(session, actor, row.id)
    if row.raw_purged_at is not None:
        raise InvalidState("the message's bytes were purged", key="hl7.error.purged")
    if not row.raw or row.message_type is None and row.status == "rejected" and row.ack is None:
        raise InvalidState("this attempt was refused before a message was read", key="hl7.error.not_replayable")
    return process(session, bytes(row.raw), peer=row.peer or "replay", settings=settings.hl7,
                   facility_code=settings.facility_code, replay_of=row.id, replayed_by=actor,
                   stations=settings.modality_stations)


def purge_raw(session: Session, keep_days: int, now: datetime | None = None) -> int:
    """Empty the bytes and ACK of messages older than ``keep_days`` (caller commits); how many.

    A message carries a patient's identity and orders; once applied, what it
    said lives in the record, and its bytes only serve troubleshooting with
    the HIS. Keeping them for ever is personal data kept longer than needed
    (Decree 13/2023). The log row stays: type, control ID, sender, status,
    patient and order, so the trail is whole; a purged message cannot be
    replayed. Outbound messages not yet delivered keep their bytes.
    """
    moment = now or clock.utcnow()
    result = session.execute(
        update(Hl7Message)
        .where(
            Hl7Message.at < moment - timedelta(days=keep_days),
            Hl7Message.raw_purged_at.is_(None),
            Hl7Message.status.not_in(_UNSENT),
        )
        .values(raw=b"", ack=None, raw_purged_at=moment)
    )
    purged = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if purged:
        log.info("HL7 log: emptied the bytes of %d message(s) older than %d days", purged, keep_days)
    return purged


# The names `emr` exports (PEP 562 map in emr/__init__.py).
replay_hl7_message = replay
list_hl7_messages = list_messages
