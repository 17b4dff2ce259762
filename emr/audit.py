"""Writing and verifying the hash-chained audit log.

Rows are appended in the caller's transaction (the change and its audit row
commit together). Appends are serialised by locking the single
``audit_head`` row first (PostgreSQL row lock; SQLite takes its write lock
at BEGIN IMMEDIATE), so the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import AuditEntry, AuditHead

__all__ = ["Actor", "SYSTEM", "record", "verify_audit_chain", "AuditVerification", "GENESIS"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who does something, from where; passed from the edge into services."""

    user_id: int | None
    username: str | None
    role: str | None
    client_ip: str | None = None


SYSTEM = Actor(None, "system", None, None)

_HASHED = (
    "id",
    "at",
    "user_id",
    "username",
    "role",
    "action",
    "outcome",
    "patient_id",
    "object_type",
    "object_id",
    "client_ip",
    "details",
)


def _row_hash(prev_hash: str, values: dict[str, Any]) -> str:
    canonical = json.dumps({k: values[k] for k in _HASHED}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    outcome: str = "success",
    patient_id: int | None = None,
    object_type: str | None = None,
    object_id: object = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit row to the session's transaction (the caller commits)."""
    bumped = session.execute(update(AuditHead).where(AuditHead.id == 1).values(count=AuditHead.count + 1))
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        session.add(AuditHead(id=1, last_id=0, last_hash=GENESIS, count=1))
        session.flush()
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
    session.refresh(head)
    values: dict[str, Any] = {
        "id": head.last_id + 1,
        "at": _now(),
        "user_id": actor.user_id,
        "username": actor.username,
        "role": actor.role,
        "action": action,
        "outcome": outcome,
        "patient_id": patient_id,
        "object_type": object_type,
        "object_id": None if object_id is None else str(object_id),
        "client_ip": actor.client_ip,
        "details": json.dumps(details or {}, sort_keys=True, ensure_ascii=False),
    }
    digest = _row_hash(head.last_hash, values)
    entry = AuditEntry(**values, prev_hash=head.last_hash, hash=digest)
    session.add(entry)
    head.last_id = values["id"]
    head.last_hash = digest
    session.flush()
    return entry


@dataclass
class AuditVerification:
    ok: bool
    rows: int
    head_hash: str
    problems: list[str] = field(default_factory=list)


def verify_audit_chain(session: Session, batch: int = 5000) -> AuditVerification:
    """Recompute the chain; report every edited, inserted, reordered or deleted row."""
    problems: list[str] = []
    prev_hash = GENESIS
    expected_id = 1
    rows = 0
    last_id = 0
    while True:
        chunk = (
            session.execute(select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch))
            .scalars()
            .all()
        )
        if not chunk:
            break
        for entry in chunk:
            rows += 1
            if entry.id != expected_id:
                problems.append(f"row {entry.id}: expected row {expected_id} (rows deleted or inserted)")
            values = {k: getattr(entry, k) for k in _HASHED}
            if entry.prev_hash != prev_hash:
                problems.append(
                    f"row {entry.id}: previous-hash link broken (a row before it was changed, inserted or deleted)"
                )
            if _row_hash(entry.prev_hash, values) != entry.hash:
                problems.append(f"row {entry.id}: content does not match its hash (edited)")
            prev_hash = entry.hash
            expected_id = entry.id + 1
            last_id = entry.id
        session.expunge_all()
    head = session.get(AuditHead, 1)
    head_hash = head.last_hash if head else GENESIS
    if head is not None:
        if head.last_id != last_id or head.last_hash != prev_hash:
            problems.append(
                f"chain ends at row {last_id} but the head records row {head.last_id} (rows deleted at the end)"
            )
        if head.count != rows:
            problems.append(f"{rows} rows present, {head.count} were written")
    elif rows:
        problems.append("audit head missing")
    return AuditVerification(ok=not problems, rows=rows, head_hash=head_hash, problems=problems)
