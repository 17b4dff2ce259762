"""Nobody signs words they were not shown (issue 10, item 6), against a real `filmless emr serve`.

A physician must not rewrite a radiologist's draft; a signature is bound to
the content hash the signing form displayed, so an edit in between is
refused (409) and nothing is signed; a signed report is cancelled, restored
or amended only by its signer or the head of the department — every refusal
audited.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emr.i18n import t
from emr.models import AuditEntry, Document, DocumentVersion, User
from emr.models.signing import SignedArtifact
from tests.security.auth_support import SETUP, Record, RunningEmr, csrf, make_record, make_users, running_emr
from tests.signing_fixtures import trust_dev_pki

REPORT = {"findings": "Không thấy tổn thương khu trú.", "conclusion": "Chưa thấy bất thường."}


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory, pki: Any, pki_server: Any) -> Any:

    base = tmp_path_factory.mktemp("emr-signing")
    data = base / "var"
    trust_dev_pki(pki, data)
    with running_emr(base, {"FILMLESS_TSA_URL": pki_server.tsa_url}, dev_pki=True) as running:
        make_users(running, ("bacsi", "physician"), ("bacsi2", "physician"), ("truongkhoa", "physician"),
                   ("bschan", "radiologist"), ("bschan2", "radiologist"))
        from emr.access.users import create_token
        from emr.signing import service as signatures

        factory = running.session_factory()
        tokens = {}
        with factory() as session:
            users = {u.username: u for u in session.scalars(select(User))}
            users["truongkhoa"].is_department_head = True
            session.commit()
            dev = pki.users["bs.an"]
            signatures.register_pkcs12(session, SETUP, users["bschan"].id, dev.p12_bytes(), dev.password())
            for name, user in users.items():
                tokens[name] = create_token(session, SETUP, user.id, "tests")
        factory.kw["bind"].dispose()
        running.env["tokens"] = json.dumps(tokens)
        running.env["p12_password"] = dev.password()
        yield running


def _api(emr: RunningEmr, who: str, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
    token = json.loads(emr.env["tokens"])[who]
    return requests.request(method, emr.url("/api" + path), json=body, timeout=120,
                            headers={"Authorization": f"Bearer {token}"})


def _audit(emr: RunningEmr, action: str, outcome: str, username: str) -> list[dict[str, Any]]:
    factory = emr.session_factory()
    with factory() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == action, AuditEntry.outcome == outcome,
                                                        AuditEntry.username == username)).all()
        out = [json.loads(r.details or "{}") for r in rows]
    factory.kw["bind"].dispose()
    return out


def _sign_form(s: requests.Session, emr: RunningEmr, doc_id: int) -> tuple[str, str, str]:
    page = s.get(emr.url(f"/signing/documents/{doc_id}/sign"), timeout=60).text
    shown = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', page)
    assert shown, "the signing form carries the hash of what it shows"
    return page, csrf(page), shown.group(1)


def test_only_the_author_edits_a_draft(emr: RunningEmr) -> None:
    rec: Record = make_record(emr, "bacsi", "bschan", signed=False)
    forged = {"content": {"findings": "Nốt mờ 2 cm thùy trên phổi phải.", "conclusion": "U phổi."}}
    r = _api(emr, "bacsi", "PUT", f"/documents/{rec.report_id}/draft", forged)
    assert r.status_code == 403, r.text
    r = _api(emr, "bschan2", "PUT", f"/documents/{rec.report_id}/draft", forged)
    assert r.status_code == 403, r.text
    doc = _api(emr, "bschan", "GET", f"/documents/{rec.report_id}").json()
    assert doc["versions"][0]["content"]["conclusion"] == REPORT["conclusion"]  # untouched
    assert _audit(emr, "document.edit", "denied", "bacsi")

    physician, _ = emr.login("bacsi")
    r = physician.get(emr.url(f"/documents/{rec.report_id}/edit"), timeout=30)
    assert r.status_code == 403  # the web form refuses too
    view = physician.get(emr.url(f"/documents/{rec.report_id}"), timeout=30).text
    assert f"/documents/{rec.report_id}/edit" not in view and f"/documents/{rec.report_id}/cancel" not in view
    token = csrf(view)
    r = physician.post(emr.url(f"/documents/{rec.report_id}/edit"), timeout=30, allow_redirects=False,
                       data={"csrf_token": token, "c_findings": "x", "c_conclusion": "y"})
    assert r.status_code == 403
    r = _api(emr, "bschan", "PUT", f"/documents/{rec.report_id}/draft",
             {"content": {**REPORT, "recommendation": "Theo dõi."}})
    assert r.status_code == 200  # the author still can


def test_signature_is_bound_to_the_text_shown(emr: RunningEmr) -> None:
    rec = make_record(emr, "bacsi", "bschan", signed=False)
    reader, _ = emr.login("bschan")
    page, token, shown = _sign_form(reader, emr, rec.report_id)
    assert REPORT["conclusion"] in page  # the form shows the text being signed
    # Meanwhile the draft changes (another tab of the author, a script with the author's token...).
    changed = {"findings": REPORT["findings"], "conclusion": "Viêm xoang hàm hai bên."}
    assert _api(emr, "bschan", "PUT", f"/documents/{rec.report_id}/draft", {"content": changed}).status_code == 200
    form = {"csrf_token": token, "method": "pkcs12", "secret": emr.env["p12_password"], "content_sha256": shown}
    r = reader.post(emr.url(f"/signing/documents/{rec.report_id}/sign"), data=form, allow_redirects=False,
                    timeout=120)
    assert r.status_code == 409
    assert t("signing.error.content_changed") in r.text
    assert "Viêm xoang hàm hai bên." in r.text  # now the signer sees the current text
    assert _api(emr, "bschan", "GET", f"/documents/{rec.report_id}").json()["status"] == "draft"
    failures = _audit(emr, "document.sign", "failure", "bschan")
    assert any(d.get("error") == "content_changed" and d.get("shown_sha256") == shown for d in failures)

    page, token, shown_now = _sign_form(reader, emr, rec.report_id)
    assert shown_now != shown
    form = {"csrf_token": token, "method": "pkcs12", "secret": emr.env["p12_password"], "content_sha256": shown_now}
    r = reader.post(emr.url(f"/signing/documents/{rec.report_id}/sign"), data=form, allow_redirects=False,
                    timeout=120)
    assert r.status_code == 302, r.text[-1500:]
    factory = emr.session_factory()
    with factory() as session:
        doc = session.get(Document, rec.report_id)
        assert doc is not None and doc.status == "signed"
        version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
        artifact = session.scalar(select(SignedArtifact).where(SignedArtifact.version_id == version.id))
        assert artifact is not None and artifact.content_sha256 == version.content_sha256 == shown_now
        assert json.loads(version.content_json)["conclusion"] == "Viêm xoang hàm hai bên."
    factory.kw["bind"].dispose()


def test_signed_report_changes_only_by_signer_or_head(emr: RunningEmr) -> None:
    rec = make_record(emr, "bacsi", "bschan", signed=True)
    amendment = {"content": {**REPORT, "conclusion": "Sửa: nốt vôi hóa nhỏ."}, "reason": "bổ sung"}
    for outsider in ("bacsi", "bacsi2", "bschan2"):  # the ordering physician, a colleague, another reader
        assert _api(emr, outsider, "POST", f"/documents/{rec.report_id}/cancel", {"reason": "x"}).status_code == 403
        assert _api(emr, outsider, "POST", f"/documents/{rec.report_id}/amendments", amendment).status_code == 403
    assert _audit(emr, "document.cancel", "denied", "bacsi2")
    assert _audit(emr, "document.amend", "denied", "bschan2")

    r = _api(emr, "truongkhoa", "POST", f"/documents/{rec.report_id}/cancel", {"reason": "Nhầm bệnh nhân"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert _api(emr, "bacsi2", "POST", f"/documents/{rec.report_id}/restore", {"reason": "x"}).status_code == 403
    r = _api(emr, "bschan", "POST", f"/documents/{rec.report_id}/restore", {"reason": "Đúng bệnh nhân"})
    assert r.status_code == 200 and r.json()["status"] == "signed"
    r = _api(emr, "bschan", "POST", f"/documents/{rec.report_id}/amendments", amendment)
    assert r.status_code == 201 and r.json()["current_version"] == 2
    assert any(d.get("as") == "head" for d in _audit(emr, "document.cancel", "success", "truongkhoa"))
    assert any(d.get("as") == "signer" for d in _audit(emr, "document.restore", "success", "bschan"))

    # The amendment is a draft of its own author: the head cannot rewrite it either.
    r = _api(emr, "truongkhoa", "PUT", f"/documents/{rec.report_id}/draft", amendment)
    assert r.status_code == 403


def test_head_of_another_department_is_no_head_here(emr: RunningEmr) -> None:
    from emr.patients import encounters

    rec = make_record(emr, "bacsi", "bschan", signed=True)
    factory = emr.session_factory()
    with factory() as session:
        other = encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh")
        head = session.scalar(select(User).where(User.username == "truongkhoa"))
        assert head is not None
        head.department_id = other.id
        session.commit()
    try:
        r = _api(emr, "truongkhoa", "POST", f"/documents/{rec.report_id}/cancel", {"reason": "x"})
        assert r.status_code == 403
    finally:
        with factory() as session:
            head = session.scalar(select(User).where(User.username == "truongkhoa"))
            k19 = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
            assert head is not None
            head.department_id = k19.id
            session.commit()
        factory.kw["bind"].dispose()


def test_no_discharge_paper_is_signed_while_its_visit_is_open(emr: RunningEmr, pki: Any) -> None:
    """A discharge paper states the discharge time: its treating physician, with a working key, cannot sign it
    while the visit is open — not by the form (it offers to close the visit instead) nor by posting the form's
    fields straight to the signing URL; the refusal is audited and the paper stays an unsigned draft."""
    from emr.signing import service as signatures

    rec = make_record(emr, "bacsi", "bschan", signed=False)  # bacsi attends the visit
    factory = emr.session_factory()
    with factory() as session:
        doctor = session.scalar(select(User).where(User.username == "bacsi"))
        assert doctor is not None
        dev = pki.users["bs.an"]
        signatures.register_pkcs12(session, SETUP, doctor.id, dev.p12_bytes(), dev.password())
    factory.kw["bind"].dispose()
    content = {"summary": "Ổn định", "discharge_diagnosis": "Đau đầu", "treatment": "Nội khoa", "result": "1"}
    r = _api(emr, "bacsi", "POST", "/documents",
             {"encounter_id": rec.encounter_id, "form_type": "discharge_summary", "content": content})
    assert r.status_code == 201, r.text
    doc = r.json()
    sha = _api(emr, "bacsi", "GET", f"/documents/{doc['id']}").json()["versions"][0]["content_sha256"]
    physician, _ = emr.login("bacsi")
    page = physician.get(emr.url(f"/signing/documents/{doc['id']}/sign"), timeout=60).text
    assert 'name="content_sha256"' not in page  # no signing form for a stay not yet ended
    assert f"/patients/{rec.patient_id}/encounters/{rec.encounter_id}/close" in page
    form = {"csrf_token": csrf(page), "method": "pkcs12", "secret": emr.env["p12_password"], "content_sha256": sha}
    r = physician.post(emr.url(f"/signing/documents/{doc['id']}/sign"), data=form, allow_redirects=False,
                       timeout=120)
    assert r.status_code == 422 and t("signing.error.not_discharged") in r.text
    assert _api(emr, "bacsi", "GET", f"/documents/{doc['id']}").json()["status"] == "draft"
    failures = _audit(emr, "document.sign", "failure", "bacsi")
    assert any(d.get("error") == "visit_not_discharged" for d in failures)
    with factory() as session:
        assert session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc["id"])) is None
    factory.kw["bind"].dispose()
