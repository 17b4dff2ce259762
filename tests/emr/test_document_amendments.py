"""Amendments of signed documents: concurrent and stale forms, the signed version staying valid until the
amendment is signed, discarding an unsigned amendment, reason length, and the 500 page after a failed flush.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import threading
from typing import Any

import pytest
import requests
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import Actor
from emr.access.users import create_user
from emr.core.exceptions import InvalidState
from emr.db import session as request_session
from emr.documents import service as documents
from emr.documents.rights import NotAllowedOnDocument
from emr.http_server import make_server
from emr.i18n import t
from emr.models import AuditEntry, Document, DocumentVersion, User
from tests.helpers import free_port, http_login

from .conftest import ADMIN_ACTOR, PASSWORD, World, csrf_token, login, outpatient_visit

SIGNED = {"chief_complaint": "Ho kéo dài", "examination": "Phổi ran nổ", "conclusion": "Viêm phổi"}


def _signed_document(session: Session, world: World) -> Document:
    """An outpatient record signed (v1) by the physician, who may therefore amend it."""
    doctor = world.actor("physician")
    _p, enc = outpatient_visit(session, world)
    doc = documents.create_document(
        session, doctor, {"encounter_id": enc.id, "form_type": "outpatient_record", "content": SIGNED}
    )
    documents.mark_signed(session, doctor, doc.id, 1)
    return doc


def _form(values: dict[str, str]) -> dict[str, str]:
    return {f"c_{k}": v for k, v in values.items()}


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True) if hasattr(r, "get_data") else r.text)


def _versions(session: Session, doc_id: int) -> dict[int, DocumentVersion]:
    """The versions as committed now. The read transaction is ended at once: on SQLite it holds the write
    lock (BEGIN IMMEDIATE, emr.db), and the app's requests would wait for it."""
    session.expire_all()
    found = {v.number: v for v in session.get(Document, doc_id).versions}
    session.commit()
    return found


def _document(session: Session, doc_id: int) -> Document:
    session.expire_all()
    doc = session.get(Document, doc_id)
    assert doc is not None
    session.commit()
    return doc


def _audit(session: Session, doc_id: int, action: str) -> list[AuditEntry]:
    found = list(session.scalars(select(AuditEntry).where(
        AuditEntry.object_type == "document", AuditEntry.object_id == str(doc_id), AuditEntry.action == action,
        AuditEntry.outcome == "success")))
    session.commit()
    return found


def test_parallel_amendments_make_one_version_and_the_others_get_a_conflict(
    app: Flask, settings: Any, world: World, session: Session
) -> None:
    """Four POSTs of the same amendment form at once (two tabs, a double click), against the real server:
    one amendment is made, the others are told the document changed (409) and see their own text again."""
    doc = _signed_document(session, world)
    server = make_server(app, dataclasses.replace(settings, host="127.0.0.1", port=free_port()), threads=6)
    stopping = threading.Event()

    def serve() -> None:
        try:
            server.run()
        except (OSError, ValueError):  # the sockets closed under the loop when the test stops the server
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.effective_port}"
        http = http_login(base, "physician1", PASSWORD)
        page = http.get(f"{base}/documents/{doc.id}/edit", timeout=30).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        assert 'name="base_version" value="1"' in page and 'name="base_mode" value="amend"' in page
        start = threading.Barrier(4)
        results: dict[int, requests.Response] = {}

        def amend(i: int) -> None:
            tab = requests.Session()
            tab.cookies.update(http.cookies)
            form = {"csrf_token": token, "base_version": "1", "base_mode": "amend",
                    **_form({**SIGNED, "conclusion": f"Kết luận của thẻ {i}"}), "reason": f"Lý do thẻ {i}"}
            start.wait(timeout=30)
            results[i] = tab.post(f"{base}/documents/{doc.id}/edit", data=form, allow_redirects=False, timeout=60)

        tabs = [threading.Thread(target=amend, args=(i,)) for i in range(4)]
        for x in tabs:
            x.start()
        for x in tabs:
            x.join(timeout=90)
    finally:
        stopping.set()
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(timeout=10)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [302, 409, 409, 409], {i: (r.status_code, r.text[:300]) for i, r in results.items()}
    winner = next(i for i, r in results.items() if r.status_code == 302)
    for i, r in results.items():
        if i != winner:  # the conflict says so in Vietnamese and loses nothing typed
            text = html.unescape(r.text)
            assert t("documents.error.changed") in text
            assert f"Lý do thẻ {i}</textarea>" in text and f"Kết luận của thẻ {i}</textarea>" in text
    v = _versions(session, doc.id)
    assert sorted(v) == [1, 2]
    assert v[2].amendment_reason == f"Lý do thẻ {winner}" and f"Kết luận của thẻ {winner}" in v[2].content_json
    assert v[1].status == "signed" and v[2].status == "draft"
    assert len(_audit(session, doc.id, "document.amend")) == 1 and not _audit(session, doc.id, "document.edit")


