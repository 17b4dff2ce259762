"""Dropping an unsigned amendment (POST /documents/<id>/discard) is its author's alone.

Real HTTP against `filmless emr serve`: a signed radiology report is amended
by the radiologist who wrote it; another radiologist, a nurse and a forged
form without the CSRF token each try to drop the amendment. All are refused, the amendment and the signed
version stay as they were, and the refusals are audited; the author then
drops it with a reason.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from emr.access.audit import Actor
from emr.models import AuditEntry, Document, DocumentVersion
from tests.security.auth_support import RunningEmr, csrf, make_record, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-discard")) as running:
        make_users(running, ("bacsi", "physician"), ("bschan", "radiologist"), ("bskhac", "radiologist"),
                   ("dieuduong", "nurse"))
        yield running


def _versions(emr: RunningEmr, doc_id: int) -> list[tuple[int, str]]:
    factory = emr.session_factory()
    with factory() as s:
        rows = s.execute(select(DocumentVersion.number, DocumentVersion.status)
                         .where(DocumentVersion.document_id == doc_id).order_by(DocumentVersion.number)).all()
    factory.kw["bind"].dispose()
    return [(n, st) for n, st in rows]


def test_only_the_author_drops_an_unsigned_amendment(emr: RunningEmr) -> None:
    from emr.documents import service as documents

    record = make_record(emr, "bacsi", "bschan", signed=True)
    factory = emr.session_factory()
    with factory() as s:
        doc = s.get(Document, record.report_id)
        assert doc is not None
        author = Actor(doc.created_by, "bschan", "radiologist", "127.0.0.1")
        documents.amend_document(s, author, doc.id, {"findings": "Bổ sung: nang nhỏ thùy trán.",
                                                     "conclusion": "Không bất thường cấp tính."}, "bổ sung mô tả")
    factory.kw["bind"].dispose()
    before = _versions(emr, record.report_id)
    assert before == [(1, "signed"), (2, "draft")]
    url = emr.url(f"/documents/{record.report_id}/discard")

    for username in ("bskhac", "dieuduong"):
        s, r = emr.login(username)
        assert r.status_code == 302
        token = csrf(s.get(emr.url("/patients/"), timeout=30).text)
        r = s.post(url, data={"csrf_token": token, "reason": "không cần", "base_version": "2"},
                   allow_redirects=False, timeout=30)
        assert r.status_code == 403, (username, r.status_code)
    author_http, _ = emr.login("bschan")
    forged = author_http.post(url, data={"reason": "không cần", "base_version": "2"}, allow_redirects=False,
                              timeout=30)
    assert forged.status_code == 400  # a page elsewhere posting with the author's cookie
    assert _versions(emr, record.report_id) == before

    with factory() as s:
        refused = s.scalars(select(AuditEntry.username).where(AuditEntry.outcome == "denied",
                                                              AuditEntry.username.in_(("bskhac", "dieuduong")))).all()
    factory.kw["bind"].dispose()
    assert {"bskhac", "dieuduong"} <= set(refused)

    token = csrf(author_http.get(emr.url(f"/documents/{record.report_id}"), timeout=30).text)
    r = author_http.post(url, data={"csrf_token": token, "reason": "sửa nhầm", "base_version": "2"},
                         allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert _versions(emr, record.report_id) == [(1, "signed"), (2, "discarded")]
