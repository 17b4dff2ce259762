"""Domain events inside one transaction: a feature says what happened, senders decide what to enqueue.

``publish(session, "document.signed", document=doc)`` is called by the
feature in the transaction that makes the change; each subscriber (the EHR
push, the HL7 sender, ...) enqueues its messages in that same transaction,
so the change and the messages announcing it commit together. A subscriber
runs in a savepoint: when it fails, its own work is undone, the failure is
logged and audited, and the feature's change still commits — a broken
sender never stops a signature or a discharge. Features stay unaware of who
listens (no import of the senders), and subscribers are installed by the
composition root (:func:`emr.app.create_app`).

Events published today: ``encounter.closed`` (``encounter``),
``document.signed`` (``document``, ``version``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from emr.access.audit import SYSTEM, record

__all__ = ["Subscriber", "publish", "subscribe", "unsubscribe"]

log = logging.getLogger(__name__)

Subscriber = Callable[..., None]  # (session, **data) -> None

_subscribers: dict[str, dict[str, Subscriber]] = {}
_lock = threading.Lock()


def subscribe(event: str, name: str, subscriber: Subscriber) -> None:
    """Call ``subscriber(session, **data)`` on ``event``; ``name`` makes re-installing replace, not add."""
    with _lock:
        _subscribers.setdefault(event, {})[name] = subscriber


def unsubscribe(event: str, name: str) -> None:
    with _lock:
        _subscribers.get(event, {}).pop(name, None)


def publish(session: Session, event: str, **data: Any) -> None:
    """Run every subscriber of ``event`` in the caller's transaction (the caller commits)."""
    with _lock:
        subscribers = list(_subscribers.get(event, {}).items())
    for name, subscriber in subscribers:
        try:
            with session.begin_nested():
                subscriber(session, **data)
        except Exception as exc:  # noqa: BLE001 - a sender's failure must not undo the change
            log.exception("subscriber %s of %s failed", name, event)
            record(
                session,
                SYSTEM,
                "outbox.publish",
                outcome="failure",
                details={"event": event, "subscriber": name, "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
