"""The EMR side of query/retrieve auditing: ``emr.dicom_audit_provider`` writes chained rows per patient."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import EmrSettings, dicom_audit_provider, verify_audit_chain
from emr.models import AuditEntry
from emr.patients import service as patients

from .conftest import World, patient_data


def test_query_and_retrieve_rows_name_each_patient_and_keep_the_chain(
    session: Session, world: World, settings: EmrSettings
) -> None:
    known = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    session.commit()
    record = dicom_audit_provider(settings)
    session.rollback()
    record({
        "action": "dicom.query", "outcome": "success", "calling_aet": "WS01", "peer": "10.1.2.5:50123",
        "model": "STUDY", "level": "Study", "query": {"PatientName": "*"}, "results": 2,
        "patients": [{"PatientID": known.code, "PatientName": "Nguyễn^Thị Hồng Nhung"},
                     {"PatientID": "OUTSIDE-7", "PatientName": "Phạm^Văn Bình"}],
    })
    record({"action": "dicom.retrieve", "outcome": "refused", "calling_aet": "WS01", "peer": "10.1.2.5:50124",
            "model": "STUDY", "level": "", "query": {}, "patients": [], "results": 0, "destination": "EVIL",
            "reason": "unknown move destination"})
    session.expire_all()
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action.like("dicom.%")).order_by(AuditEntry.id)).all()
    assert [(r.action, r.outcome, r.patient_id, r.username, r.role, r.client_ip) for r in rows] == [
        ("dicom.query", "success", known.id, "WS01", "modality", "10.1.2.5"),
        ("dicom.query", "success", None, "WS01", "modality", "10.1.2.5"),
        ("dicom.retrieve", "denied", None, "WS01", "modality", "10.1.2.5"),
    ]
    assert json.loads(rows[1].details)["dicom_patient_name"] == "Phạm^Văn Bình"
    assert json.loads(rows[2].details)["destination"] == "EVIL"
    assert verify_audit_chain(session).ok


def test_unknown_action_is_not_recorded(settings: EmrSettings, session: Session, world: World) -> None:
    with pytest.raises(ValueError):
        dicom_audit_provider(settings)({"action": "order.delete", "patients": []})
