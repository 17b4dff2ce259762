"""The signing workflow through the real EMR app (SQLite): token and PKCS#12 signing from the
form, /verify for the QR code, amendments, signing order, revoked certificates, tampered rows."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emr import Actor, EmrSettings, create_app, upgrade_database
from emr.access.users import create_user
from emr.core.clock import to_local
from emr.db import make_engine, make_session_factory
from emr.documents import service as documents
from emr.models import AuditEntry, Document, DocumentVersion, Encounter, Icd10Code, User
from emr.models.signing import DocumentSignature, SignedArtifact
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing import (
    DevPki,
    DevPkiServer,
    enroll_dev_token_key,
    import_trust_anchor,
    issue_user_certificate,
    revoke_certificate,
    verify_pdf,
)
from emr.signing import service as svc
from filmless.wiring import viewer_extension
from tests.emr.conftest import csrf_token

from .conftest import TOKEN_LABEL, TOKEN_PIN

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
PATIENT = {
    "full_name": "Nguyễn Thị Hồng Nhung",
    "birth_date": "1990-05-17",
    "sex": "F",
    "cccd": "079190001234",
    "address": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
    "province_code": "79",
    "phone": "0901234567",
}


class Env:
    def __init__(
        self,
        app: Flask,
        session: Session,
        users: dict[str, User],
        pki: DevPki,
        encounter_id: int,
        patient_id: int,
        labels: dict[str, str],
    ) -> None:
        self.app, self.session, self.users, self.pki = app, session, users, pki
        self.encounter_id, self.patient_id, self.labels = encounter_id, patient_id, labels

    def actor(self, name: str) -> Actor:
        u = self.users[name]
        return Actor(u.id, u.username, u.role, "127.0.0.1")

    def client(self, name: str) -> FlaskClient:
        c = self.app.test_client()
        c.get("/login")
        r = c.post(
            "/login",
            data={"username": self.users[name].username, "password": PASSWORD, "csrf_token": csrf_token(c, "/login")},
        )
        assert r.status_code == 302
        return c

    def document(self, form_type: str, content: dict[str, Any], author: str = "physician") -> Document:
        return documents.create_document(
            self.session,
            self.actor(author),
            {"encounter_id": self.encounter_id, "form_type": form_type, "content": content},
        )



@pytest.fixture(scope="module")
def token_keys(pki: DevPki, softhsm_token: dict[str, str]) -> dict[str, str]:
    """Keys on the session's SoftHSM token for the physician and the radiologist (unique labels)."""
    suffix = uuid.uuid4().hex[:6]
    labels = {"physician": f"bacsi-{suffix}", "radiologist": f"bschan-{suffix}"}
    enroll_dev_token_key(pki, TOKEN_LABEL, TOKEN_PIN, labels["physician"], "BS. Nguyễn Văn An")
    enroll_dev_token_key(pki, TOKEN_LABEL, TOKEN_PIN, labels["radiologist"], "BS. Trần Thị Bích Ngọc")
    return labels


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    import emr.access.users as users

    monkeypatch.setattr(users, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def env(tmp_path: Path, pki: DevPki, pki_server: DevPkiServer, token_keys: dict[str, str]) -> Iterator[Env]:
    data = tmp_path / "data"
    anchors = data / "pki" / "trust-anchors"
    import_trust_anchor(pki.ca_cert_path.read_bytes(), anchors)
    (data / "pki" / "crls").mkdir(parents=True)
    (data / "pki" / "crls" / "dev.crl").symlink_to(pki.crl_path)
    settings = EmrSettings(
        data_dir=data,
        database_url=f"sqlite:///{tmp_path / 'emr.sqlite3'}",
        secret_key_file=tmp_path / "key",
        public_url="https://emr.benhvien.example",
        hospital_name="Bệnh viện Đa khoa filmless",
        tsa_url=pki_server.tsa_url,
    )
    upgrade_database(settings)
    engine = make_engine(settings.database_url)
    app = create_app(settings, test_config={"TESTING": True, "EMR_ENGINE": engine}, extensions=[viewer_extension(None)])
    with make_session_factory(engine)() as session:
        # SQLite: the test's own session must not hold its write lock while the app answers.
        app.before_request_funcs.setdefault(None, []).insert(0, lambda: session.commit())
        dep = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
        users = {}
        for name, role in (
            ("physician", "physician"),
            ("radiologist", "radiologist"),
            ("head", "physician"),
            ("other", "physician"),
            ("nurse", "nurse"),
        ):
            users[name] = create_user(
                session,
                SETUP,
                f"{name}1",
                PASSWORD,
                role,
                f"BS. {name.title()}",
                department_id=dep.id,
                practising_cert_no=f"{len(users)}/HCM-CCHN",
            )
        users["head"].is_department_head = True
        session.commit()
        p = patients.create_patient(session, SETUP, PATIENT)
        session.add(Icd10Code(code="J18.9", title="Viêm phổi không đặc hiệu"))  # a visit closes with its main code
        enc = encounters.create_encounter(
            session,
            Actor(users["physician"].id, "physician1", "physician", None),
            {"patient_id": p.id, "kind": "outpatient", "department_code": "K19", "reason": "Ho, sốt",
             "diagnoses": ["J18.9"]},
        )
        for name in ("physician", "radiologist", "head"):
            svc.register_token_key(
                session, SETUP, users[name].id, TOKEN_LABEL, token_keys.get(name, token_keys["physician"])
            )
        yield Env(app, session, users, pki, enc.id, p.id, token_keys)
    engine.dispose()


def _sign(client: FlaskClient, doc_id: int, secret: str, method: str = "pkcs11") -> Any:
    """Open the signing form as a browser does and submit it (with the content hash it showed)."""
    path = f"/signing/documents/{doc_id}/sign"
    form = client.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    shown = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', form)
    assert csrf, path
    data = {"csrf_token": csrf.group(1), "method": method, "secret": secret}
    if shown:
        data["content_sha256"] = shown.group(1)
    return client.post(path, data=data)


OUTPATIENT = {
    "chief_complaint": "Ho, sốt 3 ngày",
    "examination": "Ran nổ đáy phổi phải",
    "conclusion": "Viêm phổi",
    "treatment_plan": "Kháng sinh 7 ngày",
}


def test_physician_signs_with_token_and_qr_verifies(env: Env) -> None:
    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    page = c.get(f"/documents/{doc.id}").get_data(as_text=True)
    assert f"/signing/documents/{doc.id}/sign" in page  # the "Ký số" button
    r = _sign(c, doc.id, TOKEN_PIN)
    assert r.status_code == 302, r.get_data(as_text=True)

    env.session.expire_all()
    version = env.session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
    assert version.locked and version.status == "signed"
    artifact = svc.artifact_for(env.session, version.id)
    assert artifact is not None and artifact.complete
    assert len(artifact.verification_code) >= 32
    pdf = c.get(f"/signing/documents/{doc.id}/versions/1/pdf")
    assert pdf.status_code == 200 and pdf.data == bytes(artifact.pdf)
    report = verify_pdf(pdf.data, [env.pki.ca_certificate()])
    assert report.valid, report
    assert report.signatures[0].signer_name == "BS. Nguyễn Văn An"
    assert report.signatures[0].timestamp_time is not None

    anonymous = env.app.test_client()
    page = anonymous.get(f"/verify/{artifact.verification_code}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "HỢP LỆ" in text and "KHÔNG HỢP LỆ" not in text
    assert PATIENT["full_name"] not in text and "BN0" not in text  # no patient data for the public
    assert "BS. Nguyễn Văn An" in text
    api = anonymous.get(f"/api/verify/{artifact.verification_code}").get_json()
    assert api["valid"] is True and "patient" not in api
    assert api["signatures"][0]["timestamp_time"] and api["signatures"][0]["chain_status"] == "trusted"
    assert api["stored_sha256"] == api["actual_sha256"] == hashlib.sha256(pdf.data).hexdigest()
    # Logged in with rights: the patient is shown.
    assert PATIENT["full_name"] in c.get(f"/verify/{artifact.verification_code}").get_data(as_text=True)
    # Anyone holding the file can check it.
    up = anonymous.post("/api/verify", data=pdf.data, content_type="application/pdf").get_json()
    assert up["valid"] is True and up["issued_here"] is True
    assert anonymous.get("/verify/not-a-code-at-all").status_code == 404
    actions = env.session.scalars(select(AuditEntry.action).where(AuditEntry.object_id == str(doc.id))).all()
    assert "document.sign_step" in actions and "document.sign" in actions


def test_wrong_pin_shows_vietnamese_error_and_signs_nothing(env: Env) -> None:
    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    r = _sign(c, doc.id, "000000")
    assert r.status_code == 422
    text = r.get_data(as_text=True)
    assert 'id="err-secret"' in text and "PIN" in text
    env.session.expire_all()
    assert env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)) is None
    v = env.session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
    assert not v.locked and v.status == "draft"
    # PKCS#12 with a wrong password: same.
    user = env.pki.users["bs.an"]
    svc.register_pkcs12(env.session, SETUP, env.users["physician"].id, user.p12_bytes(), user.password())
    r = _sign(c, doc.id, "wrong password", method="pkcs12")
    assert r.status_code == 422 and 'id="err-secret"' in r.get_data(as_text=True)
    assert env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)) is None
    r = _sign(c, doc.id, user.password(), method="pkcs12")
    assert r.status_code == 302


