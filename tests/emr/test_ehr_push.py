"""Push to the electronic health record (issue 15 §2) against a real HTTP stand-in that checks the Bundle.

One EMR (real SQLite database, real signatures with the development PKI and
TSA) and one stand-in per module; the outbox is driven with ``run_due`` so
every step is observable. The restart across real processes is in
tests/integration/test_ehr_restart.py.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import Actor, EmrSettings
from emr.access.users import create_user
from emr.core import clock
from emr.documents import service as documents
from emr.ehr import KIND, on_document_signed
from emr.i18n import t
from emr.imaging import orders as ords
from emr.models import AuditEntry, Document, DocumentVersion, OutboxMessage, Study, User
from emr.models.signing import SignedArtifact
from emr.outbox import HandlerContext, messages_for_patient, run_due
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing import DevPki, DevPkiServer
from emr.signing import service as signing
from tests.emr.app_support import sqlite_app
from tests.emr.conftest import csrf_token
from tests.signing_fixtures import trust_dev_pki
from tests.standins.ehr import CCCD_SYSTEM, ICD10_SYSTEM, EhrStandIn

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
TOKEN = "ehr-token-for-tests-3f9a"
_serial = itertools.count(1)


@dataclass
class Env:
    app: Flask
    settings: EmrSettings
    factory: Any
    users: dict[str, User]
    standin: EhrStandIn
    pki: DevPki

    def actor(self, role: str) -> Actor:
        u = self.users[role]
        return Actor(u.id, u.username, u.role, "10.0.0.7")

    def context(self) -> HandlerContext:
        return HandlerContext(self.factory, self.settings)

    def client(self, role: str) -> FlaskClient:
        c = self.app.test_client()
        c.get("/login")
        r = c.post("/login", data={"username": self.users[role].username, "password": PASSWORD,
                                   "csrf_token": csrf_token(c, "/login")})
        assert r.status_code == 302
        return c



@pytest.fixture(scope="module")
def standin() -> Iterator[EhrStandIn]:
    server = EhrStandIn(token=TOKEN)
    yield server
    server.down()


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, pki: DevPki, pki_server: DevPkiServer,
    standin: EhrStandIn,
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ehr")
    data = tmp / "data"
    trust_dev_pki(pki, data)
    token_file = tmp / "ehr-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings, engine, app, factory = sqlite_app(
        tmp,
        sqlite_template,
        data_dir=data,
        public_url="https://emr.benhvien.example",
        hospital_name="Bệnh viện Đa khoa filmless",
        tsa_url=pki_server.tsa_url,
        ehr_url=standin.url,
        ehr_token_file=token_file,
        outbox_max_attempts=3,
        outbox_retry_seconds=5,
        outbox_retry_max_seconds=20,
    )
    with factory() as session:
        dep = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
        session.commit()
        users = {
            role: create_user(session, SETUP, f"{role}1", PASSWORD, role, f"BS. {role.title()}",
                              department_id=dep.id, practising_cert_no=f"00{i}/HCM-CCHN")
            for i, role in enumerate(("physician", "radiologist", "admin", "nurse"))
        }
        catalogue = tmp / "icd10.csv"
        catalogue.write_text("code,title\nJ18.9,Viêm phổi không đặc hiệu\nI10,Tăng huyết áp vô căn\n", "utf-8")
        encounters.load_icd10(session, SETUP, catalogue)
        reader = pki.users["bs.an"]
        signing.register_pkcs12(session, SETUP, users["radiologist"].id, reader.p12_bytes(), reader.password())
        session.commit()
    yield Env(app, settings, factory, users, standin, pki)
    engine.dispose()


@dataclass
class Visit:
    patient_id: int
    encounter_id: int
    order_id: int
    study_uid: str
    cccd: str | None


def make_visit(env: Env, *, cccd: bool = True) -> Visit:
    n = next(_serial)
    with env.factory() as s:
        p = patients.create_patient(s, SETUP, {
            "full_name": f"Nguyễn Thị Hồng Nhung {n}", "birth_date": "1990-05-17", "sex": "F",
            "cccd": f"0791900{n:05d}" if cccd else None, "address": "12 Lê Lợi, TP. Hồ Chí Minh",
            "province_code": "79",
        })
        doctor = env.actor("physician")
        enc = encounters.create_encounter(s, doctor, {
            "patient_id": p.id, "kind": "outpatient", "department_code": "K19", "reason": "Ho, sốt 3 ngày",
            "admission_diagnosis": "Theo dõi viêm phổi", "diagnoses": ["J18.9", "I10"],
            "attending_username": "physician1",
        })
        order = ords.create_order(s, doctor, {
            "patient_id": p.id, "encounter_id": enc.id, "modality": "CT",
            "procedure_name": "CT ngực không tiêm thuốc cản quang", "procedure_code": "18.0043.0002",
            "body_part": "CHEST", "urgency": "urgent", "clinical_info": "Ho, sốt", "station_ae_title": "CT01",
        })
        s.add(Study(orthanc_id=f"orthanc-ehr-{n}", study_instance_uid=order.study_instance_uid,
                    accession_number=order.accession_number, dicom_patient_id=p.code,
                    dicom_patient_name="NGUYEN^THI HONG NHUNG", study_date="20261207", modalities="CT",
                    description="CT ngực", order_id=order.id, patient_id=p.id, state="linked",
                    link_method="accession"))
        order.status = "images_available"
        s.commit()
        return Visit(p.id, enc.id, order.id, order.study_instance_uid, p.cccd)


def sign_report(env: Env, visit: Visit) -> tuple[int, bytes]:
    """A radiology report signed through the real workflow (PKCS#12 + TSA); returns (document id, signed PDF)."""
    with env.factory() as s:
        doc = documents.create_document(s, env.actor("radiologist"), {
            "encounter_id": visit.encounter_id, "form_type": "radiology_report", "order_id": visit.order_id,
            "content": {"technique": "Xoắn ốc 5 mm", "findings": "Đám mờ thùy dưới phổi phải.",
                        "conclusion": "Viêm phổi thùy dưới phải.", "recommendation": "Đối chiếu lâm sàng."},
        })
        version = s.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
        artifact = signing.sign_document(
            s, env.actor("radiologist"), doc.id, signing.signing_config(env.settings), method="pkcs12",
            secret=env.pki.users["bs.an"].password(), expected_sha256=version.content_sha256,
        )
        return doc.id, bytes(artifact.pdf)


def ehr_messages(env: Env, patient_id: int) -> list[OutboxMessage]:
    with env.factory() as s:
        return [m for m in messages_for_patient(s, patient_id) if m.kind == KIND]


def deliver(env: Env, **kwargs: Any) -> list[str]:
    return [d.outcome for d in run_due(env.context(), kinds=[KIND], **kwargs)]


def _codes(received: Any, kind: str) -> set[str]:
    return {c["code"] for r in received.resources(kind) for c in r["code"]["coding"] if c["system"] == ICD10_SYSTEM}


def test_a_signed_report_arrives_once_with_its_signed_pdf(env: Env) -> None:
    visit = make_visit(env)
    doc_id, pdf = sign_report(env, visit)
    [message] = ehr_messages(env, visit.patient_id)
    assert message.status == "waiting" and message.target == env.standin.url
    assert len(message.key) == 64  # the content hash

    assert deliver(env) == ["sent"]
    got = env.standin.accepted[message.key]
    assert env.standin.requests_with(message.key) == [201]
    assert got.authorization == f"Bearer {TOKEN}"
    composition = got.bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition" and composition["type"]["coding"][0]["code"] == "18748-4"
    # what a person reads is the catalogue's Vietnamese (emr/i18n/vi.json), not text written in the code
    assert composition["title"] == t("ehr.title.report") == "Phiếu kết quả chẩn đoán hình ảnh"
    assert [x["title"] for x in composition["section"]] == [t("ehr.section.imaging"), t("ehr.section.diagnoses")]
    [patient] = got.resources("Patient")
    assert {"system": CCCD_SYSTEM, "value": visit.cccd} in [
        {k: i[k] for k in ("system", "value")} for i in patient["identifier"]
    ]
    assert _codes(got, "Condition") == {"J18.9", "I10"}
    [study] = got.resources("ImagingStudy")
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{visit.study_uid}"} in study["identifier"]
    [report] = got.resources("DiagnosticReport")
    assert report["status"] == "final" and report["conclusion"] == "Viêm phổi thùy dưới phải."
    assert got.pdfs() == [pdf] and pdf.startswith(b"%PDF")
    with env.factory() as s:
        stored = s.scalars(select(SignedArtifact).where(SignedArtifact.document_id == doc_id)).one()
        assert bytes(stored.pdf) == pdf  # the signed PDF as stored, signature intact
        sent = s.get(OutboxMessage, message.id)
        assert sent is not None and sent.status == "sent" and sent.result == got.location

    # nothing is pushed twice: the same event again makes the same key, and a second run sends nothing
    with env.factory() as s:
        doc = s.get(Document, doc_id)
        on_document_signed(s, env.settings, document=doc)
        s.commit()
    assert [m.id for m in ehr_messages(env, visit.patient_id)] == [message.id]
    assert deliver(env) == []
    assert env.standin.requests_with(message.key) == [201]


def test_closing_the_visit_from_the_chart_pushes_its_summary(env: Env) -> None:
    visit = make_visit(env)
    _doc_id, pdf = sign_report(env, visit)
    assert deliver(env) == ["sent"]  # the report's own push
    doctor = env.client("physician")
    chart = doctor.get(f"/patients/{visit.patient_id}").get_data(as_text=True)
    close_path = f"/patients/{visit.patient_id}/encounters/{visit.encounter_id}/close"
    assert close_path in chart  # the "Kết thúc lượt khám" button
    empty = doctor.post(close_path, data={"csrf_token": csrf_token(doctor, close_path), "discharge_diagnosis": " "})
    assert empty.status_code == 422 and "chẩn đoán ra viện" in empty.get_data(as_text=True)
    r = doctor.post(close_path, data={"csrf_token": csrf_token(doctor, close_path),
                                      "discharge_diagnosis": "Viêm phổi thùy dưới phải"})
    assert r.status_code == 302
    again = doctor.post(close_path, data={"csrf_token": csrf_token(doctor, close_path), "discharge_diagnosis": "x"})
    assert again.status_code == 409  # closed once; a second close changes nothing and sends nothing

    messages = ehr_messages(env, visit.patient_id)
    assert len(messages) == 2 and messages[0].status == "waiting" and "Tóm tắt lượt khám" in (messages[0].subject or "")
    assert deliver(env) == ["sent"]
    got = env.standin.accepted[messages[0].key]
    assert env.standin.requests_with(messages[0].key) == [201]
    composition = got.bundle["entry"][0]["resource"]
    assert composition["type"]["coding"][0]["code"] == "34133-9"
    [encounter] = got.resources("Encounter")
    assert encounter["status"] == "finished" and "end" in encounter["period"]
    assert _codes(got, "Condition") == {"J18.9", "I10"}
    assert got.pdfs() == [pdf]
    assert len(got.resources("ImagingStudy")) == 1 and len(got.resources("ServiceRequest")) == 1
    chart = doctor.get(f"/patients/{visit.patient_id}").get_data(as_text=True)
    assert 'id="chart-outbox"' in chart and chart.count("ob-sent") == 2  # both pushes shown as sent on the chart
    with env.factory() as s:
        closes = s.scalars(select(AuditEntry).where(AuditEntry.action == "encounter.close",
                                                    AuditEntry.object_id == str(visit.encounter_id))).all()
        assert len(closes) == 1 and closes[0].username == "physician1"


def test_endpoint_down_then_back_delivers_exactly_once(env: Env) -> None:
    visit = make_visit(env)
    with env.factory() as s:
        encounters.close_encounter(s, env.actor("physician"), visit.encounter_id, "Viêm phổi")
    [message] = ehr_messages(env, visit.patient_id)
    env.settings.ehr_token_file.chmod(0o644)  # type: ignore[union-attr]
    try:  # a token others can read is not used: the push waits until the file is fixed
        assert deliver(env) == ["failed"]
        assert "chmod 600" in (ehr_messages(env, visit.patient_id)[0].last_error or "")
    finally:
        env.settings.ehr_token_file.chmod(0o600)  # type: ignore[union-attr]
    env.standin.down()
    try:
        assert deliver(env, now=lambda: clock.utcnow() + timedelta(seconds=6)) == ["failed"]
        [failed] = ehr_messages(env, visit.patient_id)
        assert failed.status == "failed" and "unreachable" in (failed.last_error or "")
    finally:
        env.standin.up()
    assert deliver(env, now=lambda: clock.utcnow() + timedelta(seconds=6)) == []  # back-off: 10 s after 2 failures
    later = clock.utcnow() + timedelta(seconds=11)
    assert deliver(env, now=lambda: later) == ["sent"]
    assert env.standin.requests_with(message.key) == [201]
    assert message.key in env.standin.accepted


def test_failures_dead_letter_then_resend_from_the_operator_page(env: Env) -> None:
    visit = make_visit(env)
    with env.factory() as s:
        encounters.close_encounter(s, env.actor("physician"), visit.encounter_id, "Viêm phổi")
    [message] = ehr_messages(env, visit.patient_id)
    env.standin.fail_always(503)
    try:
        moment = clock.utcnow()
        for step in (0, 6, 20):  # three attempts (FILMLESS_OUTBOX_MAX_ATTEMPTS=3), each after its back-off
            at = moment + timedelta(seconds=step + 1)
            assert deliver(env, now=lambda at=at: at) in (["failed"], ["dead"])
    finally:
        env.standin.fail_always(None)
    [dead] = ehr_messages(env, visit.patient_id)
    assert dead.status == "dead" and dead.attempts == 3 and "HTTP 503" in (dead.last_error or "")
    assert deliver(env, now=lambda: moment + timedelta(days=1)) == []  # dead stays dead

    admin = env.client("admin")
    listing = admin.get("/admin/outbox/?status=dead").get_data(as_text=True)
    assert f'/admin/outbox/{message.id}"' in listing
    page = admin.get(f"/admin/outbox/{message.id}").get_data(as_text=True)
    assert "HTTP 503" in page and "Bundle.type" in page and "entry[Condition]" in page
    assert "Nguyễn Thị Hồng Nhung" not in page  # no clinical content for the operator
    r = admin.post(f"/admin/outbox/{message.id}/resend",
                   data={"csrf_token": csrf_token(admin, f"/admin/outbox/{message.id}")})
    assert r.status_code == 302
    assert deliver(env) == ["sent"]
    assert env.standin.requests_with(message.key) == [503, 503, 503, 201]
    with env.factory() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.username == "admin1")).all()
    assert {"outbox.view", "outbox.view_message", "outbox.resend"} <= set(actions)