def test_a_stale_form_never_overwrites_a_newer_version(client: FlaskClient, world: World, session: Session) -> None:
    doc = _signed_document(session, world)
    login(client, "physician1")
    url = f"/documents/{doc.id}/edit"
    token = csrf_token(client, url)
    stale = {"csrf_token": token, "base_version": "1", "base_mode": "amend"}
    first = {**stale, **_form({**SIGNED, "conclusion": "Viêm phổi thùy dưới"}), "reason": "Bổ sung CT"}
    assert client.post(url, data=first).status_code == 302
    # The same form again (second tab): the document now has a v2 draft; it is not edited with this text.
    second = {**stale, **_form({**SIGNED, "conclusion": "Lao phổi"}), "reason": "Thẻ thứ hai"}
    r = client.post(url, data=second)
    page = _page(r)
    assert r.status_code == 409 and t("documents.error.changed") in page
    assert "Lao phổi</textarea>" in page and "Thẻ thứ hai</textarea>" in page
    assert t("documents.amend") + "</button>" not in page  # the stale form cannot be sent again
    v = _versions(session, doc.id)
    assert "Viêm phổi thùy dưới" in v[2].content_json and v[2].amendment_reason == "Bổ sung CT"
    # A draft edit form carries its version: once that draft is signed, the form is stale.
    page = _page(client.get(url))
    assert 'name="base_version" value="2"' in page and 'name="base_mode" value="edit"' in page
    documents.mark_signed(session, world.actor("physician"), doc.id, 2)
    r = client.post(url, data={"csrf_token": token, "base_version": "2", "base_mode": "edit",
                               **_form({**SIGNED, "conclusion": "Sửa sau khi ký"})})
    assert r.status_code == 409 and "Sửa sau khi ký</textarea>" in _page(r)
    v = _versions(session, doc.id)
    assert "Sửa sau khi ký" not in v[2].content_json and v[2].locked and v[1].status == "superseded"


def test_the_service_refuses_a_stale_base_version(world: World, session: Session) -> None:
    doctor = world.actor("physician")
    doc = _signed_document(session, world)
    documents.amend_document(session, doctor, doc.id, {**SIGNED, "conclusion": "A"}, "lý do A", base_version=1)
    with pytest.raises(documents.DocumentChanged) as exc:
        documents.amend_document(session, doctor, doc.id, {**SIGNED, "conclusion": "B"}, "lý do B", base_version=1)
    assert exc.value.http_status == 409 and exc.value.key == "documents.error.changed"
    session.rollback()
    with pytest.raises(documents.DocumentChanged):  # v1 form used as a draft edit of v2
        documents.update_draft(session, doctor, doc.id, {**SIGNED, "conclusion": "B"}, base_version=1)
    session.rollback()
    documents.update_draft(session, doctor, doc.id, {**SIGNED, "conclusion": "A2"}, base_version=2)
    v = _versions(session, doc.id)
    assert sorted(v) == [1, 2] and '"conclusion":"A2"' in v[2].content_json and v[2].amendment_reason == "lý do A"


def test_the_signed_version_stays_valid_until_the_amendment_is_signed(
    client: FlaskClient, world: World, session: Session
) -> None:
    doctor = world.actor("physician")
    doc = _signed_document(session, world)
    documents.amend_document(session, doctor, doc.id, {**SIGNED, "conclusion": "Viêm phổi nặng"}, "bổ sung")
    v = _versions(session, doc.id)
    assert v[1].status == "signed" and v[2].status == "draft"
    login(client, "physician1")
    view = _page(client.get(f"/documents/{doc.id}"))
    assert t("documents.vstatus.superseded") not in view and t("documents.amendment_pending", version=1) in view
    data = documents.document_dict(_document(session, doc.id))
    assert [x["status"] for x in data["versions"]] == ["signed", "draft"]
    documents.mark_signed(session, doctor, doc.id, 2)
    v = _versions(session, doc.id)
    assert v[1].status == "superseded" and v[2].status == "signed"