def test_amendment_after_signing_keeps_the_original(env: Env) -> None:
    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    v1 = env.session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
    a1 = svc.artifact_for(env.session, v1.id)
    assert a1 is not None
    original_pdf, original_json = bytes(a1.pdf), v1.content_json

    # Editing the signed document in the UI writes an amendment with a reason.
    form = {
        "csrf_token": csrf_token(c, f"/documents/{doc.id}/edit"),
        "reason": "Bổ sung kết luận",
        **{f"c_{k}": v for k, v in OUTPATIENT.items()},
        "c_conclusion": "Viêm phổi thùy dưới phải",
    }
    assert c.post(f"/documents/{doc.id}/edit", data=form).status_code == 302
    env.session.expire_all()
    d = env.session.get(Document, doc.id)
    assert d.current_version == 2 and d.status == "amended"
    page = c.get(f"/documents/{doc.id}").get_data(as_text=True)
    assert f"/signing/documents/{doc.id}/sign" in page
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302

    env.session.expire_all()
    v1 = env.session.get(DocumentVersion, v1.id)
    assert v1.content_json == original_json and v1.status == "superseded" and v1.locked
    p1 = c.get(f"/signing/documents/{doc.id}/versions/1/pdf").data
    p2 = c.get(f"/signing/documents/{doc.id}/versions/2/pdf").data
    assert p1 == original_pdf
    assert verify_pdf(p1, [env.pki.ca_certificate()]).valid
    assert verify_pdf(p2, [env.pki.ca_certificate()]).valid
    assert "Viêm phổi thùy dưới phải" in env.session.get(Document, doc.id).versions[1].content_json
    a2 = svc.artifact_for(env.session, env.session.get(Document, doc.id).versions[1].id)
    assert a2 is not None and a2.verification_code != a1.verification_code
    # The original still verifies cryptographically, but it is no longer the version in force (issue: an old
    # printout was called valid).
    old = env.app.test_client().get(f"/api/verify/{a1.verification_code}").get_json()
    assert old["signatures_valid"] is True and old["valid"] is False and old["standing"] == "superseded"
    # The locked version cannot be changed behind the workflow's back.
    from emr.core.exceptions import InvalidState

    v1.content_json = "{}"
    with pytest.raises(InvalidState):
        env.session.commit()
    env.session.rollback()