def test_a_bundle_the_record_rejects_is_dead_at_once_with_the_reason(env: Env) -> None:
    visit = make_visit(env, cccd=False)  # the health record identifies people by CCCD
    with env.factory() as s:
        encounters.close_encounter(s, env.actor("physician"), visit.encounter_id, "Viêm phổi")
    [message] = ehr_messages(env, visit.patient_id)
    assert deliver(env) == ["dead"]
    [dead] = ehr_messages(env, visit.patient_id)
    assert dead.attempts == 1 and "HTTP 422" in (dead.last_error or "") and CCCD_SYSTEM in (dead.last_error or "")
    assert env.standin.requests_with(message.key) == [422]


def test_nothing_is_enqueued_when_no_endpoint_is_configured(env: Env, tmp_path: Path) -> None:
    from emr import ehr

    visit = make_visit(env)
    off = EmrSettings(database_url=env.settings.database_url, data_dir=tmp_path)
    ehr.install(off)
    try:
        with env.factory() as s:
            encounters.close_encounter(s, env.actor("physician"), visit.encounter_id, "Viêm phổi")
        assert ehr_messages(env, visit.patient_id) == []
    finally:
        ehr.install(env.settings)


def test_bundle_content_is_what_the_standin_checks(env: Env) -> None:
    """The stand-in itself refuses what it must (a stand-in that accepts anything would prove nothing)."""
    from tests.standins.ehr import problems

    visit = make_visit(env)
    with env.factory() as s:
        from emr.ehr import visit_bundle

        bundle = visit_bundle(s, env.settings, visit.encounter_id).bundle
    assert problems(bundle) == []
    broken = {**bundle, "type": "collection"}
    assert any("document" in p for p in problems(broken))
    moved = {**bundle, "entry": bundle["entry"][1:] + bundle["entry"][:1]}
    assert any("Composition" in p for p in problems(moved))
    dangling = {**bundle, "entry": [e for e in bundle["entry"] if e["resource"]["resourceType"] != "ServiceRequest"]}
    assert any("ServiceRequest" in p and "not in the Bundle" in p for p in problems(dangling))
    no_icd = {**bundle, "entry": [
        {**e, "resource": {**e["resource"], "code": {"text": "?"}}} if e["resource"]["resourceType"] == "Condition"
        else e for e in bundle["entry"]]}
    assert any("ICD-10" in p for p in problems(no_icd))
    report = {"resourceType": "DiagnosticReport", "id": "x", "status": "final", "code": {"text": "x"},
              "presentedForm": [{"contentType": "application/pdf", "data": base64.b64encode(b"not a pdf").decode()}]}
    unsigned = {**bundle, "entry": [*bundle["entry"], {"fullUrl": "https://x/fhir/DiagnosticReport/x",
                                                       "resource": report}]}
    assert any("signed PDF" in p for p in problems(unsigned))




