"""The head of department's signature on a discharge paper, under attack.

The department has no head; the treating physician has signed. Only a deputy or acting head designated for
the visit's department and for today may give the second signature. Each of these posts the signing form
with their own valid CSRF token, the content hash of the version and a registered signing key: a physician
of the department with no designation, one whose designation ended yesterday, one whose designation starts
tomorrow, one whose designation an admin ended, one designated for another department, the head of another
department, the treating physician a second time, a nurse and the admin. All are refused (403), each refusal
audited, and the paper keeps its one signature; a physician cannot designate themselves either, and the
treating physician, even once designated deputy, cannot give the second signature of a paper they signed. Then
the deputy designated for today signs, as "KT. Trưởng khoa".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import Actor
from emr.access import substitutes
from emr.access.users import create_user
from emr.core.clock import local_today
from emr.documents import service as documents
from emr.i18n import t
from emr.models import AuditEntry, Document, HeadSubstitute, User, utcnow
from emr.models.signing import SignedArtifact
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing import service as signing
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    csrf_token,
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)
from tests.signing_fixtures import trust_dev_pki

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
DAY = dt.timedelta(days=1)
ATTACKERS = ("bskhoa", "pho_hethan", "pho_chuaden", "pho_daket", "pho_k01", "truongkhoa_k01", "bacsi",
             "dieuduong", "quantri")


@dataclass
class World:
    app: Flask
    factory: Any
    document_id: int
    p12_password: str

    def client(self, username: str) -> FlaskClient:
        return logged_in(self.app, username)

    def signatures(self) -> int:
        with self.factory() as s:
            artifact = s.scalar(select(SignedArtifact).where(SignedArtifact.document_id == self.document_id))
            return artifact.signatures_done if artifact else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, pki: Any,  # noqa: F811
          pki_server: Any) -> Iterator[World]:

    patch = cheap_password_hashing()  # this module logs in often
    base = tmp_path_factory.mktemp("head-signature")
    trust_dev_pki(pki, base)
    _settings, engine, app, factory = sqlite_app(base, sqlite_template, tsa_url=pki_server.tsa_url)
    catalogue = base / "icd10.csv"
    catalogue.write_text("code,title\nJ18.9,Viêm phổi không đặc hiệu\n", encoding="utf-8")
    dev = pki.users["bs.an"]
    today = local_today()
    with factory() as s:
        encounters.load_icd10(s, SETUP, catalogue)
        k19 = encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")  # no head: the post is vacant
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        s.commit()
        people = {}
        for i, (name, role, dep) in enumerate((
            ("bacsi", "physician", k19), ("bskhoa", "physician", k19), ("pho_hethan", "physician", k19),
            ("pho_chuaden", "physician", k19), ("pho_daket", "physician", k19), ("pho_k01", "physician", k19),
            ("truongkhoa_k01", "physician", k01), ("pho_k19", "physician", k19), ("dieuduong", "nurse", k19),
            ("quantri", "admin", None),
        )):
            people[name] = create_user(s, SETUP, name, PASSWORD, role, f"Người {name}", practising_cert_no=f"{i}/CCHN",
                                       department_id=dep.id if dep else None)
            if role == "physician":
                signing.register_pkcs12(s, SETUP, people[name].id, dev.p12_bytes(), dev.password())
        people["truongkhoa_k01"].is_department_head = True
        s.add(HeadSubstitute(department_id=k19.id, user_id=people["pho_hethan"].id, capacity="deputy",
                             valid_from=today - 30 * DAY, valid_to=today - DAY, created_at=utcnow()))
        s.commit()
        substitutes.designate(s, SETUP, people["pho_chuaden"].id, k19.id, "deputy", today + DAY, None)
        ended = substitutes.designate(s, SETUP, people["pho_daket"].id, k19.id, "acting", today, None)
        substitutes.end(s, SETUP, ended.id, people["pho_daket"].id)
        substitutes.designate(s, SETUP, people["pho_k01"].id, k01.id, "acting", today, None)
        substitutes.designate(s, SETUP, people["pho_k19"].id, k19.id, "deputy", today, today + 7 * DAY, "9/QĐ")
        doctor = Actor(people["bacsi"].id, "bacsi", "physician", "127.0.0.1")
        p = patients.create_patient(s, SETUP, {"full_name": "Lê Hoàng Phúc", "birth_date": "1985-03-02",
                                               "sex": "M", "province_code": "79"})
        visit = encounters.create_encounter(s, doctor, {"patient_id": p.id, "kind": "inpatient",
                                                        "department_code": "K19", "diagnoses": ["J18.9"]})
        doc = documents.create_document(s, doctor, {
            "encounter_id": visit.id, "form_type": "discharge_summary",
            "content": {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh",
                        "result": "1"}})
        encounters.close_encounter(s, doctor, visit.id, "Viêm phổi thùy dưới phải")
        signing.sign_document(s, doctor, doc.id, app.extensions["emr.signing_config"], method="pkcs12",
                              secret=dev.password(), expected_sha256=doc.versions[0].content_sha256)
        w = World(app, factory, doc.id, dev.password())
    assert w.signatures() == 1
    yield w
    engine.dispose()
    patch.undo()


def _post(world: World, c: FlaskClient) -> Any:
    path = f"/signing/documents/{world.document_id}/sign"
    with world.factory() as s:
        doc = s.get(Document, world.document_id)
        assert doc is not None
        shown = doc.versions[0].content_sha256
    token = csrf_token(c, "/")  # their own valid token: CSRF is not what stops them
    return c.post(path, data={"csrf_token": token, "method": "pkcs12", "secret": world.p12_password,
                              "content_sha256": shown})


@pytest.mark.parametrize("username", ATTACKERS)
def test_nobody_but_a_designated_substitute_gives_the_head_signature(world: World, username: str) -> None:
    c = world.client(username)
    page = c.get(f"/signing/documents/{world.document_id}/sign")
    shown = page.status_code == 200
    if shown:  # the form is not offered; the page says who may sign today
        text = page.get_data(as_text=True)
        assert 'name="secret"' not in text
        assert "Người pho_k19" in text and t("signing.capacity.deputy") in text
    else:
        assert page.status_code == 403, username  # no right to sign, or to open this record, at all
    r = _post(world, c)
    assert r.status_code == 403, (username, r.get_data(as_text=True)[:400])
    assert world.signatures() == 1
    with world.factory() as s:
        query = select(AuditEntry.action).where(AuditEntry.username == username, AuditEntry.outcome == "denied")
        denied = set(s.scalars(query))
    assert ("document.sign" in denied) if shown else bool(denied), (username, denied)


def test_a_physician_cannot_name_themselves_substitute(world: World) -> None:
    c = world.client("bskhoa")
    with world.factory() as s:
        before = len(s.scalars(select(HeadSubstitute)).all())
        me = s.scalar(select(User.id).where(User.username == "bskhoa"))
    form = {"csrf_token": csrf_token(c, "/signing/keys"), "kind": "substitute", "department_id": "1",
            "capacity": "acting", "valid_from": local_today().isoformat()}
    assert c.post("/signing/keys", data=form).status_code == 422
    page = c.get("/signing/keys").get_data(as_text=True)
    assert not re.search(r'name="kind" value="substitute"', page)
    assert c.post(f"/signing/users/{me}", data=form).status_code == 403
    with world.factory() as s:
        assert len(s.scalars(select(HeadSubstitute)).all()) == before
    assert _post(world, c).status_code == 403 and world.signatures() == 1


def test_the_treating_physician_made_deputy_cannot_give_the_second_signature(world: World) -> None:
    """Before: designated "KT. Trưởng khoa" after signing as the treating physician, bacsi posted the form again
    and the paper was complete and valid with the same person's name twice."""
    with world.factory() as s:
        bacsi = s.scalar(select(User).where(User.username == "bacsi"))
        assert bacsi is not None and bacsi.department_id is not None
        row = substitutes.designate(s, SETUP, bacsi.id, bacsi.department_id, "deputy", local_today(), None, "13/QĐ")
        assert substitutes.head_capacity(s, bacsi, bacsi.department_id) == "deputy"
        row_id, bacsi_id = row.id, bacsi.id
    try:
        c = world.client("bacsi")
        page = c.get(f"/signing/documents/{world.document_id}/sign").get_data(as_text=True)
        assert 'name="secret"' not in page and 'id="already-signed"' in page
        r = _post(world, c)  # straight at the server, with a valid token, hash and key
        assert r.status_code == 403
        assert t("signing.error.already_signed") in r.get_data(as_text=True)
        assert world.signatures() == 1
        with world.factory() as s:
            refusals = s.scalars(select(AuditEntry).where(
                AuditEntry.username == "bacsi", AuditEntry.action == "document.sign", AuditEntry.outcome == "denied",
                AuditEntry.details.contains("already_signed"))).all()
            assert len(refusals) == 1
            doc = s.get(Document, world.document_id)
            assert doc is not None and doc.status == "signing"
    finally:
        with world.factory() as s:
            substitutes.end(s, SETUP, row_id, bacsi_id)


def test_the_deputy_designated_for_today_signs(world: World) -> None:
    r = _post(world, world.client("pho_k19"))
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    assert world.signatures() == 2
    with world.factory() as s:
        doc = s.get(Document, world.document_id)
        assert doc is not None and doc.status == "signed"
        assert signing.signing_overview(s, doc)[1]["signatures"][1]["slot"] == t("signing.capacity.deputy")
