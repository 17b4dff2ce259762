"""Two tabs on one draft, and an amendment that changes nothing.

A draft is edited in place (its version number stays), so the ``base_version`` the edit form carries
could not tell a stale tab: both saves succeeded and the first was lost. The form now also carries the
draft text's hash (``base_sha256``); a save from a tab opened before another tab's save gets the
"Văn bản đã được thay đổi…" 409 with its typed text shown again, as amendments already did. The reading
page's report form and ``PUT /api/documents/{id}/draft`` carry the same hash (the API: ``base_sha256``,
optional for older clients), so a radiologist's second tab or a script cannot save over the first either.

An amendment identical to the signed version used to be accepted and had to be signed again; it is
refused ("Nội dung không thay đổi") and nothing is created.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.users import create_token
from emr.core.exceptions import InvalidState
from emr.documents import service as documents
from emr.i18n import t
from emr.models import AuditEntry, Document, DocumentVersion

from .conftest import ADMIN_ACTOR, World, csrf_token, linked_ct_study, login, outpatient_visit

TEXT = {"chief_complaint": "Ho kéo dài", "examination": "Phổi ran nổ", "conclusion": "Viêm phổi"}


def _draft(session: Session, world: World) -> Document:
    """An outpatient record draft (v1) written by physician1."""
    doctor = world.actor("physician")
    _p, enc = outpatient_visit(session, world)
    doc = documents.create_document(
        session, doctor, {"encounter_id": enc.id, "form_type": "outpatient_record", "content": TEXT}
    )
    session.commit()
    return doc


def _form(values: dict[str, str]) -> dict[str, str]:
    return {f"c_{k}": v for k, v in values.items()}


def _hidden(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)"', page))


def _versions(session: Session, doc_id: int) -> dict[int, DocumentVersion]:
    session.expire_all()
    found = {v.number: v for v in session.get(Document, doc_id).versions}  # type: ignore[union-attr]
    session.commit()  # end the read (SQLite: the app's writers queue behind an open transaction)
    return found


def _audited(session: Session, doc_id: int, action: str) -> int:
    n = len(session.scalars(select(AuditEntry.id).where(
        AuditEntry.object_type == "document", AuditEntry.object_id == str(doc_id), AuditEntry.action == action,
        AuditEntry.outcome == "success")).all())
    session.commit()
    return n


def test_two_tabs_on_one_draft_the_stale_save_is_refused(client: FlaskClient, world: World, session: Session) -> None:
    doc = _draft(session, world)
    login(client, "physician1")
    url = f"/documents/{doc.id}/edit"
    tab_a = _hidden(client.get(url).get_data(as_text=True))
    tab_b = _hidden(client.get(url).get_data(as_text=True))
    assert tab_a["base_sha256"] == tab_b["base_sha256"] == _versions(session, doc.id)[1].content_sha256
    r = client.post(url, data={**tab_a, **_form({**TEXT, "conclusion": "Viêm phổi thùy dưới (thẻ A)"})})
    assert r.status_code == 302
    r = client.post(url, data={**tab_b, **_form({**TEXT, "conclusion": "Lao phổi (thẻ B)"})})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 409 and t("documents.error.changed") in page
    assert "Lao phổi (thẻ B)</textarea>" in page  # what tab B typed is there to copy
    assert t("documents.save_draft") + "</button>" not in page  # and cannot be sent again from this form
    v = _versions(session, doc.id)
    assert sorted(v) == [1] and "thẻ A" in v[1].content_json and "thẻ B" not in v[1].content_json
    assert _audited(session, doc.id, "document.edit") == 1
    # Reloaded, tab B edits the text as it is now.
    tab_b = _hidden(client.get(url).get_data(as_text=True))
    r = client.post(url, data={**tab_b, **_form({**TEXT, "conclusion": "Lao phổi (thẻ B, sau khi tải lại)"})})
    assert r.status_code == 302 and "sau khi tải lại" in _versions(session, doc.id)[1].content_json


def test_a_form_shown_again_after_an_error_keeps_the_text_it_was_filled_from(
    client: FlaskClient, world: World, session: Session
) -> None:
    doc = _draft(session, world)
    login(client, "physician1")
    url = f"/documents/{doc.id}/edit"
    tab_a = _hidden(client.get(url).get_data(as_text=True))
    tab_b = _hidden(client.get(url).get_data(as_text=True))
    # Tab A forgets a required field: shown again (422) with the hash it was filled from, not the current one.
    r = client.post(url, data={**tab_a, **_form({**TEXT, "conclusion": ""})})
    assert r.status_code == 422
    tab_a = _hidden(r.get_data(as_text=True))
    assert client.post(url, data={**tab_b, **_form({**TEXT, "conclusion": "Thẻ B"})}).status_code == 302
    r = client.post(url, data={**tab_a, **_form({**TEXT, "conclusion": "Thẻ A"})})
    assert r.status_code == 409 and '"conclusion":"Thẻ B"' in _versions(session, doc.id)[1].content_json


def test_the_service_refuses_a_draft_edit_from_other_text(world: World, session: Session) -> None:
    doctor = world.actor("physician")
    doc = _draft(session, world)
    shown = _versions(session, doc.id)[1].content_sha256
    documents.update_draft(session, doctor, doc.id, {**TEXT, "conclusion": "A"}, base_version=1, base_sha256=shown)
    with pytest.raises(documents.DocumentChanged) as exc:
        documents.update_draft(session, doctor, doc.id, {**TEXT, "conclusion": "B"}, base_version=1,
                               base_sha256=shown)
    assert exc.value.http_status == 409 and exc.value.key == "documents.error.changed"
    session.rollback()
    assert '"conclusion":"A"' in _versions(session, doc.id)[1].content_json


def _signed(session: Session, world: World) -> Document:
    doc = _draft(session, world)
    documents.mark_signed(session, world.actor("physician"), doc.id, 1)
    return doc


def test_an_amendment_that_changes_nothing_is_refused(client: FlaskClient, world: World, session: Session) -> None:
    doc = _signed(session, world)
    login(client, "physician1")
    url = f"/documents/{doc.id}/edit"
    token = csrf_token(client, url)
    # The same text, give or take spaces the form drops: nothing to correct, nothing to sign again.
    same = _form({**TEXT, "conclusion": "  Viêm phổi  "})
    r = client.post(url, data={"csrf_token": token, "base_version": "1", "base_mode": "amend", **same,
                               "reason": "Bổ sung"})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 422 and t("documents.error.unchanged") in page
    assert t("documents.error.unchanged").startswith("Nội dung không thay đổi")
    assert "Bổ sung</textarea>" in page  # the reason typed is still there
    v = _versions(session, doc.id)
    assert sorted(v) == [1] and v[1].status == "signed"
    session.expire_all()
    assert session.get(Document, doc.id).status == "signed"  # type: ignore[union-attr]
    session.commit()
    assert _audited(session, doc.id, "document.amend") == 0
    # A real correction is an amendment.
    r = client.post(url, data={"csrf_token": token, "base_version": "1", "base_mode": "amend",
                               **_form({**TEXT, "conclusion": "Viêm phổi thùy dưới phải"}), "reason": "Bổ sung"})
    assert r.status_code == 302 and sorted(_versions(session, doc.id)) == [1, 2]


def test_the_api_refuses_an_unchanged_amendment(client: FlaskClient, world: World, session: Session) -> None:
    doc = _signed(session, world)
    token = create_token(session, ADMIN_ACTOR, world.users["physician"].id, "tests")
    session.commit()
    r = client.post(f"/api/documents/{doc.id}/amendments", json={"content": TEXT, "reason": "Bổ sung"},
                    headers={"Authorization": f"Bearer {token}"})
    body: Any = r.json
    assert r.status_code == 409 and body["error"] == "invalid_state", body
    assert sorted(_versions(session, doc.id)) == [1]
    with pytest.raises(InvalidState) as exc:
        documents.amend_document(session, world.actor("physician"), doc.id, dict(TEXT), "Bổ sung")
    assert exc.value.key == "documents.error.unchanged"


# -- the reading page's report form ------------------------------------------------------------------------


def _report(session: Session, order_id: int) -> Document | None:
    session.expire_all()
    doc = session.scalar(select(Document).where(Document.order_id == order_id))
    session.commit()
    return doc


def _conclusion(session: Session, order_id: int) -> str:
    doc = _report(session, order_id)
    assert doc is not None
    return str(json.loads(_versions(session, doc.id)[doc.current_version].content_json)["conclusion"])


def _report_form(page: str, conclusion: str) -> dict[str, str]:
    return {**_hidden(page), "c_findings": "Không thấy tổn thương khu trú.", "c_conclusion": conclusion}


def test_two_tabs_on_one_report_the_stale_reading_save_is_refused(
    client: FlaskClient, world: World, session: Session
) -> None:
    study = linked_ct_study(session, world)
    assert study.order_id is not None
    login(client, "radiologist1")
    url, save = f"/reading/studies/{study.id}", f"/reading/studies/{study.id}/report"
    # Both tabs opened before there was a report: the first save creates it, the second must not edit it.
    tab_a, tab_b = client.get(url).get_data(as_text=True), client.get(url).get_data(as_text=True)
    assert _hidden(tab_a)["base_sha256"] == "" and "base_version" not in _hidden(tab_a)
    assert client.post(save, data=_report_form(tab_a, "Thẻ A: bình thường")).status_code == 302
    r = client.post(save, data=_report_form(tab_b, "Thẻ B: nốt phổi"))
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 409 and t("documents.error.changed") in page
    assert "Thẻ B: nốt phổi</textarea>" in page  # what tab B typed is there to copy
    assert 'id="save-draft"' not in page and t("documents.reload") in page  # reload, not save, from here
    assert _conclusion(session, study.order_id) == "Thẻ A: bình thường"
    # A draft now: both tabs carry its version and text hash; the stale one is refused again.
    tab_a, tab_b = client.get(url).get_data(as_text=True), client.get(url).get_data(as_text=True)
    doc = _report(session, study.order_id)
    assert doc is not None
    assert _hidden(tab_a)["base_sha256"] == _versions(session, doc.id)[1].content_sha256
    assert _hidden(tab_a)["base_version"] == "1"
    # A failed save (empty conclusion) shows the form again with the hash it was filled from.
    r = client.post(save, data=_report_form(tab_a, ""))
    assert r.status_code == 422 and _hidden(r.get_data(as_text=True))["base_sha256"] == _hidden(tab_a)["base_sha256"]
    assert client.post(save, data=_report_form(tab_a, "Thẻ A: sửa lần hai")).status_code == 302
    r = client.post(save, data=_report_form(tab_b, "Thẻ B: lần hai"))
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 409 and t("documents.error.changed") in page and "Thẻ B: lần hai</textarea>" in page
    assert _conclusion(session, study.order_id) == "Thẻ A: sửa lần hai"
    assert _audited(session, doc.id, "document.edit") == 1
    # Reloaded, tab B edits the report as it is now.
    tab_b = client.get(url).get_data(as_text=True)
    assert client.post(save, data=_report_form(tab_b, "Thẻ B: sau khi tải lại")).status_code == 302
    assert _conclusion(session, study.order_id) == "Thẻ B: sau khi tải lại"


def test_a_report_signed_meanwhile_keeps_the_reading_tab_text(
    client: FlaskClient, world: World, session: Session
) -> None:
    study = linked_ct_study(session, world)
    assert study.order_id is not None
    login(client, "radiologist1")
    url, save = f"/reading/studies/{study.id}", f"/reading/studies/{study.id}/report"
    assert client.post(save, data=_report_form(client.get(url).get_data(as_text=True), "Bình thường.")) \
        .status_code == 302
    tab = client.get(url).get_data(as_text=True)
    doc = _report(session, study.order_id)
    assert doc is not None
    documents.mark_signed(session, world.actor("radiologist"), doc.id, 1)  # signed from another tab
    session.commit()
    r = client.post(save, data=_report_form(tab, "Nốt mờ 8 mm thùy trên phổi phải."))
    page = html.unescape(r.get_data(as_text=True))
    # The page of a signed report shows no form; the refused text is still there to copy.
    assert r.status_code == 409 and t("documents.error.changed") in page
    assert "Nốt mờ 8 mm thùy trên phổi phải.</textarea>" in page
    assert _conclusion(session, study.order_id) == "Bình thường."


# -- PUT /api/documents/{id}/draft -------------------------------------------------------------------------


def test_the_api_refuses_a_stale_draft_edit(client: FlaskClient, world: World, session: Session) -> None:
    doc = _draft(session, world)
    token = create_token(session, ADMIN_ACTOR, world.users["physician"].id, "tests")
    session.commit()
    h = {"Authorization": f"Bearer {token}"}
    url = f"/api/documents/{doc.id}/draft"
    read: Any = client.get(f"/api/documents/{doc.id}", headers=h).json
    shown = read["versions"][0]["content_sha256"]
    # Script A and script B read the same draft; A saves first.
    r = client.put(url, json={"content": {**TEXT, "conclusion": "A"}, "base_sha256": shown}, headers=h)
    assert r.status_code == 200, r.json
    body: Any = r.json
    now = body["versions"][0]["content_sha256"]
    assert now != shown
    r = client.put(url, json={"content": {**TEXT, "conclusion": "B"}, "base_sha256": shown}, headers=h)
    body = r.json
    assert r.status_code == 409 and body["error"] == "document_changed", body
    assert body["fields"] == {"base_sha256": "documents.error.changed"}
    assert body["document"] == {"id": doc.id, "current_version": 1}
    assert shown in body["message"] and "read the document again" in body["message"]
    assert '"conclusion":"A"' in _versions(session, doc.id)[1].content_json
    # On the current text (any case of hex), it is saved.
    r = client.put(url, json={"content": {**TEXT, "conclusion": "B"}, "base_sha256": now.upper()}, headers=h)
    assert r.status_code == 200 and '"conclusion":"B"' in _versions(session, doc.id)[1].content_json
    # Not a SHA-256: 422 on the field, nothing saved.
    for bad in ("abc", "g" * 64, ""):
        r = client.put(url, json={"content": {**TEXT, "conclusion": "C"}, "base_sha256": bad}, headers=h)
        body = r.json
        assert r.status_code == 422 and "base_sha256" in body["fields"], (bad, body)
    # Clients written before the field: not checked, the last save wins as before.
    r = client.put(url, json={"content": {**TEXT, "conclusion": "D"}}, headers=h)
    assert r.status_code == 200 and '"conclusion":"D"' in _versions(session, doc.id)[1].content_json
    assert _audited(session, doc.id, "document.edit") == 3
    spec: Any = client.get("/api/openapi.json").json
    ref = spec["paths"]["/api/documents/{document_id}/draft"]["put"]["requestBody"]["content"]["application/json"]
    assert "base_sha256" in spec["components"]["schemas"][ref["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]
