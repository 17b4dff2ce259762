"""The outbox operator page and the close-the-visit action under attack (issue 15).

Only admins see or resend messages; every other role is refused on the
server (and the refusal audited) even with a valid CSRF token; resend needs
POST + CSRF and a message in a resendable state; hostile filters and ids do
not break or reflect into the page; the page shows no clinical content from
a payload. Closing a visit (which pushes its summary to the health record)
is refused to roles without ``encounter.write`` and to a physician outside
the patient's care, and a visit cannot be closed through another patient's URL.
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
from emr.access.users import create_user
from emr.models import AuditEntry, Encounter, OutboxMessage
from emr.outbox import enqueue
from emr.patients import encounters
from emr.patients import service as patients
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    csrf_token,
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
ROLES = ("admin", "physician", "radiologist", "technician", "nurse", "records_clerk")
SECRET_NAME = "Lê Thị Bí Mật"
SECRET_CCCD = "079190654321"


@dataclass
class World:
    app: Flask
    factory: Any
    patient_id: int
    encounter_id: int
    other_patient_id: int
    dead_id: int
    sent_id: int
    waiting_id: int

    def client(self, username: str) -> FlaskClient:
        return logged_in(self.app, username)

    def message(self, message_id: int) -> OutboxMessage:
        with self.factory() as s:
            m = s.get(OutboxMessage, message_id)
            assert m is not None
            s.expunge(m)
            return m



@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:  # noqa: F811
    patch = cheap_password_hashing()  # this module logs in often
    tmp = tmp_path_factory.mktemp("outbox-security")
    _settings, engine, app, factory = sqlite_app(tmp, sqlite_template)
    with factory() as s:
        dep = encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
        s.commit()
        users = {role: create_user(s, SETUP, f"{role}1", PASSWORD, role, f"Người dùng {role}",
                                   department_id=dep.id, practising_cert_no=f"{role}/HCM-CCHN") for role in ROLES}
        create_user(s, SETUP, "outsider1", PASSWORD, "physician", "BS. Ngoài khoa", practising_cert_no="x/HCM-CCHN")
        p = patients.create_patient(s, SETUP, {"full_name": SECRET_NAME, "birth_date": "1990-05-17", "sex": "F",
                                               "cccd": SECRET_CCCD, "province_code": "79"})
        other = patients.create_patient(s, SETUP, {"full_name": "Phạm Văn Khác", "birth_date": "1970-01-01",
                                                   "sex": "M", "province_code": "79"})
        doctor = Actor(users["physician"].id, "physician1", "physician", "127.0.0.1")
        enc = encounters.create_encounter(s, doctor, {"patient_id": p.id, "kind": "outpatient",
                                                      "department_code": "K19", "reason": "Ho"})
        payload = {"resourceType": "Bundle", "type": "document",
                   "entry": [{"resource": {"resourceType": "Patient", "name": [{"text": SECRET_NAME}],
                                           "identifier": [{"value": SECRET_CCCD}]}}]}
        ids = {}
        for status in ("dead", "sent", "waiting"):
            m = enqueue(s, "ehr.bundle", f"key-{status}", payload, target="https://ehr.example/fhir/Bundle",
                        patient_id=p.id, subject="Tóm tắt lượt khám 1")
            m.status = status
            m.last_error = "HTTP 503 from https://ehr.example/fhir/Bundle" if status == "dead" else None
            ids[status] = m.id
        s.commit()
        w = World(app, factory, p.id, enc.id, other.id, ids["dead"], ids["sent"], ids["waiting"])
    yield w
    engine.dispose()
    patch.undo()


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
def test_other_roles_cannot_see_or_resend(world: World, role: str) -> None:
    c = world.client(f"{role}1")
    token = csrf_token(c, "/")  # a valid token of their own session: CSRF is not what stops them
    assert c.get("/admin/outbox/").status_code == 403
    assert c.get(f"/admin/outbox/{world.dead_id}").status_code == 403
    r = c.post(f"/admin/outbox/{world.dead_id}/resend", data={"csrf_token": token})
    assert r.status_code == 403
    assert world.message(world.dead_id).status == "dead"
    with world.factory() as s:
        denied = s.scalars(select(AuditEntry).where(AuditEntry.username == f"{role}1",
                                                    AuditEntry.outcome == "denied")).all()
    assert len(denied) >= 3


def test_anonymous_is_sent_to_login(world: World) -> None:
    c = world.app.test_client()
    for path in ("/admin/outbox/", f"/admin/outbox/{world.dead_id}"):
        r = c.get(path)
        assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert c.post(f"/admin/outbox/{world.dead_id}/resend").status_code in (302, 400)
    assert world.message(world.dead_id).status == "dead"


def test_resend_needs_post_csrf_and_a_resendable_message(world: World) -> None:
    admin = world.client("admin1")
    assert admin.get(f"/admin/outbox/{world.dead_id}/resend").status_code == 405
    assert admin.post(f"/admin/outbox/{world.dead_id}/resend").status_code == 400  # no CSRF token
    assert world.message(world.dead_id).status == "dead"
    token = csrf_token(admin, f"/admin/outbox/{world.dead_id}")
    for mid in (world.sent_id, world.waiting_id):
        r = admin.post(f"/admin/outbox/{mid}/resend", data={"csrf_token": token})
        assert r.status_code == 409
    assert world.message(world.sent_id).status == "sent"
    assert admin.post("/admin/outbox/987654/resend", data={"csrf_token": token}).status_code == 404


def test_hostile_filters_and_ids_do_not_break_or_reflect(world: World) -> None:
    admin = world.client("admin1")
    r = admin.get("/admin/outbox/?status=%27%20OR%201%3D1%20--&kind=%3Cscript%3Ealert(1)%3C/script%3E&offset=-5")
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.get_data(as_text=True)
    assert admin.get("/admin/outbox/?offset=99999999999999999999").status_code == 200
    assert admin.get("/admin/outbox/?kind=" + "k" * 5000).status_code == 200
    assert admin.get("/admin/outbox/987654").status_code == 404
    assert admin.get("/admin/outbox/abc").status_code == 404


def test_the_page_shows_no_clinical_content(world: World) -> None:
    admin = world.client("admin1")
    for path in ("/admin/outbox/", f"/admin/outbox/{world.dead_id}", "/admin/outbox/?status=dead"):
        page = admin.get(path).get_data(as_text=True)
        assert SECRET_NAME not in page and SECRET_CCCD not in page, path
    detail = admin.get(f"/admin/outbox/{world.dead_id}").get_data(as_text=True)
    assert "HTTP 503" in detail and "entry[Patient]" in detail  # what an operator needs: the shape and the error


def test_close_visit_refused_without_the_right_or_outside_care(world: World) -> None:
    path = f"/patients/{world.patient_id}/encounters/{world.encounter_id}/close"
    for username in ("radiologist1", "technician1", "admin1", "outsider1"):
        c = world.client(username)
        r = c.post(path, data={"csrf_token": csrf_token(c, "/"), "discharge_diagnosis": "x"})
        assert r.status_code == 403, username
    doctor = world.client("physician1")
    wrong = f"/patients/{world.other_patient_id}/encounters/{world.encounter_id}/close"
    r = doctor.post(wrong, data={"csrf_token": csrf_token(doctor, "/"), "discharge_diagnosis": "x"})
    assert r.status_code in (403, 404)
    assert doctor.post(path, data={"discharge_diagnosis": "x"}).status_code == 400  # no CSRF token
    with world.factory() as s:
        enc = s.get(Encounter, world.encounter_id)
        assert enc is not None and enc.status == "open"
        outsider = s.scalars(select(AuditEntry).where(AuditEntry.username == "outsider1",
                                                      AuditEntry.outcome == "denied")).all()
        assert outsider  # the care-scope refusal is on record
