"""Ending a visit and writing on an ended one, under attack.

Closing a visit sets the discharge diagnosis and the discharge time and pushes the visit's summary to the
health record: only a physician attending it or of its department may. Every other role of the same
department (nurse, records clerk, radiologist, technician) posts the close form with a valid CSRF token of
their own session; a physician of another department first breaks the glass (which opens the record to
read) and then tries: all are refused with 403, the refusals audited, the visit stays open. Once the
visit is closed, its attending physician forges a new-paper form naming it (the form no longer offers it)
and posts the same through the JSON API: refused, nothing created.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import Actor
from emr.access.break_glass import open_break_glass
from emr.access.users import create_token, create_user
from emr.models import AuditEntry, Document, Encounter
from emr.patients import encounters
from emr.patients import service as patients
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    csrf_token,
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
SAME_DEPARTMENT = ("nurse", "records_clerk", "radiologist", "technician")


@dataclass
class World:
    app: Flask
    factory: Any
    patient_id: int
    open_id: int
    closed_id: int
    token: str

    def client(self, username: str) -> FlaskClient:
        return logged_in(self.app, username)



@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:  # noqa: F811
    patch = cheap_password_hashing()  # this module logs in often
    _settings, engine, app, factory = sqlite_app(tmp_path_factory.mktemp("visit-close"), sqlite_template)
    catalogue = tmp_path_factory.mktemp("icd") / "icd10.csv"
    catalogue.write_text("code,title\nJ18.9,Viêm phổi không đặc hiệu\n", encoding="utf-8")
    with factory() as s:
        encounters.load_icd10(s, SETUP, catalogue)
        k19 = encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        s.commit()
        doctor = create_user(s, SETUP, "bacsi", PASSWORD, "physician", "BS. Điều trị", department_id=k19.id,
                             practising_cert_no="1/HCM-CCHN")
        for role in SAME_DEPARTMENT:
            create_user(s, SETUP, role, PASSWORD, role, f"Người dùng {role}", department_id=k19.id,
                        practising_cert_no=f"{role}/HCM-CCHN")
        stranger = create_user(s, SETUP, "bskhac", PASSWORD, "physician", "BS. Khoa khác", department_id=k01.id,
                               practising_cert_no="2/HCM-CCHN")
        p = patients.create_patient(s, SETUP, {"full_name": "Lê Hoàng Phúc", "birth_date": "1985-03-02",
                                               "sex": "M", "province_code": "79"})
        me = Actor(doctor.id, "bacsi", "physician", "127.0.0.1")
        visit = encounters.create_encounter(s, me, {"patient_id": p.id, "kind": "inpatient",
                                                    "department_code": "K19", "diagnoses": ["J18.9"]})
        ended = encounters.create_encounter(s, me, {"patient_id": p.id, "kind": "outpatient",
                                                    "department_code": "K19", "diagnoses": ["J18.9"]})
        encounters.close_encounter(s, me, ended.id, "Viêm phổi thùy dưới phải")
        open_break_glass(s, Actor(stranger.id, "bskhac", "physician", "127.0.0.1"), p.id,
                         "Cấp cứu ban đêm, cần xem tiền sử")
        token = create_token(s, SETUP, doctor.id, "tests")
        w = World(app, factory, p.id, visit.id, ended.id, token)
    yield w
    engine.dispose()
    patch.undo()


def _status(world: World, encounter_id: int) -> str:
    with world.factory() as s:
        enc = s.get(Encounter, encounter_id)
        assert enc is not None
        return enc.status


@pytest.mark.parametrize("username", [*SAME_DEPARTMENT, "bskhac"])
def test_only_a_treating_physician_closes_the_visit(world: World, username: str) -> None:
    path = f"/patients/{world.patient_id}/encounters/{world.open_id}/close"
    c = world.client(username)
    token = csrf_token(c, "/")  # their own valid token: CSRF is not what stops them
    assert c.get(path).status_code == 403
    r = c.post(path, data={"csrf_token": token, "discharge_diagnosis": "Viêm phổi thùy dưới phải",
                           "main_code": "J18.9", "pending": "keep"})
    assert r.status_code == 403, username
    assert _status(world, world.open_id) == "open"
    with world.factory() as s:
        denied = s.scalars(select(AuditEntry).where(AuditEntry.username == username,
                                                    AuditEntry.outcome == "denied")).all()
    assert denied, username


def test_no_paper_is_forged_onto_a_closed_visit(world: World) -> None:
    doctor = world.client("bacsi")
    form = f"/patients/{world.patient_id}/documents/new?form_type=progress_note"
    assert f'value="{world.closed_id}"' not in doctor.get(form).get_data(as_text=True)
    r = doctor.post(form, data={"csrf_token": csrf_token(doctor, form), "encounter_id": str(world.closed_id),
                                "c_note": "Ghi sau ra viện"})
    assert r.status_code == 422
    api = world.app.test_client().post(
        "/api/documents", headers={"Authorization": f"Bearer {world.token}"},
        json={"encounter_id": world.closed_id, "form_type": "admission_note",
              "content": {"reason": "Ho", "examination": "Phổi ran", "initial_diagnosis": "Viêm phổi"}})
    assert api.status_code == 409 and api.get_json()["error"] == "invalid_state"
    with world.factory() as s:
        assert s.scalars(select(Document).where(Document.encounter_id == world.closed_id)).all() == []
