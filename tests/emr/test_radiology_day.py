"""Issue 13, the radiology day: orders join a visit, reports identify the exam and print their
whole verification code, legacy dates, the paged audit page, reconciliation, share links."""

from __future__ import annotations

import csv
import html as html_mod
import io
import re
import subprocess
from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access import audit_query as aq
from emr.access.audit import Actor
from emr.core.dicom_dates import display_da, normalise_da, parse_da
from emr.core.exceptions import ValidationFailed
from emr.hl7.orders import interface_user
from emr.imaging import orders, reconcile
from emr.imaging.linking import _upsert
from emr.imaging.order_visit import visit_for_report
from emr.models import AuditEntry, Department, Encounter, ImagingOrder, Study, utcnow
from emr.patients import encounters
from emr.patients import service as patients
from emr.reading import service as reading
from emr.signing import RenderInput, SignerSlot, render_document_pdf
from storage import StudySummary

from .conftest import World, linked_ct_study, login, patient_data


def _departments(session: Session, world: World) -> Department:
    dep = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
    world.users["physician"].department_id = dep.id
    session.commit()
    return dep


# -- 1. an order belongs to a visit -------------------------------------------------


def test_order_without_visit_opens_one_in_the_ordering_department_then_joins_it(
    session: Session, world: World
) -> None:
    dep = _departments(session, world)
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    first = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ"})
    enc = session.get(Encounter, first.encounter_id)
    assert enc is not None and enc.status == "open" and enc.kind == "outpatient"
    assert enc.department_id == dep.id and enc.attending_id == world.users["physician"].id
    assert first.department_id == dep.id
    second = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "US", "procedure_name": "SA bụng"})
    assert second.encounter_id == enc.id  # the open visit, not another one
    created = session.scalars(select(AuditEntry).where(AuditEntry.action == "encounter.create")).all()
    assert len(created) == 1 and created[0].username == "physician1"


def test_report_on_an_order_without_visit_opens_one_for_the_radiologist(session: Session, world: World) -> None:
    """An order placed without a visit (by the HIS's account, which has no department, or before
    issue 13): the report still saves."""
    his = Actor(interface_user(session).id, "hl7:BV01", None, "10.0.0.9")
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    order = orders.create_order(session, his, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT"})
    assert order.encounter_id is None
    reader = world.actor("radiologist")
    with pytest.raises(ValidationFailed) as nobody:
        visit_for_report(session, reader, order)  # nobody with a department: a clear error, not a 500
    assert nobody.value.fields == {"encounter_id": "orders.error.visit_needed"}
    session.rollback()
    dep = encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh")
    world.users["radiologist"].department_id = dep.id
    session.commit()
    enc = visit_for_report(session, reader, order)
    session.commit()
    assert enc.department_id == dep.id and session.get(ImagingOrder, order.id).encounter_id == enc.id  # type: ignore[union-attr]


def test_radiologist_saves_the_report_on_an_order_placed_from_the_chart(
    client: FlaskClient, session: Session, world: World
) -> None:
    """The walk-through's step 6: no 422 "Bệnh nhân chưa có lượt khám nào"."""
    _departments(session, world)
    study = linked_ct_study(session, world)
    login(client, "radiologist1")
    page = client.get(f"/reading/studies/{study.id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = client.post(
        f"/reading/studies/{study.id}/report",
        data={"csrf_token": token, "c_findings": "Không thấy bất thường.", "c_conclusion": "Bình thường."},
    )
    assert r.status_code == 302, r.get_data(as_text=True)[:2000]
    order = session.get(ImagingOrder, study.order_id)
    assert order is not None
    doc = reading.latest_report(session, order.id)
    assert doc is not None and doc.encounter_id == order.encounter_id


# -- 8. legacy dotted dates ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored", "shown"),
    [
        ("19970424", "19970424", "24/04/1997"),
        ("1997.04.24", "19970424", "24/04/1997"),
        (" 1997-04-24 ", "19970424", "24/04/1997"),
        ("1997.04-24", None, "1997.04-24"),
        ("19971324", None, "19971324"),
        ("1997.04.", None, "1997.04."),
        ("", None, "—"),
        (None, None, "—"),
    ],
)
def test_dicom_dates_current_and_legacy_forms(raw: str | None, stored: str | None, shown: str) -> None:
    assert normalise_da(raw) == stored
    assert display_da(raw) == shown
    assert (parse_da(raw) is not None) == (stored is not None)


