"""One radiology report per exam (imaging order).

A walkthrough wrote and signed a second, contradicting report for an exam that already had a signed one; the
chart then listed two signed reports and the reading page showed only the newer. The service refuses a
report for an exam with one that is not cancelled (draft, being signed, signed or amended) and names it;
the chart offers "Xem kết quả" instead of "Viết kết quả"; the reading page shows the signed report in force.
"""

from __future__ import annotations

import re
import threading

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from emr.documents import service as documents
from emr.i18n import t
from emr.models import Document, DocumentVersion, ImagingOrder, Study

from .conftest import World, csrf_token, linked_ct_study, login

FIRST = {"findings": "Không thấy tổn thương khu trú.", "conclusion": "Chưa thấy bất thường."}
SECOND = {"findings": "Khối choán chỗ thùy trán phải.", "conclusion": "U não, đề nghị MRI."}


def _order(session: Session, study: Study) -> ImagingOrder:
    order = session.get(ImagingOrder, study.order_id)
    assert order is not None
    return order


def _new(session: Session, world: World, order: ImagingOrder, role: str, content: dict[str, str]) -> Document:
    return documents.create_document(session, world.actor(role), {
        "encounter_id": order.encounter_id, "form_type": "radiology_report", "order_id": order.id,
        "content": content,
    })


def _live(session: Session, order_id: int) -> int:
    return int(session.scalar(select(func.count(Document.id)).where(
        Document.order_id == order_id, Document.form_type == "radiology_report", Document.status != "cancelled"
    )) or 0)


def test_a_second_report_is_refused_whether_the_first_is_a_draft_or_signed(session: Session, world: World) -> None:
    order = _order(session, linked_ct_study(session, world))
    first = _new(session, world, order, "radiologist", FIRST)
    for role in ("physician", "radiologist"):  # nobody, the author included, starts a second one
        with pytest.raises(documents.ReportExists) as draft:
            _new(session, world, order, role, SECOND)
        session.rollback()
        assert (draft.value.document_id, draft.value.status, draft.value.http_status) == (first.id, "draft", 409)
        assert f"văn bản số {first.id}" in t(draft.value.key, **draft.value.params)

    documents.mark_signed(session, world.actor("radiologist"), first.id, 1)
    with pytest.raises(documents.ReportExists) as signed:
        _new(session, world, order, "physician", SECOND)
    session.rollback()
    assert signed.value.document_id == first.id and signed.value.status == "signed"
    assert "«Tạo bản sửa đổi»" in t(signed.value.key, **signed.value.params)
    assert _live(session, order.id) == 1

    # An amendment in progress is still the exam's report.
    documents.amend_document(session, world.actor("radiologist"), first.id, SECOND, "bổ sung")
    with pytest.raises(documents.ReportExists):
        _new(session, world, order, "physician", SECOND)
    session.rollback()


def test_after_cancelling_the_report_a_new_one_may_be_written_and_the_old_one_not_restored(
    session: Session, world: World
) -> None:
    order = _order(session, linked_ct_study(session, world))
    reader = world.actor("radiologist")
    first = _new(session, world, order, "radiologist", FIRST)
    documents.mark_signed(session, reader, first.id, 1)
    documents.cancel_document(session, reader, first.id, "nhầm bệnh nhân")
    second = _new(session, world, order, "radiologist", SECOND)  # the exam has no report in force any more
    with pytest.raises(documents.ReportExists) as restored:
        documents.restore_document(session, reader, first.id, "khôi phục")
    session.rollback()
    assert restored.value.document_id == second.id
    assert session.get(Document, first.id).status == "cancelled"  # type: ignore[union-attr]
    assert _live(session, order.id) == 1


