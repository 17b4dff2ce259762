"""Admin screens (accounts, API tokens), patient merge and the reconciliation queue with suggestions."""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import to_local
from emr.i18n import t
from emr.imaging import orders
from emr.models import AuditEntry, ImagingOrder, Patient, Study, User
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import World, csrf_token, login, patient_data


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))


def test_admin_creates_user_locks_unlocks_resets_password(app: Flask, world: World, session: Session) -> None:
    admin = app.test_client()
    login(admin, "admin1")
    token = csrf_token(admin, "/admin/users/")
    bad = admin.post(
        "/admin/users/",
        data={"csrf_token": token, "username": "bs an", "full_name": "Lê Văn An", "role": "", "password": "short"},
    )
    page = _page(bad)
    assert bad.status_code == 422
    assert re.search(r'id="err-username">' + re.escape(t("users.error.username")), page)
    assert re.search(r'id="err-password">' + re.escape(t("users.error.password_short")), page)
    assert 'value="Lê Văn An"' in page and "short" not in re.findall(r'name="password" value="([^"]*)"', page)
    ok = admin.post(
        "/admin/users/",
        data={
            "csrf_token": token,
            "username": "bs.an",
            "full_name": "Lê Văn An",
            "role": "radiologist",
            "password": "mat-khau-dai-10",
        },
    )
    assert ok.status_code == 302
    user = session.scalars(select(User).where(User.username == "bs.an")).one()
    assert user.role == "radiologist"
    session.commit()

    radiologist = app.test_client()
    assert login(radiologist, "bs.an", "mat-khau-dai-10").status_code == 302
    assert radiologist.get("/patients/").status_code == 200
    # Lock: the open session ends at once and the password no longer works.
    assert admin.post(f"/admin/users/{user.id}/active", data={"csrf_token": token, "active": "0"}).status_code == 302
    assert radiologist.get("/patients/").status_code == 302
    assert login(radiologist, "bs.an", "mat-khau-dai-10").status_code == 401
    assert t("users.state.locked") in _page(admin.get("/admin/users/"))
    # An admin cannot lock themself out.
    me = world.users["admin"].id
    r = admin.post(f"/admin/users/{me}/active", data={"csrf_token": token, "active": "0"})
    assert r.status_code == 422 and t("users.error.lock_self") in _page(r)
    assert admin.post(f"/admin/users/{user.id}/active", data={"csrf_token": token, "active": "1"}).status_code == 302
    r = admin.post(f"/admin/users/{user.id}/password", data={"csrf_token": token, "password": "123"})
    assert r.status_code == 422 and re.search(
        r'id="err-password">' + re.escape(t("users.error.password_short")), _page(r)
    )
    assert (
        admin.post(
            f"/admin/users/{user.id}/password", data={"csrf_token": token, "password": "mat-khau-moi-12"}
        ).status_code
        == 302
    )
    assert login(radiologist, "bs.an", "mat-khau-dai-10").status_code == 401
    assert login(radiologist, "bs.an", "mat-khau-moi-12").status_code == 302
    actions = {a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.username == "admin1"))}
    assert {"user.create", "user.lock", "user.unlock", "user.password"} <= actions