def test_an_unsigned_amendment_is_discarded_by_its_author_with_a_reason(
    app: Flask, client: FlaskClient, world: World, session: Session
) -> None:
    doctor = world.actor("physician")
    doc = _signed_document(session, world)
    with pytest.raises(InvalidState):  # nothing to discard: the current version is signed
        documents.discard_amendment(session, doctor, doc.id, "nhầm")
    session.rollback()
    documents.amend_document(session, doctor, doc.id, {**SIGNED, "conclusion": "Nhầm phiếu"}, "bổ sung")
    # Another physician (not the amendment's author) may not drop it.
    other = create_user(session, ADMIN_ACTOR, "bsnoi2", PASSWORD, "physician", "Trần Văn Hai",
                        department_id=world.users["physician"].department_id)
    with pytest.raises(NotAllowedOnDocument):
        documents.discard_amendment(session, Actor(other.id, "bsnoi2", "physician", "10.0.0.9"), doc.id, "không cần")
    login(client, "physician1")
    view = _page(client.get(f"/documents/{doc.id}"))
    assert f"/documents/{doc.id}/discard" in view and t("documents.discard") in view
    token = csrf_token(client, f"/documents/{doc.id}")
    url = f"/documents/{doc.id}/discard"
    r = client.post(url, data={"csrf_token": token, "base_version": "2", "reason": "  "})
    assert r.status_code == 422 and t("documents.error.reason_required") in _page(r)
    r = client.post(url, data={"csrf_token": token, "base_version": "2", "reason": "x" * 1001})
    assert r.status_code == 422 and t("errors.field_too_long_max", max=1000) in _page(r)
    r = client.post(url, data={"csrf_token": token, "base_version": "2", "reason": "Sửa nhầm phiếu"})
    assert r.status_code == 302
    v = _versions(session, doc.id)
    d = _document(session, doc.id)
    assert d.current_version == 1 and d.status == "signed"
    assert v[1].status == "signed" and v[2].status == "discarded" and not v[2].locked  # kept on record
    entry = _audit(session, doc.id, "document.discard_amendment")
    assert len(entry) == 1 and json.loads(entry[0].details)["reason"] == "Sửa nhầm phiếu"
    view = _page(client.get(f"/documents/{doc.id}"))
    assert t("documents.vstatus.discarded") in view and f"/documents/{doc.id}/discard" not in view
    # The same discard form again (another tab): the document has moved on.
    r = client.post(url, data={"csrf_token": token, "base_version": "2", "reason": "lần nữa"})
    assert r.status_code == 409 and t("documents.error.changed") in _page(r)
    # A discarded draft can never be signed; the next amendment gets a new number.
    with pytest.raises(InvalidState):
        documents.mark_signed(session, doctor, doc.id, 2)
    session.rollback()
    again = documents.amend_document(session, doctor, doc.id, {**SIGNED, "conclusion": "Đúng"}, "bổ sung",
                                     base_version=1)
    assert again.current_version == 3 and again.status == "amended"


def test_reasons_over_the_limit_are_refused_not_cut(client: FlaskClient, world: World, session: Session) -> None:
    doc = _signed_document(session, world)
    login(client, "physician1")
    url = f"/documents/{doc.id}/edit"
    page = _page(client.get(url))
    assert re.search(r'<textarea name="reason"[^>]*maxlength="1000"', page)
    token = csrf_token(client, url)
    long = "Bổ sung " + "x" * 993  # 1001 characters
    r = client.post(url, data={"csrf_token": token, "base_version": "1", "base_mode": "amend",
                               **_form({**SIGNED, "conclusion": "Mới"}), "reason": long})
    page = _page(r)
    assert r.status_code == 422
    assert re.search(rf'id="err-reason">{re.escape(t("errors.field_too_long_max", max=1000))}', page)
    assert f"{long}</textarea>" in page  # all of it shown again, nothing cut
    assert sorted(_versions(session, doc.id)) == [1]
    view = _page(client.get(f"/documents/{doc.id}"))
    assert re.search(r'<textarea name="reason"[^>]*maxlength="1000"', view)  # the cancel form
    r = client.post(f"/documents/{doc.id}/cancel", data={"csrf_token": token, "reason": long})
    assert r.status_code == 422 and t("errors.field_too_long_max", max=1000) in _page(r)
    assert _document(session, doc.id).status == "signed"
    exactly = "y" * 1000
    r = client.post(url, data={"csrf_token": token, "base_version": "1", "base_mode": "amend",
                               **_form({**SIGNED, "conclusion": "Mới"}), "reason": exactly})
    assert r.status_code == 302
    assert _versions(session, doc.id)[2].amendment_reason == exactly


def test_the_error_page_after_a_failed_flush_is_vietnamese(app: Flask, world: World) -> None:
    """A view failing on a constraint leaves the session needing a rollback: the 500 page (whose header
    reads the logged-in user) must roll back first instead of crashing into the server's English page."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/_test/duplicate")
    def _duplicate() -> Any:
        s = request_session()
        s.expire(g.user)  # as after an earlier commit or rollback in the request
        s.add(User(username="physician1", full_name="x", role="nurse", password_hash="x"))
        s.flush()  # UNIQUE username: IntegrityError
        return "unreachable"

    c = app.test_client()
    login(c, "physician1")
    r = c.get("/_test/duplicate")
    assert r.status_code == 500
    page = _page(r)
    assert t("errors.generic") in page and world.users["physician"].full_name in page