def test_two_reports_created_at_once_one_succeeds(session: Session, world: World, engine: object) -> None:
    """Two sessions (two requests) creating the exam's report together: one report, the other refused."""
    order = _order(session, linked_ct_study(session, world))
    data = {"encounter_id": order.encounter_id, "form_type": "radiology_report", "order_id": order.id,
            "content": FIRST}
    actors = [world.actor("physician"), world.actor("radiologist")]
    session.rollback()  # SQLite: this session's transaction would hold the write lock
    factory = sessionmaker(bind=engine)  # type: ignore[call-overload]
    start = threading.Barrier(2)
    outcome: list[str] = []

    def write(actor: object) -> None:
        with factory() as s:
            start.wait()
            try:
                documents.create_document(s, actor, data)  # type: ignore[arg-type]
                outcome.append("created")
            except documents.ReportExists:
                s.rollback()
                outcome.append("refused")

    threads = [threading.Thread(target=write, args=(a,)) for a in actors]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(outcome) == ["created", "refused"]
    assert _live(session, data["order_id"]) == 1  # type: ignore[arg-type]


def test_chart_offers_view_report_once_one_exists_and_write_only_to_radiologists(
    app: Flask, session: Session, world: World
) -> None:
    study = linked_ct_study(session, world)
    order = _order(session, study)
    chart = f"/patients/{order.patient_id}"
    write = t("documents.write_report")
    session.rollback()
    doctor, reader = app.test_client(), app.test_client()
    login(doctor, "physician1")
    login(reader, "radiologist1")
    page = reader.get(chart).get_data(as_text=True)
    assert write in page  # the radiologist reads the images and writes the exam's report
    assert write not in doctor.get(chart).get_data(as_text=True)

    first = _new(session, world, _order(session, study), "radiologist", FIRST)
    first_id = first.id
    session.rollback()
    for client in (doctor, reader):
        page = client.get(chart).get_data(as_text=True)
        assert write not in page
        assert re.search(rf'href="/documents/{first_id}">{t("documents.view_report")}</a>', page)


def test_new_report_form_points_to_the_existing_report_and_refuses_to_save(
    app: Flask, session: Session, world: World
) -> None:
    order = _order(session, linked_ct_study(session, world))
    first = _new(session, world, order, "radiologist", FIRST)
    documents.mark_signed(session, world.actor("radiologist"), first.id, 1)
    ids = {"first": first.id, "order": order.id, "visit": order.encounter_id, "patient": order.patient_id}
    session.rollback()
    client: FlaskClient = app.test_client()
    login(client, "physician1")
    url = f"/patients/{ids['patient']}/documents/new?form_type=radiology_report&order_id={ids['order']}"
    page = client.get(url).get_data(as_text=True)
    assert f'href="/documents/{ids["first"]}"' in page and "Tạo bản sửa đổi" in page
    token = csrf_token(client, url)
    r = client.post(url, data={"csrf_token": token, "encounter_id": str(ids["visit"]),
                               "order_id": str(ids["order"]), "c_findings": SECOND["findings"],
                               "c_conclusion": SECOND["conclusion"]})
    assert r.status_code == 409
    assert f"văn bản số {ids['first']}" in r.get_data(as_text=True)
    session.expire_all()
    assert _live(session, ids["order"]) == 1


def test_reading_page_shows_the_signed_report_over_a_newer_draft(
    app: Flask, session: Session, world: World
) -> None:
    """Data written before the rule (two reports for one exam): the signed one is shown, not the newer draft."""
    study = linked_ct_study(session, world)
    order = _order(session, study)
    first = _new(session, world, order, "radiologist", FIRST)
    documents.mark_signed(session, world.actor("radiologist"), first.id, 1)
    stray = Document(patient_id=order.patient_id, encounter_id=order.encounter_id, order_id=order.id,
                     form_type="radiology_report", status="draft", current_version=1, record_type="ordinary",
                     retention_class="10y", created_by=world.users["physician"].id)
    session.add(stray)
    session.flush()
    session.add(DocumentVersion(document_id=stray.id, number=1, content_json=documents.canonical_json(SECOND),
                                content_sha256="0" * 64, created_by=world.users["physician"].id))
    url = f"/reading/studies/{study.id}"
    session.commit()
    client = app.test_client()
    login(client, "radiologist1")
    page = client.get(url).get_data(as_text=True)
    assert FIRST["findings"] in page and SECOND["findings"] not in page
