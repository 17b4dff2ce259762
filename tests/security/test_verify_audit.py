"""The public check of a signed paper (/verify/<code>, the QR code) against a real `filmless emr serve`.

Whoever holds the code learns whose document it is (the code is printed on the paper, by design), so
every verification is audited like any view of patient data (Circular 46): a user outside the
patient's care, who may not open the record, still gets the check, on the audit trail, and sees no
more than the paper's face shows; an anonymous holder is recorded by address.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from emr.models import AuditEntry, Patient, User
from emr.models.signing import SignedArtifact
from tests.security.auth_support import SETUP, RunningEmr, client, csrf, make_record, make_users, running_emr
from tests.signing_fixtures import trust_dev_pki

# What /api/verify/<code> may say: the signatures, the document's standing, and the paper's own header.
_API_KEYS = {
    "valid", "code", "document_id", "version_number", "form_type", "stored_sha256", "actual_sha256", "content_ok",
    "cms_ok", "complete", "signatures_valid", "standing", "standing_message", "cancelled_at", "superseded_by",
    "pending_amendment", "missing", "problems", "signatures", "patient",
}


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory, pki: Any, pki_server: Any) -> Any:

    base = tmp_path_factory.mktemp("emr-verify")
    data = base / "var"
    trust_dev_pki(pki, data)
    with running_emr(base, {"FILMLESS_TSA_URL": pki_server.tsa_url}, dev_pki=True) as running:
        make_users(running, ("bacsi", "physician"), ("bschan", "radiologist"), ("bsngoai", "physician"))
        from emr.patients import encounters
        from emr.signing import service as signatures

        factory = running.session_factory()
        with factory() as session:
            users = {u.username: u for u in session.scalars(select(User))}
            # A physician of another department: not caring for the patient of a K19 visit.
            users["bsngoai"].department_id = encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh").id
            session.commit()
            dev = pki.users["bs.an"]
            signatures.register_pkcs12(session, SETUP, users["bschan"].id, dev.p12_bytes(), dev.password())
        factory.kw["bind"].dispose()
        running.env["p12_password"] = dev.password()
        yield running


def _signed_report(emr: RunningEmr) -> tuple[Any, str]:
    rec = make_record(emr, "bacsi", "bschan", signed=False)
    reader, _ = emr.login("bschan")
    page = reader.get(emr.url(f"/signing/documents/{rec.report_id}/sign"), timeout=60).text
    shown = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', page)
    assert shown
    form = {"csrf_token": csrf(page), "method": "pkcs12", "secret": emr.env["p12_password"],
            "content_sha256": shown.group(1)}
    r = reader.post(emr.url(f"/signing/documents/{rec.report_id}/sign"), data=form, allow_redirects=False, timeout=120)
    assert r.status_code == 302, r.text[-1500:]
    factory = emr.session_factory()
    with factory() as session:
        code = session.scalar(select(SignedArtifact.verification_code).where(
            SignedArtifact.document_id == rec.report_id))
    factory.kw["bind"].dispose()
    assert code
    return rec, code


def _verifications(emr: RunningEmr, document_id: int) -> list[AuditEntry]:
    factory = emr.session_factory()
    with factory() as session:
        rows = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "document.verify", AuditEntry.object_id == str(document_id)
        ).order_by(AuditEntry.id)).all()
        session.expunge_all()
    factory.kw["bind"].dispose()
    return list(rows)


def test_verification_outside_care_is_audited_and_shows_only_the_papers_face(emr: RunningEmr) -> None:
    rec, code = _signed_report(emr)
    factory = emr.session_factory()
    with factory() as session:
        patient = session.get(Patient, rec.patient_id)
        assert patient is not None
        face = (patient.full_name, patient.code, patient.birth_date.strftime("%d/%m/%Y"))
        private = [patient.cccd, patient.phone, patient.address, "Đau đầu"]  # not on the paper; the visit reason
    factory.kw["bind"].dispose()
    content = ["Không thấy tổn thương khu trú.", "Chưa thấy bất thường."]  # the report's text

    outsider, r = emr.login("bsngoai", source="127.0.0.3")
    assert r.status_code == 302
    assert outsider.get(emr.url(f"/documents/{rec.report_id}"), timeout=30).status_code == 403  # not in their care
    page = outsider.get(emr.url(f"/verify/{code}"), timeout=60)
    assert page.status_code == 200
    assert all(x in page.text for x in face)  # printed on the paper: shown to staff holding it
    assert not any(x and x in page.text for x in private + content)
    api = outsider.get(emr.url(f"/api/verify/{code}"), timeout=60).json()
    assert set(api) <= _API_KEYS and set(api["patient"]) == {"name", "code", "birth_date"}
    assert not any(x and x in json.dumps(api, ensure_ascii=False) for x in private + content)

    anonymous = client("127.0.0.2")
    page = anonymous.get(emr.url(f"/verify/{code}"), timeout=60)
    assert page.status_code == 200 and patient.full_name not in page.text and patient.code not in page.text
    assert "patient" not in anonymous.get(emr.url(f"/api/verify/{code}"), timeout=60).json()

    rows = _verifications(emr, rec.report_id)
    assert [(r.username, r.client_ip, r.patient_id) for r in rows] == [
        ("bsngoai", "127.0.0.3", rec.patient_id),
        ("bsngoai", "127.0.0.3", rec.patient_id),
        (None, "127.0.0.2", rec.patient_id),
        (None, "127.0.0.2", rec.patient_id),
    ]
    assert [json.loads(r.details)["patient_shown"] for r in rows] == [True, True, False, False]
    assert all(r.outcome == "success" and r.object_type == "document" for r in rows)
