"""What a form says after an error: the values as typed, which code is wrong, the limit that was
passed, a birth date after today; and the visit form's department, the user's own by default."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import break_glass
from emr.catalogues import load_catalogue
from emr.core import clock
from emr.core.exceptions import ValidationFailed
from emr.i18n import t
from emr.models import Encounter, User
from emr.patients import encounters
from emr.patients import service as patients
from emr.web.forms import field_errors

from .conftest import ADMIN_ACTOR, World, csrf_token, login, patient_data

FACILITIES = Path(__file__).resolve().parents[1] / "catalogues" / "data" / "facility.csv"


def _visit(patient_id: int, **over: object) -> dict[str, object]:
    return {
        "patient_id": patient_id,
        "kind": "outpatient",
        "department_code": "K19",
        "attending_username": "physician1",
        **over,
    }


def _error(page: str, field: str) -> str:
    m = re.search(rf'<small class="error" id="err-{field}">([^<]*)</small>', page)
    assert m, f"no error beside {field}"
    return m.group(1).replace("&#39;", "'").replace("&#34;", '"').replace("&amp;", "&")


# -- 1. the form keeps what was typed -------------------------------------------------------------


def test_visit_form_shows_the_diagnoses_as_typed_after_an_error(
    client: FlaskClient, session: Session, world: World
) -> None:
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    session.commit()
    login(client, "nurse1")
    path = f"/patients/{p.id}/encounters/new"
    form = {k: str(v) for k, v in _visit(p.id).items() if k != "patient_id"}
    form["csrf_token"] = csrf_token(client, path)
    r = client.post(path, data={**form, "diagnoses": "J18.9 XYZ"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert 'name="diagnoses" value="J18.9 XYZ"' in page  # not "['J18.9', 'XYZ']"
    assert _error(page, "diagnoses") == t("encounters.error.icd10", codes="XYZ")
    # saving again what the form shows gives the same answer, not a format error
    again = client.post(path, data={**form, "diagnoses": "J18.9 XYZ"}).get_data(as_text=True)
    assert _error(again, "diagnoses") == "Mã ICD-10 không có trong danh mục: XYZ."
    # another field's error: the diagnoses stay exactly as typed, commas and all
    r = client.post(path, data={**form, "diagnoses": "J18.9, I10", "benefit_level": "50"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and 'name="diagnoses" value="J18.9, I10"' in page
    assert 'name="benefit_level" value="50"' in page
    assert session.scalar(select(Encounter).where(Encounter.patient_id == p.id)) is None
    session.commit()
    assert client.post(path, data={**form, "diagnoses": "J18.9, I10"}).status_code == 302


# -- 2. the code that is not in the catalogue ----------------------------------------------------


def test_unknown_icd10_codes_are_named(session: Session, world: World) -> None:
    nurse = world.actor("nurse")
    p = patients.create_patient(session, nurse, patient_data())
    with pytest.raises(ValidationFailed) as err:
        encounters.create_encounter(session, nurse, _visit(p.id, diagnoses=["XYZ", "J18.9", "A00.0"]))
    # the API's field → key contract is unchanged; the message names every unknown code
    assert err.value.fields == {"diagnoses.0": "encounters.error.icd10", "diagnoses.2": "encounters.error.icd10"}
    assert field_errors(err.value) == {"diagnoses": "Mã ICD-10 không có trong danh mục: XYZ, A00.0."}


def test_unknown_registration_facility_is_named(client: FlaskClient, session: Session, world: World) -> None:
    load_catalogue(session, ADMIN_ACTOR, "facility", FACILITIES, valid_from=date(2020, 1, 1))
    with pytest.raises(ValidationFailed) as err:
        patients.create_patient(session, world.actor("records_clerk"), patient_data(bhyt_registered_facility="79999"))
    assert err.value.fields == {"bhyt_registered_facility": "catalogues.entry.facility"}
    assert field_errors(err.value)["bhyt_registered_facility"] == t("catalogues.entry.facility", code="79999")
    assert "79999" in field_errors(err.value)["bhyt_registered_facility"]
    session.rollback()
    login(client, "records_clerk1")
    token = csrf_token(client, "/patients/new")
    r = client.post("/patients/new", data={**patient_data(bhyt_registered_facility="79999"), "csrf_token": token})
    assert r.status_code == 422
    assert _error(r.get_data(as_text=True), "bhyt_registered_facility") == (
        "Mã cơ sở KCB 79999 không có trong danh mục cơ sở khám chữa bệnh hiện hành"
    )


# -- 3. no birth date after the facility's today ------------------------------------------------


def test_birth_date_after_the_facility_today_is_refused(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    clerk = world.actor("records_clerk")
    # 20:00 UTC on 7 December is 03:00 on 8 December in Hồ Chí Minh City: the facility's today is the 8th
    monkeypatch.setattr(clock, "utcnow", lambda: datetime(2026, 12, 7, 20, 0))
    newborn = patients.create_patient(session, clerk, patient_data(birth_date="2026-12-08", cccd=None))
    with pytest.raises(ValidationFailed) as err:
        patients.create_patient(session, clerk, patient_data(birth_date="2026-12-09", cccd=None, bhyt_number=None))
    assert err.value.fields == {"birth_date": "patients.error.birth_future"}
    assert field_errors(err.value) == {"birth_date": "Ngày sinh không được sau ngày hôm nay."}
    session.rollback()
    with pytest.raises(ValidationFailed) as err:
        patients.update_patient(session, clerk, newborn.id, patient_data(birth_date="2030-01-01", cccd=None))
    assert err.value.fields == {"birth_date": "patients.error.birth_future"}


def test_api_refuses_a_future_birth_date(client: FlaskClient, tokens: dict[str, str]) -> None:
    clerk = {"Authorization": f"Bearer {tokens['records_clerk']}"}
    future = (clock.local_today() + timedelta(days=1)).isoformat()
    r = client.post("/api/patients", json=patient_data(birth_date="2030-01-01", cccd=None), headers=clerk)
    assert r.status_code == 422 and r.json["fields"] == {"birth_date": "patients.error.birth_future"}
    r = client.post("/api/patients", json=patient_data(birth_date=future, cccd=None), headers=clerk)
    assert r.status_code == 422 and r.json["fields"] == {"birth_date": "patients.error.birth_future"}
    r = client.post("/api/patients", json=patient_data(), headers=clerk)
    assert r.status_code == 201
    pid = r.json["id"]
    r = client.put(f"/api/patients/{pid}", json=patient_data(birth_date="2030-01-01", cccd=None), headers=clerk)
    assert r.status_code == 422 and r.json["fields"] == {"birth_date": "patients.error.birth_future"}


def test_patient_form_refuses_a_future_birth_date(client: FlaskClient, world: World) -> None:
    login(client, "records_clerk1")
    token = csrf_token(client, "/patients/new")
    r = client.post("/patients/new", data={**patient_data(birth_date="2030-01-01", cccd=""), "csrf_token": token})
    assert r.status_code == 422
    assert _error(r.get_data(as_text=True), "birth_date") == t("patients.error.birth_future")


# -- 4. the visit form's department: the user's own -----------------------------------------------


def _department_select(html: str) -> str:
    m = re.search(r'<select name="department_code".*?</select>', html, re.S)
    assert m
    return m.group(0)


def test_visit_form_defaults_to_the_user_department(client: FlaskClient, session: Session, world: World) -> None:
    encounters.ensure_department(session, "K02", "Khoa Chẩn đoán hình ảnh")  # first by name
    nurse = session.get(User, world.users["nurse"].id)
    assert nurse is not None
    nurse.department_id = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp").id
    session.commit()
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    session.commit()
    login(client, "nurse1")
    select_html = _department_select(client.get(f"/patients/{p.id}/encounters/new").get_data(as_text=True))
    assert '<option value="K19" selected>' in select_html
    assert select_html.index('value="K02"') < select_html.index('value="K19"')
    # a user without a department: nothing chosen, the browser shows the first
    other = FlaskClient(client.application, use_cookies=True)
    login(other, "records_clerk1")
    assert " selected>" not in _department_select(other.get(f"/patients/{p.id}/encounters/new").get_data(as_text=True))


# -- 5. "too long" says the limit -----------------------------------------------------------------


def test_too_long_says_the_limit(client: FlaskClient, session: Session, world: World, tokens: dict[str, str]) -> None:
    nurse = world.actor("nurse")
    p = patients.create_patient(session, nurse, patient_data())
    with pytest.raises(ValidationFailed) as err:
        encounters.create_encounter(session, nurse, _visit(p.id, benefit_level=32, benefit_level_note="x" * 201))
    assert err.value.fields == {"benefit_level_note": "errors.field_too_long_max"}
    assert field_errors(err.value) == {"benefit_level_note": "Nội dung quá dài (tối đa 200 ký tự)."}
    session.rollback()
    with pytest.raises(ValidationFailed) as err:
        break_glass.open_break_glass(session, world.actor("physician"), p.id, "khẩn cấp " * 200)
    assert field_errors(err.value) == {"reason": t("errors.field_too_long_max", max=break_glass.MAX_REASON)}
    session.rollback()
    # the API gives the limit beside the key
    r = client.post(
        "/api/patients",
        json=patient_data(full_name="Nguyễn " * 40, cccd=None, bhyt_number=None),
        headers={"Authorization": f"Bearer {tokens['records_clerk']}"},
    )
    assert r.status_code == 422 and r.json["fields"] == {"full_name": "errors.field_too_long_max"}
    assert r.json["params"] == {"full_name": {"max": 200}}
    # and the form says it beside the field
    login(client, "records_clerk1")
    token = csrf_token(client, "/patients/new")
    r = client.post("/patients/new", data={**patient_data(full_name="Nguyễn " * 40), "csrf_token": token})
    assert r.status_code == 422
    assert _error(r.get_data(as_text=True), "full_name") == "Nội dung quá dài (tối đa 200 ký tự)."