def test_signing_order_discharge_summary(env: Env) -> None:
    doc = env.document(
        "discharge_summary",
        {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "1"},
    )
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi")
    head = env.client("head")
    r = _sign(head, doc.id, TOKEN_PIN)
    assert r.status_code == 403
    assert "Bác sĩ điều trị" in r.get_data(as_text=True)
    other = env.client("other")
    assert _sign(other, doc.id, TOKEN_PIN).status_code == 403
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 302
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 403  # head's turn now
    assert _sign(head, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    assert artifact.complete and artifact.signatures_done == 2
    report = verify_pdf(bytes(artifact.pdf), [env.pki.ca_certificate()])
    assert report.valid and [s.field_name for s in report.signatures] == ["physician", "head"]
    rows = env.session.scalars(
        select(DocumentSignature)
        .where(DocumentSignature.artifact_id == artifact.id)
        .order_by(DocumentSignature.order_index)
    ).all()
    # Incremental: the first signer's file is a prefix of the final one.
    assert bytes(artifact.pdf)[: rows[0].pdf_length].endswith(b"%%EOF\n") or rows[0].pdf_length < len(artifact.pdf)
    assert hashlib.sha256(bytes(artifact.pdf)[: rows[0].pdf_length]).hexdigest() == rows[0].pdf_sha256
    denied = env.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "document.sign", AuditEntry.outcome == "denied")
    ).all()
    assert len(denied) >= 2


