"""The durable outbox: everything the EMR sends to other systems goes through here.

Public API::

    from emr.outbox import enqueue, register_handler, DeliveryError, OutboxMessage

- :func:`enqueue` — store a message in the caller's transaction, idempotent on (kind, key).
- :func:`register_handler` — how messages of one kind are delivered in this process.
- :class:`DeliveryError` — a handler's failure (``permanent=True``: dead at once).
- :class:`HandlerContext` — what a handler gets: a session factory, the settings, the store.
- :func:`run_due` — deliver what is due now (tests call it; the worker thread loops on it).
- :func:`messages_for_patient` — a patient's messages and their status for the chart.
- :func:`resend`, :func:`list_messages`, :func:`overview`, :func:`get_message` — the operator page.
- :func:`start_outbox_worker` — the background thread of the EMR server.

Statuses: waiting, sending, sent, failed (will retry), dead. A handler
returns normally when the receiver has taken the message; it is called at
least once per message and should send an idempotency key (the message's
``kind``/``key``) so the receiver can drop a repeat after a crash.
"""

from __future__ import annotations

from emr.models import OUTBOX_STATUSES, OutboxAttempt, OutboxMessage

from .delivery import (
    Delivery,
    DeliveryError,
    Handler,
    HandlerContext,
    backoff_seconds,
    register_handler,
    registered_kinds,
    run_due,
)
from .queue import (
    OutboxOverview,
    enqueue,
    get_message,
    list_messages,
    messages_for_patient,
    overview,
    resend,
)
from .worker import OutboxWorker, start_outbox_worker

__all__ = [
    "OUTBOX_STATUSES",
    "Delivery",
    "DeliveryError",
    "Handler",
    "HandlerContext",
    "OutboxAttempt",
    "OutboxMessage",
    "OutboxOverview",
    "OutboxWorker",
    "backoff_seconds",
    "enqueue",
    "get_message",
    "list_messages",
    "messages_for_patient",
    "overview",
    "register_handler",
    "registered_kinds",
    "resend",
    "run_due",
    "start_outbox_worker",
]
