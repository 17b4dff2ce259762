"""Service-level tests (no HTTP), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from emr.core.exceptions import ConflictError, InvalidState, NotFoundError, ValidationFailed
from emr.documents import service as documents
from emr.imaging import orders
from emr.imaging.worklist import query_worklist
from emr.models import AuditEntry, DocumentVersion, Patient
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import World, patient_data


def test_patient_registration_validates_and_refuses_duplicate_cccd(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    p = patients.create_patient(session, clerk, patient_data())
    assert p.code.startswith("BN") and p.search_name == "nguyen thi hong nhung"
    assert p.bhyt_ssn == "0123456789"
    with pytest.raises(ConflictError) as dup:
        patients.create_patient(session, clerk, patient_data(full_name="Lê Văn Tám", bhyt_number=None))
    assert dup.value.field == "cccd"
    session.rollback()
    with pytest.raises(ConflictError):  # same social-insurance number in the 10-digit form
        patients.create_patient(session, clerk, patient_data(cccd=None, bhyt_number="0123456789"))
    session.rollback()
    with pytest.raises(ValidationFailed) as bad:
        patients.create_patient(session, clerk, patient_data(cccd="079090001234", bhyt_number="XX"))
    assert bad.value.fields == {"cccd": "patients.error.cccd_mismatch", "bhyt_number": "patients.error.bhyt_format"}
    with pytest.raises(ValidationFailed) as missing:
        patients.create_patient(session, clerk, {"full_name": "A"})
    assert {"full_name", "birth_date", "sex"} <= set(missing.value.fields)
    session.rollback()
    assert session.scalar(select(Patient).where(Patient.full_name == "Lê Văn Tám")) is None


def test_search_with_and_without_diacritics(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    nhung = patients.create_patient(session, clerk, patient_data())
    dat = patients.create_patient(
        session,
        clerk,
        patient_data(
            full_name="Đặng Đức Đạt", sex="M", birth_date="1985-03-02", cccd="001085012345", bhyt_number="0987654321"
        ),
    )
    assert [p.id for p in patients.search_patients(session, clerk, "Nguyễn Thị")] == [nhung.id]
    assert [p.id for p in patients.search_patients(session, clerk, "nguyen thi hong")] == [nhung.id]
    assert [p.id for p in patients.search_patients(session, clerk, "dang duc")] == [dat.id]
    assert [p.id for p in patients.search_patients(session, clerk, "Đức Đạt")] == [dat.id]  # given-name prefix
    assert [p.id for p in patients.search_patients(session, clerk, "001085012345")] == [dat.id]
    assert [p.id for p in patients.search_patients(session, clerk, "DN4790123456789")] == [nhung.id]
    assert [p.id for p in patients.search_patients(session, clerk, "0123456789")] == [nhung.id]
    assert [p.id for p in patients.search_patients(session, clerk, dat.code.lower())] == [dat.id]
    assert patients.search_patients(session, clerk, "%") == []
    assert patients.search_patients(session, clerk, "tran") == []


def test_search_by_any_later_word_of_the_name(session: Session, world: World) -> None:
    """Vietnamese patients are called by the last word of their name: "Nhung" finds Nguyễn Thị Hồng Nhung."""
    clerk = world.actor("records_clerk")
    nhung = patients.create_patient(session, clerk, patient_data())
    dat = patients.create_patient(session, clerk, patient_data(
        full_name="Đặng Đức Đạt", sex="M", birth_date="1985-03-02", cccd="001085012345", bhyt_number=None))
    for query in ("nhung", "Nhung", "Hồng Nhung", "hong nh", "thi hong nhung"):
        assert [p.id for p in patients.search_patients(session, clerk, query)] == [nhung.id], query
    assert [p.id for p in patients.search_patients(session, clerk, "Đạt")] == [dat.id]
    assert patients.search_patients(session, clerk, "nhung dat") == []
    assert patients.search_patients(session, clerk, "hung") == []  # a word's start, not any substring

    # A corrected name moves the keys with it; the old last word no longer finds the patient.
    patients.update_patient(session, clerk, nhung.id, patient_data(full_name="Nguyễn Thị Hồng Nhạn"))
    assert patients.search_patients(session, clerk, "nhung") == []
    assert [p.id for p in patients.search_patients(session, clerk, "nhan")] == [nhung.id]
    # Merged records are not offered by any key.
    twin = patients.create_patient(session, clerk, patient_data(cccd=None, bhyt_number=None,
                                                              full_name="Đỗ Thị Hồng Nhạn"))
    patients.merge_patients(session, clerk, source_id=twin.id, target_id=nhung.id, reason="trùng hồ sơ")
    assert [p.id for p in patients.search_patients(session, clerk, "hong nhan")] == [nhung.id]


def test_merge_keeps_both_histories_and_is_audited(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    doctor = world.actor("physician")
    a = patients.create_patient(session, clerk, patient_data())
    b = patients.create_patient(
        session, clerk, patient_data(cccd=None, bhyt_number=None, full_name="Nguyen Thi Hong Nhung"),
        check_namesakes=False,  # the duplicate a merge exists for
    )
    order = orders.create_order(session, doctor, {"patient_id": b.id, "modality": "CT", "procedure_name": "CT sọ não"})
    target = patients.merge_patients(session, clerk, source_id=b.id, target_id=a.id, reason="trùng hồ sơ")
    session.refresh(b)
    assert b.status == "merged" and b.merged_into_id == a.id
    assert session.get(type(order), order.id).patient_id == target.id
    merges = session.scalars(select(AuditEntry).where(AuditEntry.action == "patient.merge")).all()
    assert {m.patient_id for m in merges} == {a.id, b.id}
    assert json.loads(merges[0].details)["moved"]["imaging_orders"] == [order.id]
    with pytest.raises(InvalidState):
        patients.merge_patients(session, clerk, source_id=b.id, target_id=a.id, reason="again")


def test_encounter_requires_catalogued_icd10(session: Session, world: World) -> None:
    nurse = world.actor("nurse")
    p = patients.create_patient(session, nurse, patient_data())
    with pytest.raises(ValidationFailed) as bad:
        encounters.create_encounter(
            session,
            nurse,
            {
                "patient_id": p.id,
                "kind": "inpatient",
                "department_code": "K19",
                "attending_username": "physician1",
                "diagnoses": ["J18.9", "Z99.9"],
            },
        )
    assert bad.value.fields == {"diagnoses.1": "encounters.error.icd10"}
    session.rollback()
    enc = encounters.create_encounter(
        session,
        nurse,
        {
            "patient_id": p.id,
            "kind": "inpatient",
            "department_code": "K19",
            "attending_username": "physician1",
            "diagnoses": ["j18.9", "I10"],
        },
    )
    assert [d.icd10_code for d in enc.diagnoses] == ["J18.9", "I10"]
    assert enc.visit_code and enc.inpatient_at is not None
    with pytest.raises(ValidationFailed):  # a nurse is no attending physician
        encounters.create_encounter(
            session,
            nurse,
            {"patient_id": p.id, "kind": "outpatient", "department_code": "K19", "attending_username": "nurse1"},
        )


def test_document_lifecycle_versions_and_immutability(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": "K19"}
    )
    with pytest.raises(ValidationFailed) as bad:
        documents.create_document(
            session,
            doctor,
            {"encounter_id": enc.id, "form_type": "outpatient_record", "content": {"chief_complaint": "ho"}},
        )
    assert "content.examination" in bad.value.fields
    doc = documents.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": "outpatient_record",
            "content": {
                "chief_complaint": "Ho, sốt 3 ngày",
                "examination": "Ran nổ đáy phổi phải",
                "conclusion": "Viêm phổi",
            },
        },
    )
    assert doc.status == "draft" and doc.retention_class == "10y"
    documents.update_draft(
        session,
        doctor,
        doc.id,
        {"chief_complaint": "Ho, sốt 4 ngày", "examination": "Ran nổ", "conclusion": "Viêm phổi"},
    )
    documents.mark_signed(session, doctor, doc.id, 1)
    with pytest.raises(InvalidState):
        documents.update_draft(session, doctor, doc.id, {"chief_complaint": "x", "examination": "y", "conclusion": "z"})
    session.rollback()
    # Even a direct ORM edit of a signed version is refused.
    v1 = session.scalar(select(DocumentVersion).where(DocumentVersion.document_id == doc.id))
    signed_json = v1.content_json
    v1.content_json = "{}"
    with pytest.raises(InvalidState):
        session.flush()
    session.rollback()
    with pytest.raises(ValidationFailed):
        documents.amend_document(
            session, doctor, doc.id, {"chief_complaint": "a", "examination": "b", "conclusion": "c"}, ""
        )
    amended = documents.amend_document(
        session,
        doctor,
        doc.id,
        {"chief_complaint": "Ho, sốt 4 ngày", "examination": "Ran nổ", "conclusion": "Viêm phổi thùy dưới phải"},
        "bổ sung kết luận",
    )
    assert amended.status == "amended" and amended.current_version == 2
    v = {x.number: x for x in amended.versions}
    # The signed version stays the valid one until the amendment is signed.
    assert v[1].content_json == signed_json and v[1].status == "signed" and v[1].locked
    assert v[2].amends_version_id == v[1].id and v[2].amendment_reason == "bổ sung kết luận"
    documents.mark_signed(session, doctor, doc.id, 2)
    assert v[1].status == "superseded" and v[2].status == "signed"
    with pytest.raises(ValidationFailed):
        documents.cancel_document(session, doctor, doc.id, " ")
    documents.cancel_document(session, doctor, doc.id, "nhầm bệnh nhân")
    restored = documents.restore_document(session, doctor, doc.id, "hủy nhầm")
    assert restored.status == "signed"
    actions = [a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.object_type == "document"))]
    assert actions == [
        "document.create",
        "document.edit",
        "document.sign",
        "document.amend",
        "document.sign",
        "document.cancel",
        "document.restore",
    ]


def test_order_gets_accession_and_uid_and_appears_in_worklist(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    o1 = orders.create_order(
        session,
        doctor,
        {
            "patient_id": p.id,
            "modality": "CT",
            "procedure_name": "CT ngực không tiêm",
            "body_part": "CHEST",
            "urgency": "urgent",
            "station_ae_title": "CT1",
            "scheduled_at": "2026-11-23T09:30:00",
        },
    )
    o2 = orders.create_order(
        session,
        doctor,
        {"patient_id": p.id, "modality": "MR", "procedure_name": "MRI sọ não", "scheduled_at": "2026-11-25T14:00:00"},
    )
    assert o1.accession_number != o2.accession_number and len(o1.accession_number) <= 16
    assert o1.study_instance_uid.startswith("2.25.") and len(o1.study_instance_uid) <= 64
    items = query_worklist(session, {"Modality": "CT"})
    assert [i["AccessionNumber"] for i in items] == [o1.accession_number]
    item = items[0]
    assert item["PatientName"] == "Nguyễn^Thị Hồng Nhung" and item["PatientSex"] == "F"
    assert item["ScheduledProcedureStepStartTime"] == "093000"
    assert item["ScheduledProcedureStepStartDate"] == "20261123" and item["StudyInstanceUID"] == o1.study_instance_uid
    assert {
        i["AccessionNumber"] for i in query_worklist(session, {"ScheduledProcedureStepStartDate": "20261124-20261130"})
    } == {o2.accession_number}
    assert query_worklist(session, {"ScheduledStationAETitle": "CT2", "Modality": "CT"}) == []
    assert len(query_worklist(session, {"PatientName": "nguyen*"})) == 2
    assert len(query_worklist(session, {"PatientName": "Trần*"})) == 0
    assert query_worklist(session, {"ScheduledProcedureStepStartDate": "2026-11"}) == []
    orders.cancel_order(session, doctor, o2.id, "bệnh nhân từ chối")
    assert [i["AccessionNumber"] for i in query_worklist(session, {})] == [o1.accession_number]
    with pytest.raises(NotFoundError):
        orders.create_order(session, doctor, {"patient_id": 999999, "modality": "CT", "procedure_name": "CT"})


def test_retention_class_follows_record_type(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = encounters.create_encounter(
        session,
        doctor,
        {"patient_id": p.id, "kind": "emergency", "department_code": "K19", "record_type": "traffic_accident"},
    )
    doc = documents.create_document(
        session,
        doctor,
        {"encounter_id": enc.id, "form_type": "progress_note", "content": {"note": "Theo dõi sau tai nạn giao thông"}},
    )
    assert doc.retention_class == "20y"


def test_audit_rows_carry_who_what_where(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk", ip="192.168.1.20")
    p = patients.create_patient(session, clerk, patient_data())
    patients.get_patient(session, clerk, p.id)
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "patient.view")).one()
    assert (row.username, row.role, row.patient_id, row.client_ip, row.outcome) == (
        "records_clerk1",
        "records_clerk",
        p.id,
        "192.168.1.20",
        "success",
    )
    if session.bind.dialect.name == "postgresql":  # the database itself refuses edits
        with pytest.raises(Exception, match="append-only"):
            session.execute(text("UPDATE audit_log SET username='x' WHERE id=1"))
        session.rollback()