def test_revoked_certificate_refused(env: Env) -> None:
    user = issue_user_certificate(env.pki, f"rev-{uuid.uuid4().hex[:6]}", "BS. Bị Thu Hồi")
    svc.register_pkcs12(env.session, SETUP, env.users["physician"].id, user.p12_bytes(), user.password())
    revoke_certificate(env.pki, user.certificate().serial_number)
    doc = env.document("outpatient_record", OUTPATIENT)
    r = _sign(env.client("physician"), doc.id, user.password(), method="pkcs12")
    assert r.status_code == 422
    assert "thu hồi" in r.get_data(as_text=True)
    env.session.expire_all()
    assert env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)) is None


def test_tampered_rows_detected_by_verify(env: Env) -> None:
    doc = env.document("outpatient_record", OUTPATIENT)
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    code, pdf = artifact.verification_code, bytes(artifact.pdf)
    anon = env.app.test_client()
    assert anon.get(f"/api/verify/{code}").get_json()["valid"] is True
    # A changed byte in the stored PDF (bypassing the ORM, as a DB editor would).
    i = pdf.index(b"/Contents") - 40
    changed = pdf[:i] + bytes([pdf[i] ^ 1]) + pdf[i + 1 :]
    env.session.commit()
    with env.session.bind.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            update(SignedArtifact.__table__).where(SignedArtifact.__table__.c.id == artifact.id).values(pdf=changed)
        )
    res = anon.get(f"/api/verify/{code}").get_json()
    assert res["valid"] is False and "signing.verify.stored_hash" in res["problems"]
    assert "KHÔNG HỢP LỆ" in anon.get(f"/verify/{code}").get_data(as_text=True)
    # Hash column "fixed" to match: the signature still fails.
    env.session.commit()
    with env.session.bind.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            update(SignedArtifact.__table__)
            .where(SignedArtifact.__table__.c.id == artifact.id)
            .values(pdf_sha256=hashlib.sha256(changed).hexdigest())
        )
    assert anon.get(f"/api/verify/{code}").get_json()["valid"] is False
    # Original PDF back, but the version's content edited in the DB.
    env.session.commit()
    with env.session.bind.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            update(SignedArtifact.__table__)
            .where(SignedArtifact.__table__.c.id == artifact.id)
            .values(pdf=pdf, pdf_sha256=hashlib.sha256(pdf).hexdigest())
        )
    assert anon.get(f"/api/verify/{code}").get_json()["valid"] is True
    edited = env.session.get(DocumentVersion, artifact.version_id).content_json.replace("Viêm phổi", "Bình thường")
    env.session.commit()
    with env.session.bind.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            update(DocumentVersion.__table__)
            .where(DocumentVersion.__table__.c.id == artifact.version_id)
            .values(content_json=edited)
        )
    res = anon.get(f"/api/verify/{code}").get_json()
    assert res["valid"] is False and "signing.verify.content_changed" in res["problems"]
    assert "signing.verify.cms_invalid" in res["problems"]


def test_signing_routes_authorisation(env: Env) -> None:
    doc = env.document("outpatient_record", OUTPATIENT)
    routes = [
        ("GET", f"/signing/documents/{doc.id}/sign", {"physician", "radiologist"}),
        ("POST", f"/signing/documents/{doc.id}/sign", {"physician", "radiologist"}),
        ("GET", "/signing/keys", {"physician", "radiologist"}),
        ("POST", "/signing/keys", {"physician", "radiologist"}),
        ("GET", f"/signing/users/{env.users['physician'].id}", {"admin"}),
        ("POST", f"/signing/users/{env.users['physician'].id}", {"admin"}),
        ("GET", f"/signing/documents/{doc.id}/versions/1/pdf", {"physician", "radiologist", "nurse"}),
    ]
    admin = create_user(env.session, SETUP, "admin1", PASSWORD, "admin", "Quản trị")
    env.users["admin"] = admin
    env.app.config["WTF_CSRF_ENABLED"] = False
    try:
        for name in ("physician", "radiologist", "nurse", "admin"):
            c = env.client(name)
            for method, url, allowed_roles in routes:
                r = c.open(url, method=method, data={})
                if env.users[name].role in allowed_roles:
                    assert r.status_code not in (401, 403) or "sign" in url and method == "POST", (name, url)
                else:
                    assert r.status_code == 403, (name, method, url, r.status_code)
                assert r.status_code < 500
        for method, url, _ in routes:
            assert env.app.test_client().open(url, method=method).status_code in (302, 400)
    finally:
        env.app.config["WTF_CSRF_ENABLED"] = True


