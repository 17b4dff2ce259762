"""Production serving: migrations, the study linker and waitress."""

from __future__ import annotations

import logging
from typing import Any

from .app import create_app
from .db import make_engine, upgrade
from .linker import start_linker
from .settings import EmrSettings

__all__ = ["serve", "upgrade_database"]

log = logging.getLogger(__name__)


def upgrade_database(settings: EmrSettings) -> None:
    """Bring the EMR schema to the newest Alembic revision."""
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def serve(settings: EmrSettings, store: Any) -> None:
    """Run the EMR under waitress until interrupted (used by `filmless up` and `filmless emr serve`)."""
    from waitress import serve as waitress_serve

    upgrade_database(settings)
    app = create_app(settings, store=store)
    linker = start_linker(settings, store) if store is not None else None
    log.info("EMR listening on http://%s:%d", settings.host, settings.port)
    try:
        waitress_serve(
            app, host=settings.host, port=settings.port, threads=8, ident="filmless", clear_untrusted_proxy_headers=True
        )
    finally:
        if linker is not None:
            linker.stop()
