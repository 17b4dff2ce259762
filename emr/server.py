"""Production serving: migrations, then waitress with the study linker, the outbox worker and the daily audit anchor."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from emr.access.anchor_scheduler import start_anchor_scheduler
from emr.app import AppExtension, create_app
from emr.core.clock import use_timezone
from emr.core.settings import EmrSettings
from emr.db import make_engine, upgrade
from emr.hl7.messages import purge_raw
from emr.http_server import make_server
from emr.imaging.linker import start_linker
from emr.outbox import start_outbox_worker

__all__ = ["serve", "upgrade_database"]

log = logging.getLogger(__name__)


def upgrade_database(settings: EmrSettings) -> None:
    """Bring the EMR schema to the newest Alembic revision."""
    use_timezone(settings.timezone)  # the CLI commands that follow show and take local times
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def serve(settings: EmrSettings, store: Any, *, extensions: Iterable[AppExtension] = ()) -> None:
    """Run the EMR under waitress until interrupted (used by `filmless up` and `filmless emr serve`).

    ``extensions`` mount what the EMR does not own (the viewer), see :func:`emr.app.create_app`.
    """
    upgrade_database(settings)
    app = create_app(settings, store=store, extensions=extensions)
    linker = start_linker(settings, store) if store is not None else None
    anchoring = start_anchor_scheduler(settings) if settings.tsa_url else None
    # Its hourly purge also empties old HL7 message bytes (FILMLESS_HL7_KEEP_DAYS).
    outbox = start_outbox_worker(settings, store, hourly=[lambda s: purge_raw(s, settings.hl7.keep_raw_days)])
    server = make_server(app, settings)
    log.info("EMR listening on http://%s:%d", settings.host, settings.port)
    try:
        server.run()
    finally:
        if linker is not None:
            linker.stop()
        if anchoring is not None:
            anchoring.stop()
        outbox.stop()
