"""The viewer's "Báo cáo (PDF)" link: ``GET /reading/reports/<StudyInstanceUID>`` and the PDF address it gives.

The list names a study's signed report versions and the EMR route serving each one's PDF. Trying to get around
it: a physician asking for a study of a patient outside their care, a technician (no ``document.read``), no
session at all (a share token is no session), a study the EMR never linked, a malformed UID. Each gets neither
the list nor, through the address the list would give, the PDF; refusals are audited, and the reading the
link leads to is audited as a view of the document.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select

from emr.models import AuditEntry, Document
from emr.models.signing import SignedArtifact
from storage import OrthancStore
from tests.security.access_world import REPORT_TEXT, AccessWorld, Case, build_world, http_login


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    for w in build_world(tmp_path_factory.mktemp("access-report-pdfs"), orthanc):
        # The world's reports are signed without the PKI: give each its signed PDF as the workflow stores it.
        with w.sessions() as s:
            for case in (w.a, w.b):
                doc = s.get(Document, case.doc_id)
                version = doc.versions[0]
                pdf = b"%PDF-1.4\n% " + REPORT_TEXT.encode("utf-8") + f" {case.patient_code}\n%%EOF\n".encode()
                s.add(SignedArtifact(
                    version_id=version.id, document_id=doc.id, verification_code=secrets.token_urlsafe(24),
                    pdf=pdf, pdf_sha256=hashlib.sha256(pdf).hexdigest(), content_sha256=version.content_sha256,
                    signatures_required=1, signatures_done=1, complete=True, pacs_sop_instance_uid=case.doc_sop_uid,
                ))
            s.commit()
        yield w


def _pdf_url(case: Case) -> str:
    return f"/signing/documents/{case.doc_id}/versions/1/pdf?inline=1"  # as the viewer opens it


def _audit(world: AccessWorld, username: str, action: str) -> list[AuditEntry]:
    with world.sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.username == username, AuditEntry.action == action)))


def test_a_physician_in_care_gets_the_link_and_the_pdf_behind_it(world: AccessWorld) -> None:
    doctor = http_login(world.base, "bs_a")
    r = doctor.get(f"{world.base}/reading/reports/{world.a.study_uid}", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["reports"] == [{
        "version": 1, "current": True, "url": _pdf_url(world.a), "signed_at": r.json()["reports"][0]["signed_at"],
        "sop_instance_uid": world.a.doc_sop_uid, "in_pacs": True,
    }]
    assert _pdf_url(world.b) not in r.text and world.b.doc_sop_uid not in r.text  # only this study's report
    before = len(_audit(world, "bs_a", "document.view"))
    pdf = doctor.get(world.base + _pdf_url(world.a), timeout=10)
    assert pdf.status_code == 200 and REPORT_TEXT.encode("utf-8") in pdf.content
    views = _audit(world, "bs_a", "document.view")
    assert len(views) == before + 1 and views[-1].object_id == str(world.a.doc_id)
    assert views[-1].patient_id == world.a.patient_id


def test_a_physician_outside_the_care_gets_neither_the_list_nor_the_pdf(world: AccessWorld) -> None:
    doctor = http_login(world.base, "bs_a")  # B's visit is in K01 with bs_b; B's study is 60 days old
    r = doctor.get(f"{world.base}/reading/reports/{world.b.study_uid}", timeout=10)
    assert r.status_code == 403
    assert _pdf_url(world.b) not in r.text and world.b.doc_sop_uid not in r.text
    pdf = doctor.get(world.base + _pdf_url(world.b), timeout=10)
    assert pdf.status_code == 403 and b"%PDF" not in pdf.content and REPORT_TEXT.encode("utf-8") not in pdf.content
    denied = [e for e in _audit(world, "bs_a", "care.denied") if e.patient_id == world.b.patient_id]
    assert len(denied) >= 2, "both refusals are audited"
    assert not [e for e in _audit(world, "bs_a", "document.view") if e.object_id == str(world.b.doc_id)]
    # And the other way round.
    other = http_login(world.base, "bs_b")
    assert other.get(f"{world.base}/reading/reports/{world.a.study_uid}", timeout=10).status_code == 403
    assert other.get(world.base + _pdf_url(world.a), timeout=10).status_code == 403


def test_roles_without_document_read_get_neither(world: AccessWorld) -> None:
    ktv = http_login(world.base, "ktv")  # A is in the technician's care (scheduled today), reports are not
    r = ktv.get(f"{world.base}/reading/reports/{world.a.study_uid}", timeout=10)
    assert r.status_code == 403 and _pdf_url(world.a) not in r.text
    assert ktv.get(world.base + _pdf_url(world.a), timeout=10).status_code == 403
    assert [e for e in _audit(world, "ktv", "document.read") if e.outcome == "denied"]
    admin = http_login(world.base, "quantri")
    assert admin.get(f"{world.base}/reading/reports/{world.a.study_uid}", timeout=10).status_code == 403


def test_no_session_no_list_even_with_a_share_token(world: AccessWorld) -> None:
    for headers in ({}, {"X-Share-Token": "anything"}):
        r = requests.get(f"{world.base}/reading/reports/{world.a.study_uid}", headers=headers,
                         allow_redirects=False, timeout=10)
        assert r.status_code == 302 and "/login" in r.headers["Location"], r.status_code
        r = requests.get(world.base + _pdf_url(world.a), headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 302 and "/login" in r.headers["Location"]
    r = requests.get(f"{world.base}/reading/reports/{world.a.study_uid}?token=anything", allow_redirects=False,
                     timeout=10)
    assert r.status_code == 302


def test_unlinked_and_malformed_studies(world: AccessWorld) -> None:
    doctor = http_login(world.base, "bs_a")
    r = doctor.get(f"{world.base}/reading/reports/{world.stranger_study_uid}", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "not_found"}
    for bad in ("1.2.x", "1.2.3%2F..%2F4", "9" * 65):
        r = doctor.get(f"{world.base}/reading/reports/{bad}", timeout=10)
        assert r.status_code in (400, 404) and "/signing/" not in r.text, (bad, r.status_code)
