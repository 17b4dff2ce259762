"""Reading-room services on SQLite and PostgreSQL: worklist order and filters, report status,
share-link rules (signed report first, PIN lockout, expiry, revocation), measurement input checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.exceptions import InvalidState, NotFoundError, ValidationFailed
from emr.documents import service as documents
from emr.imaging import orders
from emr.models import AuditEntry, ImagingOrder, Study, utcnow
from emr.patients import encounters
from emr.patients import service as patients
from emr.reading import service as reading
from emr.sharing import service as sharing

from .conftest import World, patient_data


def _linked_study(session: Session, world: World, *, urgency: str, modality: str, date: str, cccd: str) -> Study:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data(cccd=cccd, bhyt_number=None))
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": "K19"}
    )
    order = orders.create_order(
        session,
        doctor,
        {
            "patient_id": p.id,
            "encounter_id": enc.id,
            "modality": modality,
            "procedure_name": "Chụp",
            "urgency": urgency,
        },
    )
    study = Study(
        orthanc_id=f"o-{order.id}",
        study_instance_uid=order.study_instance_uid,
        study_date=date,
        order_id=order.id,
        patient_id=p.id,
        state="linked",
    )
    session.add(study)
    session.commit()
    return study


def _report(session: Session, world: World, study: Study, *, sign: bool) -> int:
    radiologist = world.actor("radiologist")
    order = session.get(ImagingOrder, study.order_id)
    assert order is not None
    doc = documents.create_document(
        session,
        radiologist,
        {
            "encounter_id": order.encounter_id,
            "form_type": "radiology_report",
            "order_id": order.id,
            "content": {"findings": "Bình thường.", "conclusion": "Không bất thường."},
        },
    )
    if sign:
        documents.mark_signed(session, radiologist, doc.id, 1)
    return doc.id


def test_worklist_unread_first_then_urgency_and_filters(session: Session, world: World) -> None:
    routine = _linked_study(session, world, urgency="routine", modality="CT", date="20261120", cccd="079190000001")
    stat = _linked_study(session, world, urgency="stat", modality="CT", date="20261119", cccd="079190000002")
    signed = _linked_study(session, world, urgency="stat", modality="MR", date="20261121", cccd="079190000003")
    draft = _linked_study(session, world, urgency="routine", modality="CT", date="20261118", cccd="079190000004")
    _report(session, world, signed, sign=True)
    _report(session, world, draft, sign=False)
    rows = reading.reading_worklist(session, reading.WorklistFilter())
    assert [(r.study.id, r.status) for r in rows] == [
        (stat.id, "unread"),
        (routine.id, "unread"),
        (draft.id, "draft"),
        (signed.id, "signed"),
    ]
    assert rows[2].reader == world.users["radiologist"].full_name
    only_ct = reading.reading_worklist(session, reading.WorklistFilter(modality="CT", date_from="20261119"))
    assert [r.study.id for r in only_ct] == [stat.id, routine.id]
    assert [r.study.id for r in reading.reading_worklist(session, reading.WorklistFilter(urgency="stat"))] == [
        stat.id,
        signed.id,
    ]
    assert [r.study.id for r in reading.reading_worklist(session, reading.WorklistFilter(status="draft"))] == [draft.id]


def test_share_link_rules(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    study = _linked_study(session, world, urgency="routine", modality="CT", date="20261120", cccd="079190000005")
    with pytest.raises(InvalidState) as exc:
        sharing.create_share_link(session, clerk, study.id)
    assert exc.value.key == "share.error.not_signed"
    session.rollback()
    _report(session, world, study, sign=True)
    link, code, pin = sharing.create_share_link(session, clerk, study.id)
    assert len(code) == 12 and len(pin) == 6 and pin not in link.pin_hash and code not in link.code_sha256
    assert (link.expires_at - link.created_at) == timedelta(days=30)
    assert sharing.find_link(session, code.upper()).id == link.id  # read aloud, typed in capitals
    with pytest.raises(NotFoundError):
        sharing.find_link(session, "nope'; drop")
    wrong = f"{(int(pin) + 1) % 10**6:06d}"
    for _ in range(sharing.PIN_LOCK_AFTER - 1):
        with pytest.raises(sharing.WrongPin):
            sharing.check_pin(session, link, wrong, "10.0.0.9")
    with pytest.raises(sharing.WrongPin):
        sharing.check_pin(session, link, "not-a-pin", "10.0.0.9")
    with pytest.raises(sharing.ShareLocked):
        sharing.check_pin(session, link, pin, "10.0.0.9")
    link.locked_until = utcnow() - timedelta(seconds=1)
    session.commit()
    sharing.check_pin(session, link, pin, "10.0.0.9")
    report = sharing.shared_report(session, link)
    assert report is not None and report["content"]["conclusion"] == "Không bất thường."
    link.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    with pytest.raises(sharing.ShareDenied) as denied:
        sharing.find_link(session, code)
    assert denied.value.reason == "expired" and denied.value.http_status == 410
    session.rollback()
    link2, code2, _ = sharing.create_share_link(session, clerk, study.id, days=7)
    sharing.revoke_share_link(session, clerk, link2.id)
    with pytest.raises(sharing.ShareDenied) as denied:
        sharing.live_link(session, link2.id)
    assert denied.value.reason == "revoked"
    session.rollback()
    actions = [a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.object_type == "share_link"))]
    assert actions.count("share.create") == 2 and "share.revoke" in actions and "share.open" in actions
    assert actions.count("share.pin") == sharing.PIN_LOCK_AFTER + 1  # every failure and the locked attempt


def test_measurements_input_is_checked(session: Session, world: World) -> None:
    study = _linked_study(session, world, urgency="routine", modality="CT", date="20261120", cccd="079190000006")
    reader = world.actor("radiologist")
    for bad in ("x", [1, 2], {"a": 1}, [{"p": "x" * (reading.MAX_MEASUREMENTS_BYTES + 1)}]):
        with pytest.raises(ValidationFailed):
            reading.save_measurements(session, reader, study, bad)
        session.rollback()
    reading.save_measurements(session, reader, study, [{"uid": "a", "sop": "1.2", "frame": 1}])
    reading.save_measurements(session, reader, study, [{"uid": "b", "sop": "1.2", "frame": 2}])
    data, updated = reading.get_measurements(session, reader.user_id or 0, study.study_instance_uid)
    assert data == [{"uid": "b", "sop": "1.2", "frame": 2}] and updated is not None
    assert reading.get_measurements(session, world.users["physician"].id, study.study_instance_uid) == ([], None)
