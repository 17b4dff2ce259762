"""The daily audit anchor: a background thread asking the TSA for one timestamp over the chain per day."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from emr.access.audit import SYSTEM, AnchorError, anchor_time, anchors_file, create_anchor, latest_anchor
from emr.core import clock
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory, singleton_lock

__all__ = ["AnchorScheduler", "start_anchor_scheduler"]

log = logging.getLogger(__name__)

LOCK_NAME = "emr.audit-anchor"


def _local_day(moment: datetime) -> date:
    return clock.local_day(moment)


class AnchorScheduler:
    """Background thread: one trusted timestamp over the audit chain per calendar day (ICT).

    The check reads the newest anchor from the database, so an anchor made
    with ``filmless audit anchor`` counts for its day and a restart does not
    anchor twice. The first check waits ``initial_delay`` (a TSA started
    next to the EMR, as in ``filmless up --demo``, is up by then). The TSA is
    asked outside any transaction, in this thread: requests are never
    blocked. When the TSA fails the attempt is logged (and audited) and
    retried after ``retry_interval``, doubling up to ``max_retry_interval``;
    nothing escapes the thread.

    Every EMR process runs a scheduler; the check-and-anchor runs under
    :func:`emr.db.singleton_lock`, so with several processes the day still
    gets one anchor (the others find it made, or skip while it is being made).
    """

    def __init__(
        self,
        settings: EmrSettings,
        *,
        initial_delay: float = 30.0,
        check_interval: float = 600.0,
        retry_interval: float = 300.0,
        max_retry_interval: float = 3600.0,
        timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._engine = make_engine(settings.database_url)
        self._factory = make_session_factory(self._engine)
        self._initial_delay = initial_delay
        self._check_interval = check_interval
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._failures = 0
        self._timeout = timeout
        self._clock = clock
        self._next_try: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emr-audit-anchor", daemon=True)
        self.attempts = 0  # TSA requests made
        self.last_outcome: str | None = None  # created | not_due | empty | failed | busy

    def start(self) -> AnchorScheduler:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def due(self) -> bool:
        """No anchor yet today (local time)?"""
        with self._factory() as session:
            newest = latest_anchor(session)
            created = anchor_time(newest) if newest is not None else None
            session.rollback()
        return created is None or _local_day(created) < _local_day(self._clock())

    def run_once(self) -> str:
        """Anchor if today has no anchor yet; returns the outcome, never raises.

        ``busy``: another EMR process is checking or anchoring right now.
        """
        try:
            with singleton_lock(self._engine, LOCK_NAME) as held:
                outcome = self._anchor_if_due() if held else "busy"
        except Exception:  # noqa: BLE001 - a database hiccup must not end the thread or the EMR
            log.exception("audit anchor failed; retrying later")
            outcome = "failed"
        self.last_outcome = outcome
        return outcome

    def _anchor_if_due(self) -> str:
        try:
            if not self.due():
                outcome = "not_due"
            else:
                self.attempts += 1
                with self._factory() as session:
                    anchor = create_anchor(
                        session, SYSTEM, self._settings.tsa_url, anchors_file(self._settings), timeout=self._timeout
                    )
                outcome = "empty" if anchor is None else "created"
                if anchor is not None:
                    log.info("audit log anchored: row %d at %s", anchor.last_id, anchor.created_at)
        except AnchorError as exc:
            log.warning("audit anchor failed (%s); retrying later", exc)
            outcome = "failed"
        except Exception:  # noqa: BLE001 - a database hiccup must not end the thread or the EMR
            log.exception("audit anchor failed; retrying later")
            outcome = "failed"
        return outcome

    def _run(self) -> None:
        self._stop.wait(self._initial_delay)
        while not self._stop.is_set():
            now = self._clock()
            if self._next_try is None or now >= self._next_try:
                if self.run_once() == "failed":
                    self._failures += 1
                    delay = min(self._retry_interval * 2 ** (self._failures - 1), self._max_retry_interval)
                    self._next_try = now + timedelta(seconds=delay)
                else:
                    self._failures = 0
                    self._next_try = None
            self._stop.wait(self._check_interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._engine.dispose()


def start_anchor_scheduler(settings: EmrSettings, **kwargs: Any) -> AnchorScheduler:
    clock.use_timezone(settings.timezone)
    return AnchorScheduler(settings, **kwargs).start()
