"""The radiographer's (technician's) day, the reading list's date filters, links on the chart, and the
break-glass review (migration 0022).

Found by a new user walking through the demo as ``ktv``: the home page was a
search box only; ``/reading/`` answered 403 while ``/reading/studies/N``
opened; the chart listed documents whose links answered 403; the reading
list dropped a bad or reversed date range without a word; the admin's
break-glass list had no "reviewed" mark and no way to see what was opened.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from emr.access import break_glass
from emr.access.audit import Actor
from emr.access.care import OutOfCareScope
from emr.access.users import create_user
from emr.core.clock import local_day_bounds, local_today
from emr.core.exceptions import ConflictError, PermissionDenied, ValidationFailed
from emr.core.states import exam_progress
from emr.documents import service as documents
from emr.imaging import orders
from emr.models import AuditEntry, BreakGlassAccess, ImagingOrder, Study
from emr.patients import encounters as enc_svc
from emr.patients import service as patients
from emr.reading import service as reading

from . import test_prices as prices
from .conftest import ADMIN_ACTOR, PASSWORD, World, csrf_token, login, patient_data

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)


def _order(session: Session, world: World, name: str, cccd: str, modality: str = "CT") -> ImagingOrder:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data(full_name=name, cccd=cccd, bhyt_number=None))
    return orders.create_order(session, doctor, {"patient_id": p.id, "modality": modality,
                                                 "procedure_name": f"{modality} {name}"})


def _link(session: Session, order: ImagingOrder, study_date: str = "20261208") -> Study:
    study = Study(orthanc_id=f"o-{order.id}", study_instance_uid=order.study_instance_uid, state="linked",
                  order_id=order.id, patient_id=order.patient_id, study_date=study_date, modalities=order.modality)
    order.status = "images_available"
    session.add(study)
    session.commit()
    return study


def _day(session: Session, world: World) -> dict[str, Any]:
    """Orders around today's facility day: its first and last minute, just before and just after it,
    each status once, a cancelled one."""
    start, end = local_day_bounds(local_today())
    o = {
        "early": _order(session, world, "Lê Thị Sớm", "079190000011"),
        "late": _order(session, world, "Phạm Văn Muộn", "079190000012", "MR"),
        "yesterday": _order(session, world, "Đỗ Thị Hôm Qua", "079190000013"),
        "tomorrow": _order(session, world, "Vũ Văn Ngày Mai", "079190000014"),
        "running": _order(session, world, "Hồ Thị Đang Chụp", "079190000015", "US"),
        "stopped": _order(session, world, "Ngô Văn Dừng", "079190000016", "DX"),
        "cancelled": _order(session, world, "Trịnh Thị Hủy", "079190000017"),
    }
    o["early"].scheduled_at = start + timedelta(minutes=1)
    o["late"].scheduled_at = end - timedelta(minutes=1)
    o["yesterday"].scheduled_at = start - timedelta(minutes=1)
    o["tomorrow"].scheduled_at = end
    for key in ("running", "stopped", "cancelled"):
        o[key].scheduled_at = start + timedelta(hours=3)
    o["running"].status = "in_progress"
    o["stopped"].status = "discontinued"
    o["cancelled"].status = "cancelled"
    session.commit()
    o["study"] = _link(session, o["early"])
    return o


def test_exam_progress_names_the_exam_not_the_report() -> None:
    assert [exam_progress(s) for s in ("scheduled", "in_progress", "discontinued", "completed",
                                       "images_available", "reported", "cancelled")] == [
        "waiting", "in_progress", "stopped", "done", "done", "done", "cancelled"]


def test_day_exams_are_todays_in_facility_time_earliest_first_and_audited(session: Session, world: World) -> None:
    o = _day(session, world)
    exams = orders.day_exams(session, world.actor("technician"))
    assert [e.order_id for e in exams] == [o[k].id for k in ("early", "running", "stopped", "late")]
    by_id = {e.order_id: e for e in exams}
    assert by_id[o["early"].id].progress == "done" and by_id[o["early"].id].study_ids == (o["study"].id,)
    assert by_id[o["running"].id].progress == "in_progress" and by_id[o["stopped"].id].progress == "stopped"
    assert by_id[o["late"].id].progress == "waiting" and by_id[o["late"].id].study_ids == ()
    assert by_id[o["late"].id].patient_name == "Phạm Văn Muộn" and by_id[o["late"].id].modality == "MR"
    only_mr = orders.day_exams(session, world.actor("technician"), modality="MR")
    assert [e.order_id for e in only_mr] == [o["late"].id]
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "order.worklist")
                           .order_by(AuditEntry.id)).all()
    assert [r.username for r in rows] == ["technician1", "technician1"]
    assert '"results": 4' in rows[0].details and '"modality": "MR"' in rows[1].details


def test_day_exams_apply_the_care_scope_before_the_limit(session: Session, world: World) -> None:
    """A user with a narrower care sees their own patients' exams even when others' come first
    (the scope was applied after the LIMIT, so a full page of others' exams hid them)."""
    k20 = enc_svc.ensure_department(session, "K20", "Khoa Ngoại")
    session.commit()
    other = create_user(session, ADMIN_ACTOR, "physician_k20", PASSWORD, "physician", "Trần Văn Ngoại",
                        practising_cert_no="099/HCM-CCHN", department_id=k20.id)
    outsider = Actor(other.id, other.username, other.role, "10.0.0.6")
    theirs = patients.create_patient(session, outsider, patient_data(full_name="Lý Thị Khác", cccd="079190000021",
                                                                      bhyt_number=None))
    first = orders.create_order(session, outsider, {"patient_id": theirs.id, "modality": "CT",
                                                    "procedure_name": "CT ngực"})
    mine = _order(session, world, "Lê Thị Của Tôi", "079190000022")
    start, _ = local_day_bounds(local_today())
    first.scheduled_at = start + timedelta(minutes=1)
    mine.scheduled_at = start + timedelta(minutes=2)
    session.commit()
    doctor = world.actor("physician")
    with pytest.raises(OutOfCareScope):
        patients.get_patient(session, doctor, theirs.id)  # the premise: not in this physician's care
    assert [e.order_id for e in orders.day_exams(session, doctor, limit=1)] == [mine.id]
    assert [e.order_id for e in orders.day_exams(session, outsider, limit=1)] == [first.id]


def test_the_technicians_home_lists_the_day_and_every_line_opens(client: FlaskClient, session: Session,
                                                                 world: World) -> None:
    o = _day(session, world)
    accession, study_id = o["late"].accession_number, o["study"].id
    session.rollback()  # SQLite: the test session holds no lock while the app writes (nothing read after it)
    login(client, "technician1")
    home = client.get("/", follow_redirects=True)
    page = home.get_data(as_text=True)
    assert home.status_code == 200 and "Ca chụp hôm nay" in page
    for name in ("Lê Thị Sớm", "Phạm Văn Muộn", "Hồ Thị Đang Chụp", "Ngô Văn Dừng"):
        assert name in page, name
    for name in ("Đỗ Thị Hôm Qua", "Vũ Văn Ngày Mai", "Trịnh Thị Hủy"):
        assert name not in page, name
    for label in ("Chờ chụp", "Đang chụp", "Dừng giữa chừng", "Đã chụp xong", accession):
        assert label in page, label
    links = re.findall(r'href="(/(?:patients|reading/studies)/\d+)"', page)
    assert f"/reading/studies/{study_id}" in links and len(links) == 5  # 4 charts, 1 study
    for link in links:
        assert client.get(link).status_code == 200, link
    mr_only = client.get("/patients/?modality=MR").get_data(as_text=True)
    assert "Phạm Văn Muộn" in mr_only and "Lê Thị Sớm" not in mr_only
    # A search replaces the list; a physician's home has their visits, not the technician's day.
    assert "Ca chụp hôm nay" not in client.get("/patients/?q=le").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    login(client, "physician1")
    assert "Ca chụp hôm nay" not in client.get("/patients/").get_data(as_text=True)


def _report(session: Session, world: World, order: ImagingOrder, text: str) -> Any:
    return documents.create_document(session, world.actor("radiologist"), {
        "encounter_id": order.encounter_id, "form_type": "radiology_report", "order_id": order.id,
        "content": {"findings": text, "conclusion": text},
    })


def test_the_reading_list_opens_for_technicians_scoped_to_their_care(client: FlaskClient, session: Session,
                                                                     world: World) -> None:
    """What the nav shows opens: the technician's list has the studies in their care (those they may open on
    /reading/studies/N), says so, and shows no report content; an old study outside their care is absent."""
    o = _day(session, world)
    _report(session, world, o["early"], "NỘI-DUNG-KẾT-QUẢ-RIÊNG")
    old = _order(session, world, "Bùi Văn Cũ", "079190000018")
    old.scheduled_at = old.ordered_at = old.scheduled_at - timedelta(days=60)
    session.commit()
    old_study = _link(session, old, "20261008")
    mine, theirs = (o["study"].id, o["study"].study_instance_uid), (old_study.id, old_study.study_instance_uid)
    session.rollback()
    login(client, "technician1")
    nav = client.get("/patients/").get_data(as_text=True)
    assert 'href="/reading/"' in nav and "Ca chụp đã có ảnh" in nav
    r = client.get("/reading/")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Ca chụp đã có ảnh" in page and "Kiểm tra ảnh" in page
    assert f'data-study-uid="{mine[1]}"' in page
    assert theirs[1] not in page and "Bùi Văn Cũ" not in page
    assert "NỘI-DUNG-KẾT-QUẢ-RIÊNG" not in page and "Bản nháp" in page  # the status, not the text
    assert client.get(f"/reading/studies/{mine[0]}").status_code == 200
    assert client.get(f"/reading/studies/{theirs[0]}").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    login(client, "radiologist1")
    page = client.get("/reading/").get_data(as_text=True)
    assert "Danh sách ca chụp cần đọc" in page and "Đọc ca" in page and "Kiểm tra ảnh" not in page


def test_the_chart_shows_only_the_links_the_user_may_open(client: FlaskClient, session: Session,
                                                          world: World) -> None:
    o = _day(session, world)
    doc_id = _report(session, world, o["early"], "Không thấy bất thường.").id
    chart = f"/patients/{o['early'].patient_id}"
    session.rollback()
    login(client, "technician1")
    page = client.get(chart).get_data(as_text=True)
    assert client.get(f"/documents/{doc_id}").status_code == 403  # what the link would have opened
    assert f"/documents/{doc_id}" not in page and "Hồ sơ, phiếu" not in page
    assert 'class="study-link"' in page  # images: the technician may view them
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    login(client, "physician1")
    page = client.get(chart).get_data(as_text=True)
    assert f'href="/documents/{doc_id}"' in page and client.get(f"/documents/{doc_id}").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    login(client, "nurse1")  # reads documents, may not view images: the study is named, not linked
    page = client.get(chart).get_data(as_text=True)
    assert f'href="/documents/{doc_id}"' in page
    assert 'class="study-link"' not in page and "/viewer/?study=" not in page and "Đã có ảnh" in page


def test_the_chart_shows_visits_and_diagnoses_only_to_roles_that_read_encounters(
        client: FlaskClient, session: Session, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A technician has no encounter.read (the JSON API refuses them the visits): their chart neither shows
    nor loads the visits and their ICD-10 diagnoses; a physician's and a nurse's chart show them."""
    from emr.patients import encounters
    from emr.web import patients as patient_pages

    o = _day(session, world)
    pid = o["early"].patient_id
    visit = encounters.create_encounter(session, world.actor("physician"), {
        "patient_id": pid, "kind": "outpatient", "department_code": world.department_code,
        "diagnoses": ["S06.0", "R51"]})
    code = visit.visit_code
    session.rollback()
    loaded: list[int] = []
    real = encounters.list_encounters

    def spy(s: Any, patient_id: int) -> Any:
        loaded.append(patient_id)
        return real(s, patient_id)

    monkeypatch.setattr(patient_pages.encounters, "list_encounters", spy)
    login(client, "technician1")
    r = client.get(f"/patients/{pid}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Lê Thị Sớm" in page and 'class="study-link"' in page
    assert code not in page and "S06.0" not in page and "R51" not in page and 'id="chart-encounters"' not in page
    assert loaded == []  # not loaded at all, not only hidden
    assert client.get(f"/api/patients/{pid}/encounters").status_code in (401, 403)  # what the API says, too
    for user in ("physician1", "nurse1"):
        client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
        login(client, user)
        page = client.get(f"/patients/{pid}").get_data(as_text=True)
        assert code in page and "S06.0, R51" in page and 'id="chart-encounters"' in page, user
    assert loaded == [pid, pid]


def test_reading_list_date_filters_say_what_is_wrong_and_keep_what_was_typed(client: FlaskClient, session: Session,
                                                                              world: World) -> None:
    o = _day(session, world)
    later = _order(session, world, "Cao Văn Sau", "079190000019")
    _link(session, later, "20261210")
    today_uid = o["study"].study_instance_uid
    session.rollback()
    login(client, "radiologist1")
    r = client.get("/reading/?date_from=2026-13-45&date_to=")
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "«Từ ngày» không phải là ngày hợp lệ: «2026-13-45»" in page
    assert 'name="date_from" value="2026-13-45"' in page and 'type="text" name="date_from"' in page
    assert "Lê Thị Sớm" not in page  # nothing listed as if unfiltered
    r = client.get("/reading/?date_from=2026-12-10&date_to=2026-12-08&modality=CT")
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "«Từ ngày» (10/12/2026) đang sau «Đến ngày» (08/12/2026)" in page
    assert 'value="2026-12-10"' in page and 'value="2026-12-08"' in page and '<option value="CT" selected' in page
    # Typed by hand as Vietnamese forms write dates: read, applied.
    r = client.get("/reading/?date_from=09/12/2026&date_to=31/12/2026")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Cao Văn Sau" in page and "Lê Thị Sớm" not in page
    assert 'type="date" name="date_from" value="2026-12-09"' in page  # shown again in the field's own form
    assert today_uid in client.get("/reading/?date_from=2026-12-08&date_to=2026-12-08").get_data(
        as_text=True)


def _many_studies(session: Session, order: ImagingOrder, count: int) -> None:
    """``count`` more linked studies of ``order`` (Core inserts: newer than every study before them)."""
    session.execute(insert(Study), [
        {"orthanc_id": f"bulk-{order.id}-{i}", "study_instance_uid": f"1.2.826.0.1.{order.id}.{i}",
         "state": "linked", "order_id": order.id, "patient_id": order.patient_id, "study_date": "20261208",
         "modalities": order.modality} for i in range(count)])
    session.commit()


def test_the_reading_list_never_drops_a_study_in_care_behind_others(client: FlaskClient, session: Session,
                                                                    world: World) -> None:
    """The list's query is capped (2 × 300 studies, then ranked): the care scope and the report status filter
    are in the query, so more than that many newer studies outside the user's care, or of another status,
    never push out an older study the user may open."""
    o = _day(session, world)  # o["study"]: today's CT of Lê Thị Sớm, no report (unread), in the technician's care
    mine = o["study"]
    away = _order(session, world, "Bùi Văn Xa", "079190000021")
    away.scheduled_at = away.ordered_at = away.scheduled_at - timedelta(days=60)  # outside the technician's care
    session.commit()
    limit = 2 * reading.WORKLIST_LIMIT
    _many_studies(session, away, limit + 1)
    session.rollback()
    login(client, "technician1")
    page = client.get("/reading/").get_data(as_text=True)
    assert f'data-study-uid="{mine.study_instance_uid}"' in page and "Bùi Văn Xa" not in page
    # Newer studies in care whose report is signed: the unread one still comes when asked for.
    signed = o["late"]
    documents.mark_signed(session, world.actor("radiologist"), _report(session, world, signed, "Bình thường.").id, 1)
    _many_studies(session, signed, limit + 1)
    session.rollback()
    page = client.get("/reading/?status=unread").get_data(as_text=True)
    assert f'data-study-uid="{mine.study_instance_uid}"' in page and "Phạm Văn Muộn" not in page
    page = client.get("/reading/?status=signed").get_data(as_text=True)
    assert page.count("Phạm Văn Muộn") >= reading.WORKLIST_LIMIT and mine.study_instance_uid not in page


def test_the_reading_list_is_audited_once_per_listing_with_what_it_showed(client: FlaskClient, session: Session,
                                                                          world: World) -> None:
    _day(session, world)
    other = _order(session, world, "Bùi Văn Cũ", "079190000018")
    other.scheduled_at = other.ordered_at = other.scheduled_at - timedelta(days=60)
    session.commit()
    _link(session, other, "20261008")  # unread: on the radiologist's list, outside the technician's care
    session.rollback()
    login(client, "technician1")
    assert client.get("/reading/?modality=CT").status_code == 200
    assert client.get("/reading/?date_from=2026-13-45").status_code == 422  # nothing listed: nothing audited
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    login(client, "radiologist1")
    assert client.get("/reading/").status_code == 200
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "reading.worklist")
                           .order_by(AuditEntry.id)).all()
    assert [(r.username, r.outcome, r.object_type) for r in rows] == [
        ("technician1", "success", "study"), ("radiologist1", "success", "study")]
    assert '"list": "reading"' in rows[0].details and '"modality": "CT"' in rows[0].details
    assert '"results": 1' in rows[0].details and '"results": 2' in rows[1].details
    assert all(r.patient_id is None for r in rows)  # one row per listing, not one per patient


# -- break-the-glass review (migration 0022) ------------------------------------------------------------


def _grant(session: Session, world: World) -> BreakGlassAccess:
    other = patients.create_patient(session, world.actor("records_clerk"),
                                    patient_data(full_name="Lý Thị Khẩn", cccd="079190000020", bhyt_number=None))
    grant = break_glass.open_break_glass(session, world.actor("technician"), other.id,
                                         "Cấp cứu, bác sĩ điều trị vắng mặt")
    # What the technician did while it lasted, and something before it (not the grant's).
    patients.get_patient(session, world.actor("technician"), other.id)
    return grant


def test_mark_reviewed_records_who_when_note_once_and_is_audited(session: Session, world: World) -> None:
    grant = _grant(session, world)
    rows = break_glass.recent_break_glass(session, world.actor("admin"))
    assert [(r.grant.id, r.reviewer, r.opened) for r in rows] == [(grant.id, None, (("patient.view", 1),))]
    assert break_glass.pending_count(session) == 1
    with pytest.raises(PermissionDenied):
        break_glass.mark_reviewed(session, world.actor("physician"), grant.id, "xem rồi")
    with pytest.raises(ValidationFailed):
        break_glass.mark_reviewed(session, world.actor("admin"), grant.id, "x" * 1001)
    session.rollback()
    marked = break_glass.mark_reviewed(session, world.actor("admin"), grant.id, "  Đã xác minh   với khoa ")
    assert marked.reviewed_by == world.users["admin"].id and marked.reviewed_at is not None
    assert marked.review_note == "Đã xác minh với khoa"
    with pytest.raises(ConflictError):
        break_glass.mark_reviewed(session, world.actor("admin"), grant.id, "ghi đè")
    session.expire_all()
    assert session.get(BreakGlassAccess, grant.id).review_note == "Đã xác minh với khoa"  # type: ignore[union-attr]
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "break_glass.reviewed")).one()
    assert (row.username, row.patient_id, row.object_id) == ("admin1", grant.patient_id, str(grant.id))
    assert break_glass.pending_count(session) == 0
    assert break_glass.recent_break_glass(session, world.actor("admin"), pending_only=True) == []


def test_the_review_page_links_what_was_opened_and_marks_reviewed(client: FlaskClient, session: Session,
                                                                  world: World) -> None:
    grant_id = _grant(session, world).id
    session.rollback()
    login(client, "admin1")
    page = client.get("/admin/break-glass").get_data(as_text=True)
    assert "Xem hồ sơ bệnh nhân × 1" in page and "Chưa xem xét: 1 lượt" in page
    link = re.search(r'class="audit-link" href="([^"]+)"', page)
    assert link is not None
    audit_page = client.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "Truy cập khẩn cấp hồ sơ bệnh nhân" in audit_page and "technician1" in audit_page
    assert "/patients/" not in page.split("<main>", 1)[1]  # the admin may not open charts: no link to one
    token = csrf_token(client, "/admin/break-glass")
    too_long = client.post(f"/admin/break-glass/{grant_id}/review", data={"csrf_token": token, "note": "ư" * 1001})
    assert too_long.status_code == 422 and "tối đa 1000 ký tự" in too_long.get_data(as_text=True)
    assert "ư" * 1001 in too_long.get_data(as_text=True)  # kept as typed
    r = client.post(f"/admin/break-glass/{grant_id}/review", data={"csrf_token": token, "note": "Hợp lệ"})
    assert r.status_code == 302 and f"done={grant_id}" in r.headers["Location"]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Đã xem xét: Nguyễn Văn Admin" in page and "Hợp lệ" in page and "Chưa xem xét: 0 lượt" in page
    again = client.post(f"/admin/break-glass/{grant_id}/review", data={"csrf_token": token, "note": "Khác"})
    assert again.status_code == 409 and "đã được người khác đánh dấu" in again.get_data(as_text=True)
    assert "Khác" not in client.get("/admin/break-glass").get_data(as_text=True)
    assert "Không còn lượt truy cập khẩn cấp nào chưa xem xét" in client.get(
        "/admin/break-glass?show=pending").get_data(as_text=True)


def test_migration_0022_adds_the_review_and_matches_the_models(empty_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    from .test_partially_signed import _downgrade

    engine, t = prices.at_revision(empty_url, "0021")
    try:
        now = local_day_bounds(local_today())[0]
        with engine.begin() as c:
            prices.seed_people(c, t, now)
            c.execute(t["break_glass_access"].insert().values(
                id=1, user_id=1, patient_id=1, reason="Cấp cứu ban đêm", created_at=now,
                expires_at=now + timedelta(hours=4)))
        upgrade(engine)
        with engine.connect() as c:
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"break_glass_access"})]
            assert diffs == []
            row = c.execute(select(BreakGlassAccess.reason, BreakGlassAccess.reviewed_at)).one()
            assert tuple(row) == ("Cấp cứu ban đêm", None)  # existing accesses start unreviewed
        _downgrade(engine, "0021")
        with engine.connect() as c:
            assert "reviewed_at" not in {col["name"] for col in inspect(c).get_columns("break_glass_access")}
            assert c.execute(select(BreakGlassAccess.reason)).scalar() == "Cấp cứu ban đêm"  # the access is kept
    finally:
        engine.dispose()
