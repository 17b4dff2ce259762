"""filmless EMR: patients, encounters, documents, imaging orders, audit (Flask).

Public API (other packages import only these):

- :func:`create_app` – the Flask app factory.
- :func:`serve` / :func:`upgrade_database` – production server with migrations.
- :func:`worklist_provider` / :func:`identity_provider` / :func:`mpps_provider` – data for the DICOM gateway.
- :func:`dicom_audit_provider` – audit rows for the gateway's query/retrieve.
- :func:`start_linker` / :func:`link_new_studies` – linking arriving studies to orders.
- :func:`verify_audit_chain` – tamper check of the audit log.
- :class:`StudyAccess` / :class:`StudyAccessDenied` – per-study access callables handed to app extensions.

Nothing is imported eagerly (PEP 562): ``import emr.core.normalize`` loads
neither Flask nor the database layer, and each name below is imported from
its home on first use. The layers are described in docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emr.access.audit import Actor, AuditVerification, verify_audit_chain
    from emr.access.studies import StudyAccess, StudyAccessDenied
    from emr.app import create_app
    from emr.backup import BackupError, backup_database, database_kind, relink_all_studies, restore_database
    from emr.core.exceptions import EmrError
    from emr.core.settings import EmrSettings
    from emr.db import singleton_lock
    from emr.hl7.messages import list_hl7_messages, replay_hl7_message
    from emr.hl7.mllp import serve_hl7
    from emr.imaging.dicom_audit import dicom_audit_provider
    from emr.imaging.identity import identity_provider
    from emr.imaging.linker import Linker, start_linker
    from emr.imaging.linking import LinkResult, link_new_studies
    from emr.imaging.mpps import mpps_provider
    from emr.imaging.worklist import worklist_provider
    from emr.server import serve, upgrade_database

# public name → the module it lives in
_HOMES = {
    "Actor": "emr.access.audit",
    "AuditVerification": "emr.access.audit",
    "verify_audit_chain": "emr.access.audit",
    "StudyAccess": "emr.access.studies",
    "StudyAccessDenied": "emr.access.studies",
    "create_app": "emr.app",
    "load_catalogue": "emr.catalogues",
    "check_code": "emr.catalogues",
    "BackupError": "emr.backup",
    "backup_database": "emr.backup",
    "database_kind": "emr.backup",
    "relink_all_studies": "emr.backup",
    "restore_database": "emr.backup",
    "EmrError": "emr.core.exceptions",
    "EmrSettings": "emr.core.settings",
    "singleton_lock": "emr.db",
    "dicom_audit_provider": "emr.imaging.dicom_audit",
    "identity_provider": "emr.imaging.identity",
    "Linker": "emr.imaging.linker",
    "start_linker": "emr.imaging.linker",
    "LinkResult": "emr.imaging.linking",
    "link_new_studies": "emr.imaging.linking",
    "mpps_provider": "emr.imaging.mpps",
    "network_peer_provider": "emr.network.sites",
    "worklist_provider": "emr.imaging.worklist",
    "serve": "emr.server",
    "serve_hl7": "emr.hl7.mllp",
    "replay_hl7_message": "emr.hl7.messages",
    "list_hl7_messages": "emr.hl7.messages",
    "upgrade_database": "emr.server",
}

__all__ = [
    "Actor",
    "AuditVerification",
    "BackupError",
    "EmrError",
    "EmrSettings",
    "LinkResult",
    "Linker",
    "StudyAccess",
    "StudyAccessDenied",
    "backup_database",
    "check_code",
    "create_app",
    "database_kind",
    "dicom_audit_provider",
    "identity_provider",
    "link_new_studies",
    "load_catalogue",
    "mpps_provider",
    "network_peer_provider",
    "open_session",
    "relink_all_studies",
    "restore_database",
    "serve",
    "singleton_lock",
    "serve_hl7",
    "replay_hl7_message",
    "list_hl7_messages",
    "start_linker",
    "upgrade_database",
    "verify_audit_chain",
    "worklist_provider",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'emr' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def open_session(settings: EmrSettings) -> Any:
    """A new SQLAlchemy session on the EMR database (for CLI commands and scripts)."""
    from emr.core.clock import use_timezone
    from emr.db import make_engine, make_session_factory

    use_timezone(settings.timezone)
    return make_session_factory(make_engine(settings.database_url))()
