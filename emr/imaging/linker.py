"""Background thread that keeps linking arriving studies (≈ every 2 s).

Every EMR process runs one, but a pass runs in one process at a time
(:func:`emr.db.singleton_lock`): two processes reading the same changes
would link a study twice and audit it twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory, singleton_lock
from emr.imaging.linking import LinkResult, link_new_studies

__all__ = ["Linker", "start_linker"]

log = logging.getLogger(__name__)

LOCK_NAME = "emr.linker"


class Linker:
    def __init__(self, settings: EmrSettings, store: Any, interval: float = 2.0) -> None:
        self._engine = make_engine(settings.database_url)
        self._factory = make_session_factory(self._engine)
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emr-linker", daemon=True)
        self.last: LinkResult | None = None
        self.passes = 0  # passes this process ran
        self.skipped = 0  # periods another process was linking

    def start(self) -> Linker:
        self._thread.start()
        return self

    def run_once(self) -> LinkResult | None:
        """One pass over Orthanc's new changes; None when another process is linking right now."""
        from emr.network.from_pacs import receive_pacs_studies
        from emr.network.incoming import attach_received_studies

        with singleton_lock(self._engine, LOCK_NAME) as held:
            if not held:
                self.skipped += 1
                return None
            self.passes += 1
            with self._factory() as session:
                result = link_new_studies(session, self._store)
                # Studies a registered site's PACS pushed by C-STORE (no filmless EMR announced them).
                receive_pacs_studies(session, self._store, result.unmatched_ids)
                # Studies other facilities sent (no order here) join their matched patient (issue 15).
                attach_received_studies(session)
                return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                previous = self.last.error if self.last else None
                result = self.run_once()
                if result is None:
                    self._stop.wait(self._interval)
                    continue
                self.last = result
                if self.last.error and self.last.error != previous:
                    log.warning("study linker: Orthanc not reachable (%s); retrying", self.last.error)
                elif previous and not self.last.error:
                    log.info("study linker: Orthanc reachable again")
                if self.last.linked:
                    log.info("study linker: linked %d studies", self.last.linked)
            except Exception:  # noqa: BLE001 - the loop must survive a bad study or a DB hiccup
                log.exception("study linker failed; retrying")
            self._stop.wait(self._interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._engine.dispose()


def start_linker(settings: EmrSettings, store: Any, interval: float = 2.0) -> Linker:
    return Linker(settings, store, interval).start()
