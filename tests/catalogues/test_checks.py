"""Codes checked against the catalogue in force: on entry (diagnoses, addresses, registration
facility, service codes, departments) and in the claim's pre-submission check by service date."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from emr.core.exceptions import ValidationFailed
from emr.exports.config import ExportConfig
from emr.exports.service import check_visit
from emr.imaging import orders
from emr.models import Icd10Code
from emr.patients import encounters
from emr.patients import service as patients
from tests.exports.conftest import export_config, facility_key, make_visit, pki  # noqa: F401

from .conftest import ADMIN_ACTOR, World, load, load_all, patient_data


def test_addresses_on_entry_use_the_units_after_july_2025(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    load(session, "admin_unit")
    load(session, "admin_unit_map")
    load(session, "facility")
    with pytest.raises(ValidationFailed) as err:  # Tân Định, Quận 1: the commune code before the reorganisation
        patients.create_patient(session, clerk, patient_data(ward_code="26734"))
    assert err.value.fields == {"ward_code": "catalogues.entry.ward_old"}
    with pytest.raises(ValidationFailed) as err:  # a real commune, in another province
        patients.create_patient(session, clerk, patient_data(province_code="01", ward_code="26737"))
    assert err.value.fields == {"ward_code": "catalogues.entry.ward"}
    with pytest.raises(ValidationFailed) as err:  # Hà Giang (02) was merged into Tuyên Quang: no province 02
        patients.create_patient(session, clerk, patient_data(province_code="02", bhyt_registered_facility="79999"))
    assert err.value.fields == {
        "province_code": "catalogues.entry.province",
        "bhyt_registered_facility": "catalogues.entry.facility",
    }
    p = patients.create_patient(session, clerk, patient_data(ward_code="26737"))
    assert (p.province_code, p.ward_code) == ("79", "26737")


def test_diagnoses_services_and_departments_on_entry(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    visit = {
        "patient_id": p.id,
        "kind": "outpatient",
        "department_code": "K19",
        "reason": "Ho",
        "admission_diagnosis": "Ho",
        "diagnoses": ["R51"],
    }
    # R51 is in the ICD-10 table (world) but not in the Ministry list now in force
    load(session, "icd10", since=date(2020, 1, 1))
    # the diagnoses' code table takes the Ministry's names (the world had its own)
    assert session.get(Icd10Code, "I10").title == "Tăng huyết áp vô căn (nguyên phát)"
    with pytest.raises(ValidationFailed) as err:
        encounters.create_encounter(session, doctor, visit)
    assert err.value.fields == {"diagnoses.0": "encounters.error.icd10"}
    enc = encounters.create_encounter(session, doctor, {**visit, "diagnoses": ["J18.9", "I10"]})
    load(session, "dvkt")
    order = {
        "patient_id": p.id,
        "encounter_id": enc.id,
        "modality": "CT",
        "procedure_name": "CT ngực",
        "urgency": "routine",
    }
    with pytest.raises(ValidationFailed) as err:
        orders.create_order(session, doctor, {**order, "procedure_code": "99.9999.9999"})
    assert err.value.fields == {"procedure_code": "catalogues.entry.service"}
    assert orders.create_order(session, doctor, {**order, "procedure_code": "18.0043.0002"}).id
    load(session, "department")
    with pytest.raises(ValidationFailed) as err:
        encounters.ensure_department(session, "KXX", "Khoa không có trong danh mục")
    assert err.value.fields == {"code": "catalogues.entry.department"}
    assert encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh").code == "K48"


def test_pre_submission_check_uses_the_version_in_force_on_the_service_day(
    session: Session,
    world: World,
    export_config: ExportConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    visit = make_visit(session, world, ward_code="26734", benefit_level=80)  # entered before any catalogue
    rows, problems = check_visit(session, visit.encounter.id, export_config)
    assert problems == []  # no catalogue loaded: nothing to check against
    load_all(session, since=date(2020, 1, 1))
    rows, problems = check_visit(session, visit.encounter.id, export_config)
    assert [(p.table, p.row, p.field) for p in problems] == [("XML1", 1, "MAXA_CU_TRU")]
    assert problems[0].message == (
        "XML1 dòng 1: mã xã cư trú (MAXA_CU_TRU) – mã xã 26734 là mã trước ngày 01/07/2025; mã mới: 26737"
    )
    # A newer ICD-10 list from 1 November 2026 no longer has I10: the visit of 23 November is
    # checked against it; a list starting after the visit would not apply to it.
    newer = tmp_path / "icd10-2026-11.csv"
    newer.write_text('MA_BENH,TEN_BENH\nJ18.9,"Viêm phổi, không xác định"\n', encoding="utf-8")
    from emr.catalogues import load_catalogue

    load_catalogue(session, ADMIN_ACTOR, "icd10", newer, valid_from=date(2026, 11, 1))
    _rows, problems = check_visit(session, visit.encounter.id, export_config)
    assert [(p.table, p.row, p.field) for p in problems] == [("XML1", 1, "MA_BENH_KT"), ("XML1", 1, "MAXA_CU_TRU")]
    assert (
        "mã bệnh I10 không có trong danh mục ICD-10 hiệu lực ngày 23/11/2026 (icd10-2026-11.csv)" in problems[0].message
    )
    later = tmp_path / "icd10-2027.csv"
    later.write_text("MA_BENH,TEN_BENH\nA00,Bệnh tả\n", encoding="utf-8")
    load_catalogue(session, ADMIN_ACTOR, "icd10", later, valid_from=date(2027, 1, 1))
    _rows, again = check_visit(session, visit.encounter.id, export_config)
    assert [(p.table, p.field) for p in again] == [(p.table, p.field) for p in problems]


def test_the_price_list_builds_on_the_dvkt_catalogue(session: Session, tmp_path: Path) -> None:
    from emr.billing.prices import load_prices
    from emr.core.exceptions import FileRejected

    load(session, "dvkt", since=date(2025, 7, 1))
    path = tmp_path / "prices.csv"
    path.write_text(
        "code,name,unit,price_hospital,price_insurance,valid_from\n"
        "18.0043.0002,Chụp CT ngực,Lần,650000,536000,2025-07-01\n"
        "18.0067.0001,Chụp X-quang ngực thẳng,Lần,80000,70000,2025-07-01\n"  # above the list's 65,400
        "99.0000.0001,Không có trong danh mục,Lần,1000,,2025-07-01\n"
        "18.0043.0002,Chụp CT ngực,Lần,600000,522000,2024-01-01\n",  # before the first DVKT version
        encoding="utf-8",
    )
    with pytest.raises(FileRejected) as err:
        load_prices(session, ADMIN_ACTOR, path)
    assert err.value.messages() == [
        "Dòng 3: giá BHYT của 18.0067.0001 (70000) cao hơn đơn giá trong danh mục dịch vụ kỹ thuật (65400.00)",
        "Dòng 4: mã 99.0000.0001 không có trong danh mục dịch vụ kỹ thuật hiệu lực ngày 01/07/2025",
        "Dòng 5: mã 18.0043.0002 không có trong danh mục dịch vụ kỹ thuật hiệu lực ngày 01/01/2024",
    ]
    path.write_text(
        "code,name,unit,price_hospital,price_insurance,valid_from\n"
        "18.0043.0002,Chụp CT ngực,Lần,650000,536000,2025-07-01\n",
        encoding="utf-8",
    )
    assert load_prices(session, ADMIN_ACTOR, path).added == 1
