"""Ending a visit: only its treating physician (or a physician of its department) closes it, with a written
discharge diagnosis and a main ICD-10 code from the list in force; the visit's imaging orders still on the
worklist are shown and the physician decides what becomes of them. On a closed visit no new paper is created
but the discharge paper (and the report of an exam ordered in it); signed papers are still amended."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.break_glass import open_break_glass
from emr.access.users import create_user
from emr.core.exceptions import InvalidState, ValidationFailed
from emr.documents import service as documents
from emr.i18n import t
from emr.imaging import orders
from emr.models import AuditEntry, Document, Encounter, ImagingOrder
from emr.patients import encounters

from .conftest import ADMIN_ACTOR, PASSWORD, World, csrf_token, login, outpatient_visit


def _close_path(p: Any, enc: Any) -> str:
    return f"/patients/{p.id}/encounters/{enc.id}/close"


def _ultrasound(session: Session, world: World, p: Any, enc: Any) -> ImagingOrder:
    return orders.create_order(session, world.actor("physician"), {
        "patient_id": p.id, "encounter_id": enc.id, "modality": "US", "procedure_name": "Siêu âm ổ bụng",
    })


def _closed_visit(session: Session, world: World) -> tuple[Any, Any]:
    p, enc = outpatient_visit(session, world)
    encounters.close_encounter(session, world.actor("physician"), enc.id, "Viêm phổi thùy dưới phải",
                               main_code="J18.9")
    return p, enc


def test_a_nurse_may_neither_open_the_close_form_nor_close_the_visit(
    session: Session, world: World, client: Any
) -> None:
    p, enc = outpatient_visit(session, world)
    session.rollback()
    login(client, "nurse1")
    token = csrf_token(client, "/patients/")
    assert client.get(_close_path(p, enc)).status_code == 403
    r = client.post(_close_path(p, enc), data={"csrf_token": token, "discharge_diagnosis": "x"})
    assert r.status_code == 403
    chart = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert _close_path(p, enc) not in chart  # no "Kết thúc lượt khám" button for her
    with pytest.raises(encounters.NotTreatingPhysician):  # nor through the service
        encounters.close_encounter(session, world.actor("nurse"), enc.id, "Viêm phổi", main_code="J18.9")
    session.expire_all()
    assert session.get(Encounter, enc.id).status == "open"  # type: ignore[union-attr]
    denied = session.scalars(select(AuditEntry).where(AuditEntry.username == "nurse1",
                                                      AuditEntry.outcome == "denied")).all()
    assert denied


def test_a_physician_of_another_department_may_not_close_even_after_breaking_the_glass(
    session: Session, world: World, client: Any
) -> None:
    p, enc = outpatient_visit(session, world)
    k01 = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
    session.commit()
    other = create_user(session, ADMIN_ACTOR, "bskhac", PASSWORD, "physician", "BS. Khoa khác",
                        practising_cert_no="099/HCM-CCHN", department_id=k01.id)
    from emr.access.audit import Actor

    stranger = Actor(other.id, "bskhac", "physician", "10.0.0.9")
    open_break_glass(session, stranger, p.id, "Cấp cứu, cần xem tiền sử bệnh")
    session.rollback()
    login(client, "bskhac")
    token = csrf_token(client, "/patients/")
    assert client.get(f"/patients/{p.id}").status_code == 200  # the glass opens the record to read
    assert _close_path(p, enc) not in client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert client.get(_close_path(p, enc)).status_code == 403
    r = client.post(_close_path(p, enc), data={"csrf_token": token, "discharge_diagnosis": "Viêm phổi",
                                               "main_code": "J18.9"})
    assert r.status_code == 403
    assert t("encounters.error.close_not_treating") in r.get_data(as_text=True)
    session.expire_all()
    assert session.get(Encounter, enc.id).status == "open"  # type: ignore[union-attr]


def test_a_physician_of_the_department_closes_with_text_and_icd10_codes(
    session: Session, world: World, client: Any
) -> None:
    p, enc = outpatient_visit(session, world)  # opened without any ICD-10 code
    session.rollback()
    login(client, "physician1")
    path = _close_path(p, enc)
    page = client.get(path).get_data(as_text=True)
    assert 'name="main_code"' in page and 'name="secondary_codes"' in page
    token = csrf_token(client, path)
    r = client.post(path, data={"csrf_token": token, "discharge_diagnosis": "x"})
    assert r.status_code == 422
    text = r.get_data(as_text=True)
    assert t("ehr.close.error.diagnosis") in text and t("ehr.close.error.main_code") in text
    r = client.post(path, data={"csrf_token": token, "discharge_diagnosis": "Viêm phổi", "main_code": "Z99.9"})
    assert r.status_code == 422 and t("encounters.error.icd10", codes="Z99.9") in r.get_data(as_text=True)
    r = client.post(path, data={"csrf_token": token, "discharge_diagnosis": "Viêm phổi",
                                "main_code": "J18.9 I10"})
    assert r.status_code == 422 and t("ehr.close.error.main_code_one") in r.get_data(as_text=True)
    session.expire_all()
    assert session.get(Encounter, enc.id).status == "open"  # type: ignore[union-attr]
    session.rollback()
    r = client.post(path, data={"csrf_token": token, "discharge_diagnosis": "Viêm phổi thùy dưới phải",
                                "main_code": "j18.9", "secondary_codes": "I10; J18.9"})
    assert r.status_code == 302
    session.expire_all()
    closed = session.get(Encounter, enc.id)
    assert closed is not None and closed.status == "closed" and closed.discharged_at is not None
    assert closed.discharge_diagnosis == "Viêm phổi thùy dưới phải"
    assert [d.icd10_code for d in closed.diagnoses] == ["J18.9", "I10"]  # MA_BENH_CHINH, then MA_BENH_KT


def test_the_main_code_at_discharge_replaces_the_admission_main_code_and_keeps_the_others(
    session: Session, world: World
) -> None:
    doctor = world.actor("physician")
    p, _ = outpatient_visit(session, world)
    enc = encounters.create_encounter(session, doctor, {"patient_id": p.id, "kind": "inpatient",
                                                        "department_code": "K19", "diagnoses": ["R51", "I10"]})
    colleague = create_user(session, ADMIN_ACTOR, "bscungkhoa", PASSWORD, "physician", "BS. Cùng khoa",
                            practising_cert_no="098/HCM-CCHN", department_id=enc.department_id)
    from emr.access.audit import Actor

    encounters.close_encounter(session, Actor(colleague.id, "bscungkhoa", "physician", None), enc.id,
                               "Chấn động não", main_code="S06.0")
    session.expire_all()
    # MA_BENH_CHINH is the main disease at the end of treatment: the symptom coded on admission gives way
    assert [d.icd10_code for d in session.get(Encounter, enc.id).diagnoses] == ["S06.0", "I10"]  # type: ignore[union-attr]


def test_pending_orders_are_shown_and_the_physician_decides(session: Session, world: World, client: Any) -> None:
    p, enc = outpatient_visit(session, world)
    us = _ultrasound(session, world, p, enc)
    session.rollback()
    login(client, "physician1")
    path = _close_path(p, enc)
    page = client.get(path).get_data(as_text=True)
    assert 'id="pending-orders"' in page and us.accession_number in page and "Siêu âm ổ bụng" in page
    token = csrf_token(client, path)
    data = {"csrf_token": token, "discharge_diagnosis": "Viêm phổi thùy dưới phải", "main_code": "J18.9"}
    r = client.post(path, data=data)
    assert r.status_code == 422 and t("ehr.close.error.pending_orders") in r.get_data(as_text=True)
    session.expire_all()
    assert session.get(Encounter, enc.id).status == "open"  # type: ignore[union-attr]
    session.rollback()
    assert client.post(path, data={**data, "pending": "keep"}).status_code == 302
    session.expire_all()
    assert session.get(Encounter, enc.id).status == "closed"  # type: ignore[union-attr]
    assert session.get(ImagingOrder, us.id).status == "scheduled"  # type: ignore[union-attr]  # outpatient follow-up


def test_pending_orders_cancelled_on_request_are_audited(session: Session, world: World) -> None:
    p, enc = outpatient_visit(session, world)
    us = _ultrasound(session, world, p, enc)
    with pytest.raises(ValidationFailed) as refused:
        encounters.close_encounter(session, world.actor("physician"), enc.id, "Viêm phổi", main_code="J18.9")
    assert refused.value.fields == {"pending_orders": "ehr.close.error.pending_orders"}
    session.rollback()
    encounters.close_encounter(session, world.actor("physician"), enc.id, "Viêm phổi", main_code="J18.9",
                               pending="cancel")
    session.expire_all()
    order = session.get(ImagingOrder, us.id)
    assert order is not None and order.status == "cancelled" and order.cancel_reason
    assert session.scalars(select(AuditEntry).where(AuditEntry.action == "order.cancel",
                                                    AuditEntry.object_id == str(us.id))).first() is not None


def test_no_new_paper_on_a_closed_visit_but_the_discharge_paper(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p, enc = outpatient_visit(session, world)
    note = documents.create_document(session, doctor, {"encounter_id": enc.id, "form_type": "progress_note",
                                                       "content": {"note": "Hết sốt"}})
    documents.mark_signed(session, doctor, note.id, 1)
    encounters.close_encounter(session, doctor, enc.id, "Viêm phổi thùy dưới phải", main_code="J18.9")
    with pytest.raises(InvalidState) as refused:
        documents.create_document(session, doctor, {"encounter_id": enc.id, "form_type": "progress_note",
                                                    "content": {"note": "Ghi sau ra viện"}})
    assert refused.value.key == "documents.error.visit_closed"
    session.rollback()
    paper = documents.create_document(session, doctor, {"encounter_id": enc.id, "form_type": "discharge_summary",
                                                        "content": {"summary": "Ổn định", "treatment": "Kháng sinh",
                                                                    "discharge_diagnosis": "Viêm phổi",
                                                                    "result": "1"}})
    assert paper.encounter_id == enc.id
    amended = documents.amend_document(session, doctor, note.id, {"note": "Hết sốt, ăn uống được"}, "bổ sung")
    assert amended.current_version == 2  # a signed paper of the visit is still amended (versioned, audited)


def test_the_report_of_an_exam_ordered_in_the_visit_is_still_written(session: Session, world: World) -> None:
    p, enc = outpatient_visit(session, world)
    ct = orders.create_order(session, world.actor("physician"), {
        "patient_id": p.id, "encounter_id": enc.id, "modality": "CT", "procedure_name": "CT sọ"})
    ct.status = "images_available"
    session.commit()
    encounters.close_encounter(session, world.actor("physician"), enc.id, "Đau đầu", main_code="R51")
    report = documents.create_document(session, world.actor("radiologist"), {
        "encounter_id": enc.id, "form_type": "radiology_report", "order_id": ct.id,
        "content": {"findings": "Không thấy tổn thương.", "conclusion": "Bình thường."}})
    assert report.order_id == ct.id


def test_web_form_and_api_refuse_a_paper_on_a_closed_visit(
    session: Session, world: World, client: Any, tokens: dict[str, str]
) -> None:
    p, enc = _closed_visit(session, world)
    session.rollback()
    login(client, "physician1")
    form = f"/patients/{p.id}/documents/new?form_type=progress_note"
    page = client.get(form).get_data(as_text=True)
    assert f'value="{enc.id}"' not in page and t("documents.closed_visits_only_discharge") in page
    assert f'value="{enc.id}"' in client.get(f"/patients/{p.id}/documents/new?form_type=discharge_summary")\
        .get_data(as_text=True)
    token = csrf_token(client, form)
    r = client.post(form, data={"csrf_token": token, "encounter_id": str(enc.id), "c_note": "Ghi sau ra viện"})
    assert r.status_code == 422 and t("documents.error.visit_closed") in r.get_data(as_text=True)
    api = client.post("/api/documents", json={"encounter_id": enc.id, "form_type": "progress_note",
                                              "content": {"note": "Ghi sau ra viện"}},
                      headers={"Authorization": f"Bearer {tokens['physician']}"})
    assert api.status_code == 409 and api.get_json()["message"] == t("documents.error.visit_closed")
    session.expire_all()
    assert session.scalars(select(Document).where(Document.encounter_id == enc.id)).all() == []
