"""filmless EMR: patients, encounters, documents, imaging orders, audit (Flask).

Public API (other packages import only these):

- :func:`create_app` – the Flask app factory.
- :func:`serve` / :func:`upgrade_database` – production server with migrations.
- :func:`worklist_provider` / :func:`identity_provider` / :func:`mpps_provider` – data for the DICOM gateway.
- :func:`dicom_audit_provider` – audit rows for the gateway's query/retrieve.
- :func:`start_linker` / :func:`link_new_studies` – linking arriving studies to orders.
- :func:`verify_audit_chain` – tamper check of the audit log.
"""

from __future__ import annotations

from typing import Any

from . import demo
from .app import create_app
from .audit import Actor, AuditVerification, verify_audit_chain
from .dicom_audit import dicom_audit_provider
from .exceptions import EmrError
from .linker import Linker, start_linker
from .server import serve, upgrade_database
from .services.linking import LinkResult, link_new_studies
from .settings import EmrSettings
from .worklist import identity_provider, mpps_provider, worklist_provider

__all__ = [
    "Actor",
    "AuditVerification",
    "EmrError",
    "EmrSettings",
    "LinkResult",
    "Linker",
    "create_app",
    "demo",
    "dicom_audit_provider",
    "identity_provider",
    "link_new_studies",
    "mpps_provider",
    "open_session",
    "serve",
    "start_linker",
    "upgrade_database",
    "verify_audit_chain",
    "worklist_provider",
]


def open_session(settings: EmrSettings) -> Any:
    """A new SQLAlchemy session on the EMR database (for CLI commands and scripts)."""
    from .db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))()