def test_exports_read_the_stored_artifacts_and_retention_report(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import base64
    import datetime as dt
    import json

    from emr.exports import ExportConfig, export_hsba
    from emr.models import Encounter
    from emr.signing import verify_json_signature
    from filmless.commands.signing import cmd_retention_report
    from filmless.settings import load

    doc = env.document("outpatient_record", OUTPATIENT)
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 302
    artifacts = env.app.extensions["emr.signed_artifacts"]
    assert isinstance(artifacts, svc.DbArtifacts)
    config = ExportConfig(facility_code="79001", public_url="https://emr.benhvien.example")
    exp = export_hsba(env.session, env.actor("physician"), env.encounter_id, config, None, "json", artifacts=artifacts)
    signatures = [s for s in json.dumps(exp.record, ensure_ascii=False, default=str).split('"cms_base64": ')[1:]]
    assert signatures and not signatures[0].startswith("null")
    env.session.expire_all()
    version = env.session.get(Document, doc.id).versions[0]
    cms = artifacts.version_cms(env.session.get(Document, doc.id), version)
    assert base64.b64encode(cms).decode() in exp.data.decode()
    assert verify_json_signature(json.loads(version.content_json), cms, [env.pki.ca_certificate()]).valid
    pdf = artifacts.signed_pdf(env.session.get(Document, doc.id), version)
    assert pdf is not None and verify_pdf(pdf, [env.pki.ca_certificate()]).valid

    # Retention: an ordinary record closed in 2010 is kept through 2020-12-31.
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi")
    env.session.execute(
        update(Encounter).where(Encounter.id == env.encounter_id).values(closed_at=dt.datetime(2010, 3, 10, 2, 0))
    )
    env.session.commit()
    rows = svc.past_retention(env.session, dt.date(2026, 11, 23))
    assert [r.document_id for r in rows] == [doc.id] and rows[0].keep_until == dt.date(2020, 12, 31)
    assert svc.past_retention(env.session, dt.date(2020, 12, 31)) == []
    env.session.commit()  # the command opens its own connection
    settings = load(
        {
            "FILMLESS_DATA_DIR": str(env.app.extensions["emr.settings"].data_dir),
            "FILMLESS_DATABASE_URL": env.app.extensions["emr.settings"].database_url,
        }
    )
    assert cmd_retention_report(argparse.Namespace(date="2026-11-23", json=True), settings) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["document_id"] for r in listed] == [doc.id]
    assert env.session.get(Document, doc.id) is not None  # nothing deleted


def _verdict(page: str) -> str:
    m = re.search(r'id="verdict"[^>]*><strong>(.*?)</strong>', page, re.S)
    assert m, page[-2000:]
    return m.group(1).strip()


