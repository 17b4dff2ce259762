"""Delivering due messages: handlers per kind, atomic claiming, back-off, dead letters.

Claiming is one conditional UPDATE per message (``status`` still due, or a
``sending`` lease that ran out because its worker died), committed before the
handler runs, so several EMR processes on one database never deliver a
message twice: the loser of a race updates no row. On PostgreSQL the
candidate SELECT also uses ``FOR UPDATE SKIP LOCKED`` so workers do not queue
behind each other; SQLite serialises writers (``BEGIN IMMEDIATE``). The
handler runs outside any transaction, and its outcome is written only by
the holder of the lease (``lease_token``). A worker that dies mid-delivery
leaves a lease that expires; the message is then tried again, which is why
receivers get an idempotency key (a message is sent at least once, and
idempotent receivers see it exactly once).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from emr.core import clock
from emr.core.settings import EmrSettings
from emr.models import OutboxAttempt, OutboxMessage

__all__ = [
    "Delivery",
    "DeliveryError",
    "Handler",
    "HandlerContext",
    "backoff_seconds",
    "register_handler",
    "registered_kinds",
    "run_due",
]

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """Raised by a handler: the receiver did not take the message.

    ``permanent=True`` means retrying cannot help (the receiver rejected the
    content): the message goes to the dead letters at once.
    """

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class HandlerContext:
    """What a handler may use: its own database sessions, the settings, the image store."""

    session_factory: sessionmaker[Session]
    settings: EmrSettings
    store: Any = None
    worker: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:8]}")


# A handler delivers one message; it may return a short text (receiver's id or
# location) that the operator page shows. Anything other than DeliveryError it
# raises counts as a transient failure.
Handler = Callable[[OutboxMessage, HandlerContext], object]

_handlers: dict[str, Handler] = {}
_handlers_lock = threading.Lock()


def register_handler(kind: str, handler: Handler) -> None:
    """Deliver messages of ``kind`` with ``handler`` in this process (registering again replaces it)."""
    with _handlers_lock:
        _handlers[kind] = handler


def registered_kinds() -> list[str]:
    with _handlers_lock:
        return sorted(_handlers)


def backoff_seconds(attempts: int, settings: EmrSettings) -> float:
    """Delay after the ``attempts``-th failure: doubling from the base, capped."""
    base = max(1, settings.outbox_retry_seconds)
    return float(min(base * 2 ** max(0, attempts - 1), settings.outbox_retry_max_seconds))


@dataclass(frozen=True)
class Delivery:
    """One attempt made by :func:`run_due`."""

    message_id: int
    kind: str
    outcome: str  # sent | failed | dead | lost (lease taken over, outcome not written)
    error: str | None = None


def _due(now: datetime) -> Any:
    return or_(
        and_(OutboxMessage.status.in_(("waiting", "failed")), OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == "sending", OutboxMessage.lease_until < now),
    )


def _claim_one(context: HandlerContext, kinds: list[str], now: datetime) -> tuple[OutboxMessage, str] | None:
    """Take one due message for this worker, or None when nothing is due."""
    token = uuid.uuid4().hex
    lease_until = now + timedelta(seconds=context.settings.outbox_lease_seconds)
    with context.session_factory() as session:
        for _ in range(5):  # another worker may win each candidate; try the next
            query = (
                select(OutboxMessage.id)
                .where(_due(now), OutboxMessage.kind.in_(kinds))
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidate = session.scalar(query)
            if candidate is None:
                session.rollback()
                return None
            claimed = session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == candidate, _due(now))
                .values(
                    status="sending",
                    lease_token=token,
                    lease_until=lease_until,
                    attempts=OutboxMessage.attempts + 1,
                    updated_at=now,
                )
            ).rowcount  # type: ignore[attr-defined]
            if claimed == 1:
                message = session.get(OutboxMessage, candidate)
                assert message is not None
                session.commit()
                session.expunge(message)
                return message, token
            session.rollback()
    return None


def _finish(
    context: HandlerContext,
    message: OutboxMessage,
    token: str,
    started: datetime,
    outcome: str,
    error: str | None,
    result: str | None,
) -> bool:
    now = clock.utcnow()
    values: dict[str, Any] = {"status": outcome, "lease_token": None, "lease_until": None, "updated_at": now}
    if outcome == "sent":
        values.update(sent_at=now, result=result, last_error=None)
    else:
        values.update(last_error=error)
        if outcome == "failed":
            values["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(message.attempts, context.settings))
    with context.session_factory() as session:
        written = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.lease_token == token)
            .values(**values)
        ).rowcount  # type: ignore[attr-defined]
        if written != 1:
            session.rollback()
            log.warning("outbox message %d: lease lost before its outcome (%s) was written", message.id, outcome)
            return False
        session.add(
            OutboxAttempt(
                message_id=message.id,
                started_at=started,
                finished_at=now,
                outcome=outcome,
                error=error,
                worker=context.worker[:80],
            )
        )
        session.commit()
    return True


def _deliver(context: HandlerContext, message: OutboxMessage, token: str) -> Delivery:
    started = clock.utcnow()
    handler = _handlers.get(message.kind)
    max_attempts = max(1, context.settings.outbox_max_attempts)
    result: str | None = None
    error: str | None = None
    permanent = False
    if handler is None:  # unregistered since it was claimed
        error = f"no handler for {message.kind!r} in this process"
    elif message.attempts > max_attempts:  # its last attempt's worker died mid-delivery
        error = message.last_error or "the last attempt did not finish"
        permanent = True
    else:
        try:
            answer = handler(message, context)
            result = None if answer is None else str(answer)[:2000]
        except DeliveryError as exc:
            error, permanent = exc.reason, exc.permanent
        except Exception as exc:  # noqa: BLE001 - a broken handler must not stop the worker
            log.exception("outbox handler for %s failed on message %d", message.kind, message.id)
            error = f"{type(exc).__name__}: {exc}"
    if error is None:
        outcome = "sent"
    elif permanent or message.attempts >= max_attempts:
        outcome = "dead"
    else:
        outcome = "failed"
    if error is not None:
        error = error[:4000]
        log.warning("outbox message %d (%s) %s: %s", message.id, message.kind, outcome, error)
    written = _finish(context, message, token, started, outcome, error, result)
    return Delivery(message.id, message.kind, outcome if written else "lost", error)


def run_due(
    context: HandlerContext,
    *,
    limit: int = 100,
    kinds: list[str] | None = None,
    now: Callable[[], datetime] = clock.utcnow,
) -> list[Delivery]:
    """Deliver up to ``limit`` due messages of the registered kinds, one at a time; never raises for a handler.

    Tests call this directly; the worker thread calls it in a loop.
    """
    wanted = [k for k in (kinds or registered_kinds()) if k in _handlers]
    done: list[Delivery] = []
    if not wanted:
        return done
    while len(done) < limit:
        claimed = _claim_one(context, wanted, now())
        if claimed is None:
            break
        done.append(_deliver(context, *claimed))
    return done
