"""Audit rows for the DICOM gateway's queries and retrieves (IHE RAD-14/RAD-16).

The gateway answers workstations from the image archive, which is patient
data leaving the EMR's control just like a chart page: every C-FIND, C-MOVE
and C-GET is written into the same hash-chained audit log, one row per
patient it showed or sent (``patient_id`` set when the EMR knows the DICOM
Patient ID), or one row without a patient when nothing matched or the
request was refused. The rows commit before the gateway answers; if they
cannot be written the gateway answers a failure and shows nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, bindparam, select

from emr.access import audit
from emr.access.audit import Actor
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.models import Patient

__all__ = ["dicom_audit_provider", "DICOM_ACTIONS"]

DICOM_ACTIONS = frozenset({"dicom.query", "dicom.retrieve"})
# Core, not the ORM: this runs before every query and retrieve is answered.
_PATIENTS = cast(Table, Patient.__table__)
_KNOWN_PATIENTS = select(_PATIENTS.c.code, _PATIENTS.c.id).where(
    _PATIENTS.c.code.in_(bindparam("codes", expanding=True)))
_DETAIL_KEYS = ("model", "level", "query", "results", "destination", "instances", "reason", "peer")


def _peer_ip(peer: object) -> str | None:
    text = str(peer or "")
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return host or None


def dicom_audit_provider(settings: EmrSettings) -> Callable[[dict[str, Any]], None]:
    """Callable for the gateway: a query/retrieve event → audit rows (raises if not recorded)."""
    factory = make_session_factory(make_engine(settings.database_url))

    def record(event: dict[str, Any]) -> None:
        action = str(event.get("action") or "")
        if action not in DICOM_ACTIONS:
            raise ValueError(f"not a DICOM audit action: {action!r}")
        calling = str(event.get("calling_aet") or "?")
        actor = Actor(None, calling, "modality", _peer_ip(event.get("peer")))
        outcome = "success" if event.get("outcome", "success") == "success" else "denied"
        base = {k: event[k] for k in _DETAIL_KEYS if event.get(k) not in (None, "", {}, [])}
        patients = [p for p in event.get("patients") or [] if isinstance(p, dict)]
        with factory() as session:
            codes = {str(p.get("PatientID") or "") for p in patients}
            known = {
                code: pid for code, pid in session.connection().execute(_KNOWN_PATIENTS, {"codes": list(codes)})
            } if codes else {}
            if not patients:
                audit.record(session, actor, action, outcome=outcome, object_type="dicom", details=base)
            for p in patients:
                code = str(p.get("PatientID") or "")
                audit.record(
                    session, actor, action, outcome=outcome, patient_id=known.get(code), object_type="dicom",
                    object_id=code or None,
                    details={**base, "dicom_patient_id": code, "dicom_patient_name": str(p.get("PatientName") or "")},
                )
            session.commit()

    return record