def test_verify_states_that_a_version_was_replaced_or_the_document_cancelled(env: Env) -> None:
    """A printout of a replaced version, or of a cancelled document, is not "HỢP LỆ" (tester's report)."""
    from emr.i18n import t

    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    first = svc.artifact_for(env.session, env.session.get(Document, doc.id).versions[0].id)
    assert first is not None
    code1 = first.verification_code
    anon = env.app.test_client()
    assert _verdict(anon.get(f"/verify/{code1}").get_data(as_text=True)) == "HỢP LỆ"

    # An amendment that is not signed yet leaves version 1 in force; the page says one is under way.
    documents.amend_document(env.session, env.actor("physician"), doc.id,
                             {**OUTPATIENT, "conclusion": "Viêm phổi thùy dưới phải"}, "Bổ sung kết luận")
    res = anon.get(f"/api/verify/{code1}").get_json()
    assert res["valid"] is True and res["standing"] == "current" and res["pending_amendment"] == 2
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    v2 = env.session.get(Document, doc.id).versions[1]
    second = svc.artifact_for(env.session, v2.id)
    assert second is not None and v2.signed_at is not None
    signed_on = to_local(v2.signed_at).strftime("%d/%m/%Y")

    page = anon.get(f"/verify/{code1}").get_data(as_text=True)
    assert _verdict(page) == t("signing.verify.verdict.superseded").upper() != "HỢP LỆ"
    replaced = f"Phiên bản này đã được thay thế bởi phiên bản 2 ký ngày {signed_on}."
    assert replaced in page and t("signing.verify.signatures_intact") in page  # the signature itself is intact
    res = anon.get(f"/api/verify/{code1}").get_json()
    assert res["valid"] is False and res["signatures_valid"] is True and res["standing"] == "superseded"
    assert res["standing_message"] == replaced and res["superseded_by"]["version"] == 2
    assert anon.get(f"/api/verify/{second.verification_code}").get_json()["valid"] is True

    documents.cancel_document(env.session, env.actor("physician"), doc.id, "Nhầm người bệnh")
    env.session.expire_all()
    cancelled_on = to_local(env.session.get(Document, doc.id).cancelled_at).strftime("%d/%m/%Y")
    for code in (code1, second.verification_code):
        page = anon.get(f"/verify/{code}").get_data(as_text=True)
        assert _verdict(page) == "VĂN BẢN ĐÃ BỊ HỦY"
        assert f"Văn bản đã bị hủy ngày {cancelled_on}" in page
        assert "Nhầm người bệnh" not in page  # the reason is not on the paper: not shown to the public
        res = anon.get(f"/api/verify/{code}").get_json()
        assert res["valid"] is False and res["signatures_valid"] is True and res["standing"] == "cancelled"
        assert res["cancelled_at"] and res["standing_message"].startswith(f"Văn bản đã bị hủy ngày {cancelled_on}")
    # The holder of the file gets the same answer.
    up = anon.post("/api/verify", data=bytes(second.pdf), content_type="application/pdf").get_json()
    assert up["issued_here"] is True and up["valid"] is False and up["standing"] == "cancelled"


def test_discharge_summary_is_signed_only_with_every_signature(env: Env) -> None:
    """Treating physician signed, head of department not yet: "signing" on the chart, in the HSBA export
    and in FHIR — not "Đã ký" / da_ky / final (tester's report)."""
    import json

    from emr.exports import ExportConfig, export_hsba
    from emr.exports.fhir import Ctx, document_reference_resource
    from emr.i18n import t

    doc = env.document(
        "discharge_summary",
        {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "1"},
    )
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi")
    physician = env.client("physician")
    assert _sign(physician, doc.id, TOKEN_PIN).status_code == 302

    def state() -> tuple[Document, dict[str, Any], dict[str, Any], dict[str, Any]]:
        env.session.expire_all()
        d = env.session.get(Document, doc.id)
        config = ExportConfig(facility_code="79001", public_url="https://emr.benhvien.example")
        exp = export_hsba(env.session, env.actor("physician"), env.encounter_id, config, None, "json",
                          artifacts=svc.DbArtifacts())
        record = json.loads(exp.data)["HoSoBenhAn"]
        ctx = Ctx(env.session, "https://emr.benhvien.example", "https://emr.benhvien.example/dicom-web",
                  svc.DbArtifacts())
        return d, record, document_reference_resource(ctx, env.session.get(Document, doc.id)), record.get("GiayRaVien")

    d, record, fhir, paper = state()
    version = d.versions[0]
    assert d.status == "signing" and version.status == "signing" and version.locked
    assert version.signed_at is None and version.signed_by is None
    chart = physician.get(f"/patients/{env.patient_id}").get_data(as_text=True)
    assert t("documents.status.signing") in chart and t("documents.status.signed") not in chart
    view = physician.get(f"/documents/{doc.id}").get_data(as_text=True)
    assert t("documents.status.signing") in view and "Chờ ký: Trưởng khoa" in view
    rows = [s for s in record["ChuKy"] if s["sophieu"] == str(doc.id)]
    assert [r["trangthai"] for r in rows] == ["chua_ky_du"] and rows[0]["trangthai_tailieu"] == "signing"
    assert paper is None  # not exported as the signed paper
    assert fhir["docStatus"] == "preliminary"
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    res = env.app.test_client().get(f"/api/verify/{artifact.verification_code}").get_json()
    assert res["valid"] is False and res["signatures_valid"] is True and res["standing"] == "incomplete"
    assert res["missing"] == ["Trưởng khoa"]
    signed_rows = env.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "document.sign", AuditEntry.object_id == str(doc.id),
                                 AuditEntry.outcome == "success")).all()
    assert signed_rows == []  # one signing step so far, recorded as such

    assert _sign(env.client("head"), doc.id, TOKEN_PIN).status_code == 302
    d, record, fhir, paper = state()
    version = d.versions[0]
    assert d.status == "signed" and version.status == "signed" and version.signed_at is not None
    assert version.signed_by == env.users["head"].id  # completed by the head of department
    rows = [s for s in record["ChuKy"] if s["sophieu"] == str(doc.id)]
    assert [r["trangthai"] for r in rows] == ["da_ky"]
    assert paper is not None and paper["sophieu"] == str(doc.id) and paper["ngayra"]  # the signed paper
    assert fhir["docStatus"] == "final"
    assert t("documents.status.signed") in physician.get(f"/patients/{env.patient_id}").get_data(as_text=True)
    assert env.app.test_client().get(f"/api/verify/{artifact.verification_code}").get_json()["valid"] is True