def test_api_token_is_shown_once_works_and_can_be_revoked(app: Flask, world: World, session: Session) -> None:
    admin = app.test_client()
    login(admin, "admin1")
    uid = world.users["records_clerk"].id
    token = csrf_token(admin, f"/admin/users/{uid}")
    r = admin.post(f"/admin/users/{uid}/tokens", data={"csrf_token": token, "name": ""})
    assert r.status_code == 422 and re.search(r'id="err-name">' + re.escape(t("errors.field_required")), _page(r))
    r = admin.post(f"/admin/users/{uid}/tokens", data={"csrf_token": token, "name": "HIS bệnh viện"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    m = re.search(r'class="token" readonly value="(fl_[^"]+)"', r.get_data(as_text=True))
    assert m, "the new token is shown"
    clear = m.group(1)
    api = app.test_client()
    assert api.get("/api/patients?q=nguyen", headers={"Authorization": f"Bearer {clear}"}).status_code == 200
    again = _page(admin.get(f"/admin/users/{uid}"))
    assert clear not in again and clear[:10] in again and "HIS bệnh viện" in again  # only the prefix, later
    token_id = int(re.search(rf"/admin/users/{uid}/tokens/(\d+)/revoke", again).group(1))  # type: ignore[union-attr]
    other = world.users["nurse"].id
    assert admin.post(f"/admin/users/{other}/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code == 404
    assert admin.post(f"/admin/users/{uid}/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code == 302
    assert api.get("/api/patients?q=nguyen", headers={"Authorization": f"Bearer {clear}"}).status_code == 401


def test_merge_screen_previews_then_merges_with_reason(app: Flask, world: World, session: Session) -> None:
    clerk = world.actor("records_clerk")
    keep = patients.create_patient(session, clerk, patient_data())
    dup = patients.create_patient(session, clerk, patient_data(cccd=None, bhyt_number=None, phone=None),
                                  check_namesakes=False)  # the duplicate the merge screen exists for
    enc = encounters.create_encounter(
        session, world.actor("physician"), {"patient_id": dup.id, "kind": "outpatient", "department_code": "K19"}
    )
    orders.create_order(
        session,
        world.actor("physician"),
        {"patient_id": dup.id, "encounter_id": enc.id, "modality": "CT", "procedure_name": "CT ngực"},
    )
    session.commit()
    c = app.test_client()
    login(c, "records_clerk1")
    chart = _page(c.get(f"/patients/{dup.id}"))
    assert f"/patients/merge?source={dup.code}" in chart
    token = csrf_token(c, f"/patients/merge?source={dup.code}")
    r = c.post("/patients/merge", data={"csrf_token": token, "source": dup.code, "target": "BN99999999"})
    assert r.status_code == 422 and re.search(
        r'id="err-target">' + re.escape(t("patients.error.code_unknown")), _page(r)
    )
    assert f'value="{dup.code}"' in _page(r)
    r = c.post("/patients/merge", data={"csrf_token": token, "source": dup.code, "target": dup.code})
    assert r.status_code == 422 and t("patients.error.merge_same") in _page(r)
    preview = c.post("/patients/merge", data={"csrf_token": token, "source": dup.code, "target": keep.code.lower()})
    page = _page(preview)
    assert preview.status_code == 200
    assert t("merge.counts", encounters=1, documents=0, orders=1, studies=0) in page
    assert t("merge.counts", encounters=0, documents=0, orders=0, studies=0) in page
    previewed = f"{dup.code}>{keep.code}"
    # No reason: refused beside the field, the preview stays.
    r = c.post(
        "/patients/merge",
        data={"csrf_token": token, "source": dup.code, "target": keep.code, "step": "confirm", "previewed": previewed},
    )
    assert r.status_code == 422 and re.search(r'id="err-reason">' + re.escape(t("errors.field_required")), _page(r))
    # Codes changed after the preview: preview again, merge nothing.
    r = c.post(
        "/patients/merge",
        data={
            "csrf_token": token,
            "source": dup.code,
            "target": keep.code,
            "step": "confirm",
            "previewed": "x>y",
            "reason": "Trùng",
        },
    )
    assert r.status_code == 200 and session.get(Patient, dup.id).status == "active"
    session.commit()  # end the read: SQLite writers queue behind an open transaction
    r = c.post(
        "/patients/merge",
        data={
            "csrf_token": token,
            "source": dup.code,
            "target": keep.code,
            "step": "confirm",
            "previewed": previewed,
            "reason": "Đăng ký trùng",
        },
    )
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/patients/{keep.id}?merged={dup.code}")
    session.expire_all()
    assert session.get(Patient, dup.id).status == "merged"
    assert session.scalars(select(ImagingOrder)).one().patient_id == keep.id
    session.commit()
    old = _page(c.get(f"/patients/{dup.id}"))
    assert (
        t("patients.merged_into", id=keep.id) in old and "/patients/merge?source" not in old
    )  # both histories readable
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "patient.merge")).all()
    assert {r.patient_id for r in rows} == {dup.id, keep.id} and all("Đăng ký trùng" in r.details for r in rows)
    session.commit()


def test_reconciliation_queue_suggests_orders_and_links_after_confirmation(
    app: Flask, world: World, session: Session
) -> None:
    doctor = world.actor("physician")
    nhung = patients.create_patient(session, doctor, patient_data())
    other = patients.create_patient(
        session, doctor, patient_data(full_name="Trần Văn Đức", cccd=None, bhyt_number=None, sex="M")
    )
    wanted = orders.create_order(
        session, doctor, {"patient_id": nhung.id, "modality": "CT", "procedure_name": "CT ngực"}
    )
    orders.create_order(session, doctor, {"patient_id": other.id, "modality": "MR", "procedure_name": "MRI sọ"})
    # Orders keep naive UTC; a modality writes the study date in local (Vietnam) time.
    day = to_local(wanted.scheduled_at).strftime("%Y%m%d")
    # Typed at the console without accents and with a wrong ID: the name still finds her order.
    by_name = Study(
        orthanc_id="o1",
        study_instance_uid="1.2.3.1",
        dicom_patient_id="TAM123",
        dicom_patient_name="NGUYEN^THI HONG NHUNG",
        study_date=day,
        modalities="CT",
        accession_number="X1",
    )
    by_id = Study(
        orthanc_id="o2",
        study_instance_uid="1.2.3.2",
        dicom_patient_id=other.code,
        dicom_patient_name="",
        study_date="20200101",
        modalities="MR",
    )
    nothing = Study(
        orthanc_id="o3",
        study_instance_uid="1.2.3.3",
        dicom_patient_id="ANON",
        dicom_patient_name="ANON^YMOUS",
        study_date="19990101",
        modalities="US",
    )
    session.add_all([by_name, by_id, nothing])
    session.commit()
    acc, wanted_id, nhung_id, study_id = wanted.accession_number, wanted.id, nhung.id, by_name.id
    nothing_id = nothing.id
    c = app.test_client()
    login(c, "records_clerk1")
    page = _page(c.get("/reconcile/"))
    cards = {m.group(1): m.group(2) for m in re.finditer(r'data-study="(\d+)">(.*?)</section>', page, re.S)}
    first = cards[str(by_name.id)]
    assert "NGUYEN THI HONG NHUNG" in first and "TAM123" in first and "X1" in first
    assert (
        wanted.accession_number in first and t("reconcile.reason.name") in first and t("reconcile.reason.date") in first
    )
    assert t("reconcile.reason.patient_id") in cards[str(by_id.id)] and "MRI sọ" in cards[str(by_id.id)]
    assert t("reconcile.no_candidates") in cards[str(nothing.id)]
    # One click opens the confirmation (nothing linked yet), the second links.
    link = re.search(rf'href="(/reconcile/{study_id}\?order=[^"]+)"', first).group(1)  # type: ignore[union-attr]
    confirm = c.get(link)
    assert confirm.status_code == 200 and "Nguyễn Thị Hồng Nhung" in _page(confirm)
    session.expire_all()
    assert session.get(Study, study_id).state == "unmatched"
    session.commit()
    token = csrf_token(c, link)
    r = c.post(
        f"/reconcile/{study_id}",
        data={"csrf_token": token, "order": acc, "reason": "Nhập tay tại máy"},
    )
    assert r.status_code == 302
    session.expire_all()
    linked = session.get(Study, study_id)
    assert (linked.state, linked.order_id, linked.patient_id, linked.link_method) == (
        "linked",
        wanted_id,
        nhung_id,
        "manual",
    )
    assert session.get(ImagingOrder, wanted_id).status == "images_available"
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "study.link")).one()
    assert row.username == "records_clerk1" and "Nhập tay tại máy" in row.details
    session.commit()
    after = _page(c.get("/reconcile/"))
    assert f'data-study="{study_id}"' not in after and t("reconcile.linked_done") in _page(
        c.get("/reconcile/?linked=1")
    )
    # A typed order number that does not exist is refused beside the field.
    r = c.get(f"/reconcile/{nothing_id}?order=999999999999")
    assert r.status_code == 422 and re.search(
        r'id="err-order">' + re.escape(t("reconcile.error.order_unknown")), _page(r)
    )
    # Other roles see the queue but cannot link.
    nurse = app.test_client()
    login(nurse, "nurse1")
    assert "link-candidate" not in _page(nurse.get("/reconcile/"))
    assert nurse.post(f"/reconcile/{nothing_id}", data={"order": acc}).status_code in (400, 403)
