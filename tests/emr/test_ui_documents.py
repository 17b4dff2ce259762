"""Document screens: per-form fields and errors, draft edit, amendment with reason, cancel/restore, versions."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.documents import service as documents
from emr.i18n import t
from emr.models import AuditEntry, Document
from emr.patients import service as patients
from emr.schemas import FORM_CONTENT

from .conftest import World, csrf_token, login, outpatient_visit, patient_data

VALID: dict[str, dict[str, str]] = {
    "outpatient_record": {"chief_complaint": "Ho kéo dài", "examination": "Phổi ran nổ", "conclusion": "Viêm phổi"},
    "admission_note": {"reason": "Sốt cao", "examination": "Tỉnh, sốt 39°C", "initial_diagnosis": "Sốt xuất huyết?"},
    "progress_note": {"note": "Ngày 2: hết sốt, ăn uống được"},
    "discharge_summary": {
        "summary": "Điều trị 5 ngày",
        "discharge_diagnosis": "Viêm phổi",
        "treatment": "Kháng sinh",
        "result": "2",
    },
    "radiology_report": {"findings": "Đám mờ đáy phổi phải", "conclusion": "Viêm phổi thùy dưới phải"},
}




def _form(values: dict[str, str]) -> dict[str, str]:
    return {f"c_{k}": v for k, v in values.items()}


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))


def test_every_form_type_validates_its_own_fields_and_keeps_what_was_typed(
    client: FlaskClient, world: World, session: Session
) -> None:
    p, enc = outpatient_visit(session, world)
    login(client, "physician1")
    pick = _page(client.get(f"/patients/{p.id}/documents/new"))
    for form_type in FORM_CONTENT:
        assert t(f"documents.form.{form_type}") in pick
    for form_type, valid in VALID.items():
        url = f"/patients/{p.id}/documents/new?form_type={form_type}"
        page = _page(client.get(url))
        for name in FORM_CONTENT[form_type].model_fields:
            assert t(f"documents.field.{name}") in page, (form_type, name)
            assert f'name="c_{name}"' in page
        token = csrf_token(client, url)
        # Leave the first required field empty, type the others.
        required = [n for n, i in FORM_CONTENT[form_type].model_fields.items() if i.is_required()]
        typed = {**valid, required[0]: "   "}
        r = client.post(url, data={"csrf_token": token, "encounter_id": str(enc.id), **_form(typed)})
        page = _page(r)
        assert r.status_code == 422, form_type
        assert re.search(rf'id="err-c_{required[0]}">{re.escape(t("errors.field_required"))}', page), form_type
        for name, value in valid.items():
            if name != required[0] and name != "result":
                assert f">{value}</textarea>" in page, (form_type, name)  # nothing typed is lost
        r = client.post(url, data={"csrf_token": token, "encounter_id": str(enc.id), **_form(valid)})
        assert r.status_code == 302, (form_type, _page(r)[:2000])
    session.expire_all()
    docs = documents.list_documents(session, p.id)
    assert sorted(d.form_type for d in docs) == sorted(VALID)
    assert all(d.status == "draft" and d.current_version == 1 for d in docs)


def test_bad_choice_and_foreign_encounter_are_refused_beside_the_field(
    client: FlaskClient, world: World, session: Session
) -> None:
    p, enc = outpatient_visit(session, world)
    other = patients.create_patient(
        session,
        world.actor("physician"),
        patient_data(cccd="001058004321", sex="M", birth_date="1958-11-02", bhyt_number=None),
    )
    login(client, "physician1")
    url = f"/patients/{p.id}/documents/new?form_type=discharge_summary"
    token = csrf_token(client, url)
    bad = {**VALID["discharge_summary"], "result": "9"}
    r = client.post(url, data={"csrf_token": token, "encounter_id": str(enc.id), **_form(bad)})
    assert r.status_code == 422
    assert re.search(rf'id="err-c_result">{re.escape(t("errors.field_choice"))}', _page(r))
    # A radiology report naming another patient's order is refused, not silently attached.
    from emr.imaging import orders

    foreign = orders.create_order(
        session, world.actor("physician"), {"patient_id": other.id, "modality": "CT", "procedure_name": "CT sọ"}
    )
    session.commit()
    url = f"/patients/{p.id}/documents/new?form_type=radiology_report"
    r = client.post(
        url,
        data={
            "csrf_token": token,
            "encounter_id": str(enc.id),
            "order_id": str(foreign.id),
            **_form(VALID["radiology_report"]),
        },
    )
    assert r.status_code == 422 and re.search(rf'id="err-order_id">{re.escape(t("documents.error.order"))}', _page(r))


def test_draft_edit_then_amend_with_reason_then_cancel_and_restore(
    client: FlaskClient, world: World, session: Session
) -> None:
    p, enc = outpatient_visit(session, world)
    doctor = world.actor("physician")
    doc = documents.create_document(
        session,
        doctor,
        {"encounter_id": enc.id, "form_type": "outpatient_record", "content": VALID["outpatient_record"]},
    )
    session.commit()
    login(client, "physician1")
    edit_url = f"/documents/{doc.id}/edit"
    page = _page(client.get(edit_url))
    assert "Ho kéo dài</textarea>" in page and t("documents.mode.edit", version=1) in page
    token = csrf_token(client, edit_url)
    changed = {**VALID["outpatient_record"], "conclusion": "Viêm phổi cộng đồng"}
    assert client.post(edit_url, data={"csrf_token": token, **_form(changed)}).status_code == 302
    session.expire_all()
    assert documents.document_dict(session.get(Document, doc.id))["versions"][0]["content"]["conclusion"] == (
        "Viêm phổi cộng đồng"
    )
    assert len(session.get(Document, doc.id).versions) == 1  # a draft is edited in place

    documents.mark_signed(session, doctor, doc.id, 1)
    session.commit()
    page = _page(client.get(edit_url))
    assert t("documents.mode.amend", version=1) in page and 'name="reason"' in page
    amended = {**changed, "conclusion": "Viêm phổi thùy dưới phải"}
    r = client.post(edit_url, data={"csrf_token": token, **_form(amended), "reason": ""})
    page = _page(r)
    assert r.status_code == 422
    assert re.search(rf'id="err-reason">{re.escape(t("documents.error.reason_required"))}', page)
    assert "Viêm phổi thùy dưới phải</textarea>" in page  # the amendment typed is kept
    r = client.post(edit_url, data={"csrf_token": token, **_form(amended), "reason": "Bổ sung kết quả CT"})
    assert r.status_code == 302
    view = _page(client.get(f"/documents/{doc.id}"))
    assert t("documents.status.amended") in view
    assert t("documents.amends", version=1) + ": Bổ sung kết quả CT" in view
    assert "Viêm phổi cộng đồng" in view  # old version kept, and still the valid signed one until v2 is signed
    assert t("documents.vstatus.superseded") not in view and t("documents.amendment_pending", version=1) in view

    cancel = client.post(f"/documents/{doc.id}/cancel", data={"csrf_token": token, "reason": " "})
    assert cancel.status_code == 422
    assert t("documents.error.reason_required") in _page(cancel)
    assert (
        client.post(f"/documents/{doc.id}/cancel", data={"csrf_token": token, "reason": "Nhầm bệnh nhân"}).status_code
        == 302
    )
    view = _page(client.get(f"/documents/{doc.id}"))
    assert t("documents.cancelled_because", reason="Nhầm bệnh nhân") in view and t("documents.restore") in view
    assert client.get(edit_url).status_code == 409
    r = client.post(f"/documents/{doc.id}/restore", data={"csrf_token": token, "reason": "Đúng bệnh nhân"})
    assert r.status_code == 302
    session.expire_all()
    assert session.get(Document, doc.id).status == "amended"
    actions = [
        (a.action, a.username)
        for a in session.scalars(select(AuditEntry).where(AuditEntry.object_type == "document").order_by(AuditEntry.id))
    ]
    for action in (
        "document.create",
        "document.edit",
        "document.sign",
        "document.amend",
        "document.cancel",
        "document.restore",
    ):
        assert action in [a for a, _ in actions], action


@pytest.mark.parametrize("role", ["nurse"])
def test_readers_see_documents_without_edit_buttons(app: Any, world: World, session: Session, role: str) -> None:
    p, enc = outpatient_visit(session, world)
    doc = documents.create_document(
        session,
        world.actor("physician"),
        {"encounter_id": enc.id, "form_type": "progress_note", "content": VALID["progress_note"]},
    )
    session.commit()
    c = app.test_client()
    login(c, f"{role}1")
    view = _page(c.get(f"/documents/{doc.id}"))
    assert "Ngày 2: hết sốt" in view
    assert f"/documents/{doc.id}/edit" not in view and f"/documents/{doc.id}/cancel" not in view
    chart = _page(c.get(f"/patients/{p.id}"))
    assert f"/documents/{doc.id}" in chart and f"/patients/{p.id}/documents/new" not in chart