def test_every_verification_is_audited(env: Env) -> None:
    """Whoever holds the code sees whose document it is: each look is on the audit trail (Circular 46)."""
    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    anon = env.app.test_client()
    assert anon.get(f"/verify/{artifact.verification_code}").status_code == 200
    assert anon.get(f"/api/verify/{artifact.verification_code}").status_code == 200
    assert PATIENT["full_name"] in env.client("nurse").get(f"/verify/{artifact.verification_code}").get_data(
        as_text=True)
    assert anon.post("/api/verify", data=bytes(artifact.pdf), content_type="application/pdf").status_code == 200
    assert anon.get("/verify/no-such-code").status_code == 404
    env.session.expire_all()
    rows = env.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "document.verify").order_by(AuditEntry.id)).all()
    assert [(r.patient_id, r.object_type, r.object_id) for r in rows] == [
        (env.patient_id, "document", str(doc.id))] * 4
    assert [r.user_id for r in rows] == [None, None, env.users["nurse"].id, None]
    assert all(r.client_ip for r in rows)
    import json

    details = [json.loads(r.details) for r in rows]
    assert [x["via"] for x in details] == ["page", "api", "page", "upload"]
    assert [x.get("patient_shown") for x in details] == [False, False, True, None]


def _text(pdf: bytes) -> str:
    """The PDF's text line by line as printed (``-layout``: a label and its value stay on one line), whitespace
    folded to single spaces."""
    import subprocess

    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    return " ".join(out.split())


