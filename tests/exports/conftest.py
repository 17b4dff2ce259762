"""Export fixtures: the EMR's SQLite + PostgreSQL fixtures, a development PKI and a complete imaging visit.

The visit is demo-like (the demo's first patient, a chest CT, a signed report,
a signed progress note) with every clock value and generated number fixed, so
the golden XML files are stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
from sqlalchemy.orm import Session

from emr.billing.prices import load_prices
from emr.documents import service as docs
from emr.exports.config import ExportConfig
from emr.exports.facility_key import FacilityKey, load_pkcs12_key
from emr.imaging import orders as ords
from emr.models import Document, DocumentVersion, Encounter, ImagingOrder, Patient, Study
from emr.patients import encounters as encs
from emr.patients import service as pats
from emr.signing.pki import DevPki, init_dev_pki, issue_user_certificate
from tests.emr.conftest import (  # noqa: F401  (fixtures re-exported for this folder)
    ADMIN_ACTOR,
    World,
    _cheap_argon2,
    app,
    client,
    database_url,
    engine,
    patient_data,
    pg_database,
    session,
    settings,
    sqlite_template,
    tokens,
    world,
)

GOLDEN = Path(__file__).with_name("golden")
# The price list of the fixture visit (VND): the chest CT is covered by BHYT, the 4D ultrasound is not.
PRICE_LIST = (
    "code,name,unit,price_hospital,price_insurance,valid_from\n"
    "18.0043.0002,Chụp CT ngực không tiêm thuốc cản quang,Lần,600000,522000,2024-01-01\n"
    "18.0043.0002,Chụp CT ngực không tiêm thuốc cản quang,Lần,650000,536000,2025-07-01\n"
    "18.0001.0004,Siêu âm 4D thai,Lần,350000,,2025-07-01\n"
)
FACILITY = "79001"
HEAD_CODE = "7901234567"  # MA_TTDV: the head's health ID (social-insurance number), String(10)
DEVICE_CT = "CL.1.79001.00012"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    pki = init_dev_pki(tmp_path_factory.mktemp("pki"), users=())
    issue_user_certificate(pki, "facility", "Bệnh viện filmless (đơn vị)")
    return pki


@pytest.fixture(scope="session")
def facility_key(pki: DevPki) -> FacilityKey:
    user = pki.users["facility"]
    return load_pkcs12_key(user.p12_bytes(), user.password())


@pytest.fixture
def export_config() -> ExportConfig:
    return ExportConfig(
        facility_code=FACILITY,
        public_url="http://127.0.0.1:8080",
        head_code=HEAD_CODE,
        device_codes={"CT": DEVICE_CT},
    )


@dataclass
class Visit:
    patient: Patient
    encounter: Encounter
    order: ImagingOrder
    report: Document
    note: Document
    study: Study


def utc(y: int, mo: int, d: int, h: int, mi: int) -> datetime:
    return datetime(y, mo, d, h, mi)


def load_price_list(session: Session, text: str = PRICE_LIST) -> None:  # noqa: F811
    """Through the real loader (a second load of the same list changes nothing)."""
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "prices.csv"
        path.write_text(text, encoding="utf-8")
        load_prices(session, ADMIN_ACTOR, path)


def make_visit(
    session: Session,  # noqa: F811
    world: World,  # noqa: F811
    *,
    close: bool = True,
    cccd: str = "079190001234",
    benefit_level: int | None = None,
    **patient: Any,
) -> Visit:
    load_price_list(session)
    clerk = world.actor("records_clerk")
    doctor = world.actor("physician")
    reader = world.actor("radiologist")
    data = patient_data(cccd=cccd, ward_code="26734", occupation_code="00001")
    data.update(patient)
    p = pats.create_patient(session, clerk, data)
    enc = encs.create_encounter(
        session,
        doctor,
        {
            "patient_id": p.id,
            "kind": "outpatient",
            "department_code": world.department_code,
            "reason": "Ho, sốt 3 ngày",
            "admission_diagnosis": "Theo dõi viêm phổi",
            "diagnoses": ["J18.9", "I10"],
            "insurance_object": "1",
            "benefit_level": benefit_level,
        },
    )
    order = ords.create_order(
        session,
        doctor,
        {
            "patient_id": p.id,
            "encounter_id": enc.id,
            "modality": "CT",
            "procedure_name": "CT ngực không tiêm thuốc cản quang",
            "procedure_code": "18.0043.0002",
            "body_part": "CHEST",
            "urgency": "urgent",
            "clinical_info": "Ho, sốt, ran nổ đáy phổi phải",
            "station_ae_title": "CT01",
        },
    )
    study = Study(
        orthanc_id=f"orthanc-{order.id}-{p.id:04d}",
        study_instance_uid=order.study_instance_uid,
        accession_number=order.accession_number,
        dicom_patient_id=p.code,
        dicom_patient_name="NGUYEN^THI HONG NHUNG",
        study_date="20261123",
        modalities="CT",
        description="CT ngực không tiêm",
        order_id=order.id,
        patient_id=p.id,
        state="linked",
        link_method="accession",
    )
    session.add(study)
    order.status = "images_available"
    session.commit()
    report = docs.create_document(
        session,
        reader,
        {
            "encounter_id": enc.id,
            "form_type": "radiology_report",
            "order_id": order.id,
            "content": {
                "technique": "Xoắn ốc 5 mm, không tiêm thuốc cản quang",
                "findings": "Đám mờ thùy dưới phổi phải, có hình phế quản hơi. Không tràn dịch màng phổi.",
                "conclusion": "Viêm phổi thùy dưới phải.",
                "recommendation": "Đối chiếu lâm sàng.",
            },
        },
    )
    docs.mark_signed(session, reader, report.id, 1)
    note = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": "progress_note",
            "content": {"note": "Sốt 38,5 °C, ho đờm, ran nổ đáy phổi phải.", "stage": "Khởi phát"},
        },
    )
    docs.mark_signed(session, doctor, note.id, 1)
    if close:
        encs.close_encounter(session, doctor, enc.id, "Viêm phổi thùy dưới phải")
    # Fixed clocks and numbers (UTC in the database; exports show UTC+7).
    n = p.id
    p.code = f"BN{n:06d}"
    enc.visit_code = f"2611230000{n:04d}"
    enc.record_no = f"HS{n:08d}"
    enc.admitted_at = utc(2026, 11, 23, 1, 30)
    if close:
        enc.discharged_at = enc.closed_at = utc(2026, 11, 23, 9, 45)
    order.accession_number = f"26112300{n:04d}"[:16]
    study.accession_number = order.accession_number
    order.study_instance_uid = study.study_instance_uid = f"1.2.826.0.1.3680043.10.1234.{n}"
    order.ordered_at = utc(2026, 11, 23, 2, 0)
    order.performed_at = utc(2026, 11, 23, 2, 40)
    for d, signed in ((report, utc(2026, 11, 23, 3, 15)), (note, utc(2026, 11, 23, 4, 0))):
        v = session.query(DocumentVersion).filter_by(document_id=d.id, number=1).one()
        # Signed versions are locked against content changes; the clock fields are set
        # through SQL to keep the fixture deterministic.
        session.execute(
            DocumentVersion.__table__.update()
            .where(DocumentVersion.id == v.id)
            .values(created_at=utc(2026, 11, 23, 3, 0) if d is report else utc(2026, 11, 23, 3, 55), signed_at=signed)
        )
    session.commit()
    for obj in (p, enc, order, report, note, study):
        session.refresh(obj)
    session.commit()  # no transaction left open: SQLite would keep its write lock from the app
    return Visit(p, enc, order, report, note, study)


@pytest.fixture
def visit(session: Session, world: World) -> Visit:  # noqa: F811
    return make_visit(session, world)


@dataclass
class InpatientVisit:
    visit: Visit
    admission: Document
    diagnosis: Document
    discharge: Document
    notes: list[Document]


def _sign_at(session: Session, doc: Document, created: datetime, signed: datetime) -> None:  # noqa: F811
    """Fixed clocks on a signed version (locked against content changes, so through SQL)."""
    session.execute(
        DocumentVersion.__table__.update()
        .where(DocumentVersion.document_id == doc.id, DocumentVersion.number == 1)
        .values(created_at=created, signed_at=signed)
    )


def make_inpatient_visit(
    session: Session,  # noqa: F811
    world: World,  # noqa: F811
    *,
    cccd: str = "079190007777",
    **patient: Any,
) -> InpatientVisit:
    """An inpatient stay: admitted 00:30 on 21 Nov (local; 17:30 UTC the day before), discharged 23 Nov.

    It has a signed admission note, two signed progress notes (XML5), a signed diagnosis and a
    signed discharge paper with the XML7/XML8 fields, and the patient's parents and religion.
    """
    data = {
        "father_name": "Nguyễn Văn Hùng",
        "mother_name": "Trần Thị Lan",
        "religion_code": "01",  # Phật giáo (GSO 2008; VN Core vn-core-ethic code 1)
        "health_id": "7912345678",
        **patient,
    }
    v = make_visit(session, world, close=False, cccd=cccd, **data)
    doctor = world.actor("physician")
    enc = v.encounter
    enc.kind = "inpatient"
    enc.weight_kg = "52.5"
    session.commit()
    admission = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": "admission_note",
            "content": {
                "reason": "Sốt cao, khó thở",
                "history": "Ho 5 ngày, sốt 39 °C",
                "examination": "Ran nổ đáy phổi phải, SpO2 93 %",
                "initial_diagnosis": "Viêm phổi",
                "initial_diagnosis_code": "J18.9",  # the admitting doctor's own code (FHIR Encounter.diagnosis AD)
                "plan": "Nhập khoa Nội, kháng sinh tĩnh mạch",
            },
        },
    )
    docs.mark_signed(session, doctor, admission.id, 1)
    notes = []
    for text in ("Còn sốt 38 °C, giảm ho.", "Hết sốt, phổi thông khí tốt."):
        n = docs.create_document(
            session, doctor, {"encounter_id": enc.id, "form_type": "progress_note", "content": {"note": text}}
        )
        docs.mark_signed(session, doctor, n.id, 1)
        notes.append(n)
    diagnosis = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": "diagnosis",
            "content": {
                "main_code": "J18.9",
                "main_text": "Viêm phổi, không đặc hiệu",
                "secondary_codes": "I10",
                "secondary_text": "Tăng huyết áp vô căn",
            },
        },
    )
    docs.mark_signed(session, doctor, diagnosis.id, 1)
    discharge = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": "discharge_summary",
            "content": {
                "summary": "Sốt, ho đờm 5 ngày; điều trị kháng sinh, hết sốt ngày thứ 3.",
                "discharge_diagnosis": "Viêm phổi thùy dưới phải",
                "treatment": "Nội khoa: kháng sinh tĩnh mạch, hạ sốt",
                "result": "1",
                "follow_up": "Tái khám sau 1 tuần",
                "test_results": "CT ngực: đám mờ thùy dưới phổi phải",
                "doctor_advice": "Uống đủ nước, tái khám nếu sốt lại",
                "storage_number": "LT-2026-00123",
            },
        },
    )
    docs.mark_signed(session, doctor, discharge.id, 1)
    encs.close_encounter(session, doctor, enc.id, "Viêm phổi thùy dưới phải")
    enc.admitted_at = utc(2026, 11, 20, 17, 30)  # 00:30 on 21 Nov in Vietnam
    enc.inpatient_at = utc(2026, 11, 21, 2, 0)
    enc.discharged_at = enc.closed_at = utc(2026, 11, 23, 9, 45)
    _sign_at(session, admission, utc(2026, 11, 20, 17, 40), utc(2026, 11, 20, 17, 50))
    _sign_at(session, notes[0], utc(2026, 11, 21, 23, 0), utc(2026, 11, 21, 23, 5))  # 06:00 on 22 Nov local
    _sign_at(session, notes[1], utc(2026, 11, 22, 23, 0), utc(2026, 11, 22, 23, 5))
    _sign_at(session, diagnosis, utc(2026, 11, 21, 3, 0), utc(2026, 11, 21, 3, 5))
    # the discharge paper is signed once the stay has ended (emr.signing.service.discharge_pending)
    _sign_at(session, discharge, utc(2026, 11, 23, 9, 0), utc(2026, 11, 23, 9, 50))
    session.commit()
    for obj in (enc, admission, diagnosis, discharge, *notes):
        session.refresh(obj)
    session.commit()
    return InpatientVisit(v, admission, diagnosis, discharge, notes)