def test_linker_stores_a_dotted_study_date_whole(session: Session) -> None:
    summary = StudySummary("o-dot", "1.2.3.4", "X1", "LE^VAN", "", "1997.04.24", "", ("CR",), 1)
    study = _upsert(session, summary)
    session.commit()
    assert study.study_date == "19970424"


# -- 3 and 4. the report PDF -----------------------------------------------------------


def _pdf_text(pdf: bytes) -> str:
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return out.stdout.decode()


def test_report_pdf_prints_the_whole_code_and_names_the_exam() -> None:
    code = "aQN-qaSjk0_hMnKrIumDVf2avmfy9QIn"
    doc = RenderInput(
        hospital_name="Bệnh viện Đa khoa tỉnh Thừa Thiên Huế",
        department="Khoa Chẩn đoán hình ảnh",
        patient_name="Đặng Quốc Bảo",
        patient_code="BN00000005",
        patient_birth_date=date(1984, 1, 9),
        patient_sex="M",
        title="Phiếu kết quả chẩn đoán hình ảnh",
        document_type="Phiếu kết quả chẩn đoán hình ảnh",
        version=1,
        sections=[("Kết luận", "Bình thường.")],
        signers=[SignerSlot("radiologist", "Bác sĩ đọc kết quả", "BS. Trần Thị Bích Ngọc")],
        verification_code=code,
        # A long public address (a provincial network's) must not push the code off the page.
        public_url="https://ho-so-benh-an.benhvien-da-khoa-tinh-thua-thien-hue.example.vn/filmless",
        exam=[
            ("Số phiếu chụp (Accession)", "261207000005"),
            ("Kỹ thuật", "CT sọ não không tiêm"),
            ("Loại máy", "CT"),
            ("Ngày chụp", "07/12/2026"),
            ("Bác sĩ chỉ định", "Nguyễn Văn An"),
            ("Khoa chỉ định", "Khoa Khám bệnh"),
        ],
    )
    text = _pdf_text(render_document_pdf(doc))
    printed = re.search(r"Mã kiểm tra: (\S+)", text)
    assert printed is not None and printed.group(1) == code, text[-800:]
    for label, value in doc.exam:
        assert re.search(re.escape(label) + r":\s+" + re.escape(value), text), (label, text)
    # Every footer line stays inside the page: pdftotext -bbox gives each word's right edge.
    bbox = subprocess.run(
        ["pdftotext", "-bbox", "-", "-"], input=render_document_pdf(doc), capture_output=True, check=True
    ).stdout.decode()
    page_w = float(re.search(r'<page width="([\d.]+)"', bbox).group(1))  # type: ignore[union-attr]
    right = max(float(x) for x in re.findall(r'xMax="([\d.]+)"', bbox))
    assert right <= page_w - 10, (right, page_w)


def test_signed_radiology_report_names_the_exam_and_the_ordering_department(
    session: Session, world: World
) -> None:
    from emr.signing.service import _exam_lines

    dep = _departments(session, world)
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(
        session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ não", "procedure_code": "X1"}
    )
    session.add(Study(orthanc_id="o-2", study_instance_uid="1.2.9", state="linked", order_id=order.id,
                      patient_id=p.id, study_date="19970424"))  # fmt: skip
    session.commit()
    from emr.documents import service as documents

    doc = documents.create_document(
        session,
        world.actor("radiologist"),
        {
            "encounter_id": order.encounter_id,
            "form_type": "radiology_report",
            "order_id": order.id,
            "content": {"findings": "x", "conclusion": "y"},
        },
    )
    lines = dict(_exam_lines(session, doc))
    assert lines == {
        "Số phiếu chụp (Accession)": order.accession_number,
        "Kỹ thuật": "CT sọ não (X1)",
        "Loại máy": "CT",
        "Ngày chụp": "24/04/1997",
        "Bác sĩ chỉ định": world.users["physician"].full_name,
        "Khoa chỉ định": dep.name,
    }


# -- 6. the audit page -----------------------------------------------------------------