def test_signed_amendment_states_what_it_amends_when_that_was_signed_and_why(env: Env) -> None:
    """A printed amendment says it amends version 1, signed at that moment (facility time), and why; its fields
    come in the form's order (walkthrough: the paper said none of it, and listed fields alphabetically)."""
    from emr.i18n import t

    doc = env.document("outpatient_record", OUTPATIENT)
    c = env.client("physician")
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    reason = "Bổ sung kết luận sau khi có kết quả CT"
    form = {
        "csrf_token": csrf_token(c, f"/documents/{doc.id}/edit"),
        "base_version": "1",
        "reason": reason,
        **{f"c_{k}": v for k, v in OUTPATIENT.items()},
        "c_conclusion": "Viêm phổi thùy dưới phải",
    }
    assert c.post(f"/documents/{doc.id}/edit", data=form).status_code == 302
    assert _sign(c, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    v1 = env.session.get(Document, doc.id).versions[0]
    signed = to_local(v1.signed_at).strftime("%H:%M, %d/%m/%Y")
    text = _text(c.get(f"/signing/documents/{doc.id}/versions/2/pdf").data)
    assert t("signing.pdf.amendment", version=2, old=1, signed=signed) in text, text
    assert t("signing.pdf.amendment_reason", reason=reason) in text
    enc = env.session.get(Encounter, env.encounter_id)
    assert t("signing.pdf.visit", code=enc.visit_code) in text
    labels = [t(f"documents.field.{name}") for name in OUTPATIENT]  # the form's order
    assert [text.index(label) for label in labels] == sorted(text.index(label) for label in labels)
    original = _text(c.get(f"/signing/documents/{doc.id}/versions/1/pdf").data)
    assert t("signing.pdf.amendment_reason", reason="") not in original  # the first version is no amendment


def test_amendment_of_a_paper_still_awaiting_the_head_dates_it_by_its_first_signature(env: Env) -> None:
    """A discharge paper signed by the treating physician only (the head has not signed) and amended: the
    amendment dates the version it amends by that first signature; the discharge paper carries the stay."""
    from emr.i18n import t

    content = {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "2"}
    doc = env.document("discharge_summary", content)
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi")
    physician = env.client("physician")
    assert _sign(physician, doc.id, TOKEN_PIN).status_code == 302
    documents.amend_document(
        env.session, env.actor("physician"), doc.id, {**content, "result": "1"}, "Kết quả sai", base_version=1
    )
    assert _sign(physician, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    first = env.session.scalars(
        select(DocumentSignature)
        .join(DocumentVersion, DocumentVersion.id == DocumentSignature.version_id)
        .where(DocumentVersion.document_id == doc.id, DocumentVersion.number == 1)
    ).one()
    signed = to_local(first.signed_at).strftime("%H:%M, %d/%m/%Y")
    text = _text(physician.get(f"/signing/documents/{doc.id}/versions/2/pdf").data)
    assert t("signing.pdf.amendment", version=2, old=1, signed=signed) in text, text
    enc = env.session.get(Encounter, env.encounter_id)
    assert f"{t('signing.pdf.visit_code')}: {enc.visit_code}" in text
    admitted = to_local(enc.admitted_at).strftime("%H:%M, %d/%m/%Y")
    assert f"{t('signing.pdf.admitted_at')}: {admitted}" in text
    discharged = to_local(enc.discharged_at).strftime("%H:%M, %d/%m/%Y")
    assert f"{t('signing.pdf.discharged_at')}: {discharged}" in text  # the paper states when the patient left
    assert f"{t('documents.field.result')} {t('documents.result.1')}" in text


def test_discharge_paper_is_signed_only_after_the_visit_is_closed(env: Env) -> None:
    """A discharge paper states the discharge time: while its visit is open the sign page says so and offers
    to close the visit, a signature is refused with a Vietnamese message, audited, and nothing is signed;
    once the visit is closed the paper is signed and prints the discharge time (never "chưa ra viện")."""
    import json

    from emr.core.exceptions import InvalidState
    from emr.i18n import t

    doc = env.document(
        "discharge_summary",
        {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "1"},
    )
    physician = env.client("physician")
    enc = env.session.get(Encounter, env.encounter_id)
    page = physician.get(f"/signing/documents/{doc.id}/sign").get_data(as_text=True)
    assert t("signing.sign.not_discharged", visit=enc.visit_code) in page
    assert f"/patients/{env.patient_id}/encounters/{env.encounter_id}/close" in page  # close the visit first
    assert 'name="secret"' not in page  # no signing form to fill in vain
    path = f"/signing/documents/{doc.id}/sign"
    r = physician.post(path, data={"csrf_token": csrf_token(physician, path), "method": "pkcs11", "secret": TOKEN_PIN,
                                   "content_sha256": doc.versions[0].content_sha256})
    assert r.status_code == 422 and t("signing.error.not_discharged") in r.get_data(as_text=True)
    env.session.expire_all()
    assert env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)) is None
    d = env.session.get(Document, doc.id)
    assert d.status == "draft" and not d.versions[0].locked
    refused = env.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "document.sign", AuditEntry.object_id == str(doc.id), AuditEntry.outcome == "failure"
    )).all()
    assert [json.loads(a.details)["error"] for a in refused] == ["visit_not_discharged"]
    with pytest.raises(InvalidState) as refusal:  # the service refuses too, whatever calls it
        svc.sign_document(env.session, env.actor("physician"), doc.id, svc.SigningConfig(trust_anchors_dir=Path(".")),
                          method="pkcs11", secret=TOKEN_PIN, expected_sha256=d.versions[0].content_sha256)
    assert refusal.value.key == "signing.error.not_discharged"

    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi")
    assert 'name="secret"' in physician.get(path).get_data(as_text=True)
    assert _sign(physician, doc.id, TOKEN_PIN).status_code == 302
    assert _sign(env.client("head"), doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    enc = env.session.get(Encounter, env.encounter_id)
    text = _text(physician.get(f"/signing/documents/{doc.id}/versions/1/pdf").data)
    discharged = to_local(enc.discharged_at).strftime("%H:%M, %d/%m/%Y")
    assert f"{t('signing.pdf.discharged_at')}: {discharged}" in text
    assert t("signing.pdf.not_discharged") not in text
