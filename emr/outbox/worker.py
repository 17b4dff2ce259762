"""The outbox worker: a background thread in each EMR server process delivering due messages."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from emr.core import clock
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory

from .delivery import HandlerContext, run_due
from .queue import purge_sent_payloads, wake_event

__all__ = ["OutboxWorker", "start_outbox_worker"]

log = logging.getLogger(__name__)


class OutboxWorker:
    """Runs :func:`run_due` until nothing is due, then waits ``outbox_poll_seconds`` or a local enqueue.

    Several processes may run one each: claiming is atomic (see
    :mod:`emr.outbox.delivery`). Nothing escapes the thread; a database
    outage is logged and retried at the next poll.
    """

    def __init__(
        self,
        settings: EmrSettings,
        store: Any = None,
        *,
        poll_interval: float | None = None,
        hourly: Sequence[Callable[[Session], int]] = (),
    ) -> None:
        """``hourly``: more purges of old data run with the payload purge (each takes a session, returns a
        count, idempotent); the HL7 log's is one (emr.hl7.messages.purge_raw, wired by emr.server)."""
        self._engine = make_engine(settings.database_url)
        self.context = HandlerContext(
            make_session_factory(self._engine),
            settings,
            store,
            worker=f"{socket.gethostname()}:{os.getpid()}",
        )
        self._poll = settings.outbox_poll_seconds if poll_interval is None else poll_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emr-outbox", daemon=True)
        self._next_purge = 0.0
        self._hourly = tuple(hourly)

    def start(self) -> OutboxWorker:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def purge(self) -> int:
        """Empty old sent payloads, then run the other hourly purges (each process may do it; the UPDATEs
        are idempotent). Returns the payloads emptied."""
        with self.context.session_factory() as session:
            purged = purge_sent_payloads(session, self.context.settings.outbox_keep_sent_days)
            session.commit()
            for job in self._hourly:
                job(session)
                session.commit()
        return purged

    def _run(self) -> None:
        while not self._stop.is_set():
            wake_event.clear()
            try:
                while not self._stop.is_set() and run_due(self.context, limit=50):
                    pass
                if time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + 3600
                    self.purge()
            except Exception:  # noqa: BLE001 - the database may be down; try again at the next poll
                log.exception("outbox worker: delivery round failed")
            wake_event.wait(self._poll)
            self._stop.wait(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        wake_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._engine.dispose()


def start_outbox_worker(settings: EmrSettings, store: Any = None, **kwargs: Any) -> OutboxWorker:
    clock.use_timezone(settings.timezone)
    return OutboxWorker(settings, store, **kwargs).start()