def _rows(session: Session, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit rows at known UTC times around a Vietnam midnight (17:00 UTC = 00:00 ICT)."""
    doctor, clerk = world.actor("physician"), world.actor("records_clerk")
    for i, (actor, action, at) in enumerate(
        [
            (doctor, "patient.view", "2026-12-05T16:59:59.000000Z"),  # 5 Dec 23:59:59 in Vietnam
            (doctor, "patient.view", "2026-12-05T17:00:00.000000Z"),  # 6 Dec 00:00:00 in Vietnam
            (clerk, "study.link", "2026-12-06T10:00:00.000000Z"),
            (doctor, "document.sign_step", "2026-12-06T16:59:00.000000Z"),  # 6 Dec 23:59
            (clerk, "=cmd|' /C calc'!A0", "2026-12-06T17:30:00.000000Z"),  # 7 Dec, a hostile action name
        ]
    ):
        monkeypatch.setattr(audit, "_now", lambda at=at: at)  # rows are append-only: dated as written
        audit.record(session, actor, action, patient_id=7 if i % 2 else None, object_type="patient")
    monkeypatch.undo()
    session.commit()


def test_audit_page_filters_local_days_users_actions_and_pages(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rows(session, world, monkeypatch)
    admin = world.actor("admin")
    page = aq.audit_page(session, admin, aq.AuditFilter(date_from=date(2026, 12, 6), date_to=date(2026, 12, 6)))
    assert [r.at[:19] for r in page.rows] == [
        "2026-12-06T16:59:00",
        "2026-12-06T10:00:00",
        "2026-12-05T17:00:00",
    ]
    assert aq.local_time(page.rows[-1].at) == "06/12/2026 00:00:00"
    page = aq.audit_page(session, admin, aq.AuditFilter(user="records_clerk1"))
    assert {r.username for r in page.rows} == {"records_clerk1"} and len(page.rows) == 2
    page = aq.audit_page(session, admin, aq.AuditFilter(action="document.sign_step"))
    assert len(page.rows) == 1 and aq.action_label(page.rows[0].action) == "Ký số một chữ ký"
    assert aq.action_label("no.such_action") == "no.such_action"
    page = aq.audit_page(session, admin, aq.AuditFilter(patient="BN99999999"))
    assert page.rows == [] and page.unknown_patient
    # Keyset pages of 2, newest first, then back.
    first = aq.audit_page(session, admin, aq.AuditFilter(action="patient.view"), size=1)
    assert first.older is not None and first.newer is None
    older = aq.audit_page(session, admin, aq.AuditFilter(action="patient.view"), before=first.older, size=1)
    assert older.rows[0].id < first.rows[0].id and older.older is None
    back = aq.audit_page(session, admin, aq.AuditFilter(action="patient.view"), after=older.rows[0].id, size=1)
    assert [r.id for r in back.rows] == [r.id for r in first.rows]
    views = session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.view")).all()
    assert len(views) >= 6 and all(v.username == "admin1" for v in views)


def test_audit_page_and_csv_in_the_browser_flow(
    client: FlaskClient, session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rows(session, world, monkeypatch)
    login(client, "admin1")
    html = client.get("/admin/audit?user=records_clerk1").get_data(as_text=True)
    assert '<td><span title="study.link">Gắn ca chụp</span></td>' in html  # the action's name, code on hover
    assert "<td>study.link</td>" not in html and "2026-12-06T" not in html
    assert "07/12/2026 00:30:00" in html  # local time, not ISO UTC
    r = client.get("/admin/audit.csv?user=records_clerk1")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    body = r.get_data(as_text=True)
    r.close()
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows[0][:3] == ["id", "time_local", "username"]
    assert [row[4] for row in rows[1:]] == ["'=cmd|' /C calc'!A0", "study.link"]  # formula neutralised
    assert rows[2][1] == "2026-12-06T17:00:00+07:00" and rows[2][5] == "Gắn ca chụp"
    # The object's Vietnamese name is appended; the columns before it stay where they were.
    assert rows[0][9:] == ["object_type", "object_id", "client_ip", "details", "object_name"]
    assert all(len(row) == len(rows[0]) for row in rows)
    assert [(row[9], row[-1]) for row in rows[1:]] == [("patient", "Bệnh nhân")] * 2
    exported = session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export")).all()
    assert len(exported) == 1 and '"records_clerk1"' in exported[0].details


def test_a_bad_or_reversed_audit_date_is_said_and_lists_nothing(
    client: FlaskClient, session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walkthrough 2: a date that is not a date was dropped and the whole log shown; a reversed range showed
    "no rows" without saying why; the CSV export with the same values exported everything."""
    _rows(session, world, monkeypatch)
    session.rollback()
    login(client, "admin1")
    r = client.get("/admin/audit?date_from=2026-13-45&date_to=abc")
    page = html_mod.unescape(r.get_data(as_text=True))
    assert r.status_code == 422
    assert "«Từ ngày» không phải là ngày hợp lệ: «2026-13-45»" in page
    assert "«Đến ngày» không phải là ngày hợp lệ: «abc»" in page
    assert 'value="2026-13-45"' in page and 'value="abc"' in page  # kept as typed
    assert 'class="outcome-' not in page  # no row listed
    assert "Chưa lọc được nhật ký" in page

    r = client.get("/admin/audit?date_from=2026-12-07&date_to=2026-12-05")
    page = html_mod.unescape(r.get_data(as_text=True))
    assert r.status_code == 422
    assert "«Từ ngày» (07/12/2026) đang sau «Đến ngày» (05/12/2026)" in page
    assert "Không có dòng nào khớp bộ lọc." not in page and 'class="outcome-' not in page

    # Typed by hand as dd/mm/yyyy: a date, applied (6 Dec local: three rows).
    r = client.get("/admin/audit?date_from=06/12/2026&date_to=06/12/2026")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'value="2026-12-06"' in page and page.count('class="outcome-') == 3

    for query in ("date_from=2026-13-45", "date_to=abc", "date_from=2026-12-07&date_to=2026-12-05"):
        r = client.get(f"/admin/audit.csv?{query}")
        assert r.status_code == 422 and not r.headers["Content-Type"].startswith("text/csv"), query
        assert "time_local" not in r.get_data(as_text=True)
    assert session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export")).all() == []
    with pytest.raises(ValidationFailed):  # the service refuses such a filter too
        list(aq.audit_csv(session, world.actor("admin"), aq.parse_filter({"date_from": "31/02/2026"})))
    session.rollback()


# -- 7. reconciliation ---------------------------------------------------------------------


def test_link_mismatch_modality_and_local_date(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(
        session,
        doctor,
        # 7 Dec 2026 06:00 in Vietnam is 6 Dec 23:00 UTC: the order's day is the 7th.
        {"patient_id": p.id, "modality": "US", "procedure_name": "SA bụng", "scheduled_at": "2026-12-07T06:00:00"},
    )
    study = Study(orthanc_id="o-3", study_instance_uid="1.2.10", modalities="CT\\SR", study_date="20261207")
    assert reconcile.link_mismatches(study, order) == ["modality"]
    study.modalities, study.study_date = "US", "2026.12.06"
    assert reconcile.link_mismatches(study, order) == ["date"]
    study.study_date = "20261207"
    assert reconcile.link_mismatches(study, order) == []


def test_queue_is_paged_and_searchable(session: Session) -> None:
    for i in range(45):
        session.add(Study(orthanc_id=f"q-{i}", study_instance_uid=f"1.2.99.{i}", state="unmatched",
                          dicom_patient_name="PHAM^THI MAI ANH" if i == 30 else f"LE^VAN {i}",
                          dicom_patient_id=f"P{i}"))  # fmt: skip
    session.commit()
    first = reconcile.queue_page(session)
    assert first.total == 45 and first.pages == 3 and len(first.items) == 20
    last = reconcile.queue_page(session, page=9)
    assert last.page == 3 and len(last.items) == 5
    found = reconcile.queue_page(session, query="pham thi")
    assert found.total == 1 and found.items[0].study.dicom_patient_name == "PHAM^THI MAI ANH"
    assert reconcile.queue_page(session, query="P7").total == 1


# -- share links and the arriving notice ------------------------------------------------------


def test_share_link_rows_show_code_end_printer_and_last_opened(session: Session, world: World) -> None:
    from emr.models import ShareLink
    from emr.sharing import service as sharing

    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    study = Study(orthanc_id="o-4", study_instance_uid="1.2.11", state="linked", patient_id=p.id)
    session.add(study)
    session.flush()
    link = ShareLink(code_sha256="x" * 64, pin_hash="h", study_id=study.id, study_instance_uid="1.2.11",
                     patient_id=p.id, created_by=world.users["technician"].id, expires_at=utcnow().replace(year=2099),
                     failed_attempts=0, code_hint="k7mq")  # fmt: skip
    session.add(link)
    session.commit()
    rows = sharing.share_link_rows(session, study.id)
    assert rows[0]["code_hint"] == "k7mq" and rows[0]["created_by"] == world.users["technician"].full_name
    assert rows[0]["last_access_at"] is None and rows[0]["state"] == "active"
    sharing.record_share_access(session, link, "10.0.0.9", "share.view")
    assert sharing.share_link_rows(session, study.id)[0]["last_access_at"] is not None


def test_arriving_notice_ends_when_orthanc_calls_the_study_stable(session: Session) -> None:
    session.add(Study(orthanc_id="o-5", study_instance_uid="1.2.12", state="linked", first_seen_at=utcnow()))
    session.commit()
    assert reading.study_arriving(session, "1.2.12", 90)
    assert reading.study_arriving(session, "1.2.12", 90, is_stable=lambda oid: False)
    assert not reading.study_arriving(session, "1.2.12", 90, is_stable=lambda oid: oid == "o-5")

    def down(_: str) -> bool:
        raise ConnectionError("Orthanc down")

    assert reading.study_arriving(session, "1.2.12", 90, is_stable=down)  # falls back to the time window


# -- the visit form -----------------------------------------------------------------------------


def test_visit_form_offers_physicians_to_choose(client: FlaskClient, session: Session, world: World) -> None:
    _departments(session, world)
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    login(client, "nurse1")
    html = client.get(f"/patients/{p.id}/encounters/new").get_data(as_text=True)
    select_html = re.search(r'<select name="attending_username".*?</select>', html, re.S).group(0)  # type: ignore[union-attr]
    assert 'value="physician1"' in select_html and 'value="radiologist1"' in select_html
    assert "Khoa Khám bệnh" in select_html and 'value="nurse1"' not in select_html


def test_favicon_is_served(client: FlaskClient) -> None:
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.data[:4] == b"\x00\x00\x01\x00"



def test_patient_downloads_the_complete_signed_pdf_only(client: FlaskClient, session: Session, world: World) -> None:
    from argon2 import PasswordHasher

    from emr.documents import service as documents
    from emr.models import ShareLink
    from emr.models.signing import SignedArtifact
    from emr.sharing.service import _code_hash

    _departments(session, world)
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ"})
    study = Study(orthanc_id="o-6", study_instance_uid="1.2.13", state="linked", order_id=order.id, patient_id=p.id)
    session.add(study)
    doc = documents.create_document(
        session,
        world.actor("radiologist"),
        {"encounter_id": order.encounter_id, "form_type": "radiology_report", "order_id": order.id,
         "content": {"findings": "x", "conclusion": "y"}},
    )  # fmt: skip
    documents.mark_signed(session, world.actor("radiologist"), doc.id, 1)
    version = doc.versions[0]
    artifact = SignedArtifact(version_id=version.id, document_id=doc.id, verification_code="c0de", pdf=b"%PDF-1.7 x",
                              pdf_sha256="0" * 64, content_sha256=version.content_sha256, complete=False)  # fmt: skip
    session.add(artifact)
    link = ShareLink(code_sha256=_code_hash("abcdefghjkmp"), pin_hash=PasswordHasher().hash("123456"),
                     study_id=study.id, study_instance_uid="1.2.13", patient_id=p.id, document_id=doc.id,
                     created_by=world.users["radiologist"].id, expires_at=utcnow().replace(year=2099),
                     failed_attempts=0, code_hint="jkmp")  # fmt: skip
    session.add(link)
    session.commit()
    page = client.get("/s/abcdefghjkmp").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post("/s/abcdefghjkmp", data={"csrf_token": token, "pin": "123456"}).status_code == 302
    html = client.get("/s/abcdefghjkmp").get_data(as_text=True)
    assert "download-report" not in html  # signing not finished: nothing to download yet
    assert client.get("/s/abcdefghjkmp/report.pdf").status_code == 404
    artifact.complete = True
    session.commit()
    assert 'id="download-report"' in client.get("/s/abcdefghjkmp").get_data(as_text=True)
    r = client.get("/s/abcdefghjkmp/report.pdf")
    assert r.status_code == 200 and r.data == b"%PDF-1.7 x" and r.headers["Cache-Control"] == "no-store"
    downloads = session.scalars(select(AuditEntry).where(AuditEntry.action == "share.download")).all()
    assert downloads and '"report_pdf"' in downloads[-1].details