def test_settings_take_the_endpoint_and_refuse_what_cannot_work(tmp_path: Path) -> None:
    from filmless.settings import SettingsError, load

    emr = load({"FILMLESS_EHR_URL": "https://hssk.example.vn/fhir/Bundle/", "FILMLESS_EHR_TIMEOUT": "12",
                "FILMLESS_OUTBOX_MAX_ATTEMPTS": "4"}).emr
    assert emr.ehr_url == "https://hssk.example.vn/fhir/Bundle" and emr.ehr_timeout == 12
    assert emr.outbox_max_attempts == 4 and load({}).emr.ehr_url is None  # off unless configured
    with pytest.raises(SettingsError, match="FILMLESS_EHR_URL"):
        load({"FILMLESS_EHR_URL": "ftp://hssk.example.vn"})
    (tmp_path / "ehr.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(SettingsError, match="go together"):
        load({"FILMLESS_EHR_CLIENT_CERT": str(tmp_path / "ehr.pem")})
    with pytest.raises(SettingsError, match="no such file"):
        load({"FILMLESS_EHR_TOKEN_FILE": str(tmp_path / "missing-token")})
    with pytest.raises(SettingsError, match="shorter than FILMLESS_OUTBOX_LEASE_SECONDS"):
        load({"FILMLESS_EHR_TIMEOUT": "60", "FILMLESS_OUTBOX_LEASE_SECONDS": "60"})
    with pytest.raises(SettingsError, match="FILMLESS_OUTBOX_MAX_ATTEMPTS"):
        load({"FILMLESS_OUTBOX_MAX_ATTEMPTS": "0"})
