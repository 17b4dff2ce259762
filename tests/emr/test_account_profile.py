"""An admin edits an account after creation: name, role, department, job title, certificate number."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import users
from emr.access.users import create_token, user_for_token
from emr.core.exceptions import NotFoundError, ValidationFailed
from emr.documents import service as documents
from emr.i18n import t
from emr.models import AuditEntry, User, UserSession
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import World, csrf_token, login, patient_data


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))


def _profile(user: User, **over: Any) -> dict[str, Any]:
    data = {
        "full_name": user.full_name,
        "role": user.role,
        "department_id": user.department_id,
        "title": user.title,
        "practising_cert_no": user.practising_cert_no,
    }
    return data | over


def _audits(session: Session, user_id: int) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(
        AuditEntry.action == "user.update", AuditEntry.object_id == str(user_id)).order_by(AuditEntry.id)))


def test_move_department_and_rename_keeps_sessions_and_drops_head(session: Session, world: World) -> None:
    nurse = world.users["nurse"]
    k01 = encounters.ensure_department(session, "K01", "Khoa Cấp cứu")
    nurse.is_department_head = True
    session.add(UserSession(user_id=nurse.id, sid_hash="a" * 64, expires_at=nurse.created_at.replace(year=2099)))
    session.commit()
    version = nurse.session_version

    changed = users.update_profile(session, world.actor("admin"), nurse.id,
                                   **_profile(nurse, department_id=k01.id, title="Điều dưỡng trưởng",
                                              full_name="  Nguyễn Thị Điều Dưỡng  "))

    session.refresh(nurse)
    assert (nurse.department_id, nurse.title, nurse.full_name) == (k01.id, "Điều dưỡng trưởng", "Nguyễn Thị Điều Dưỡng")
    assert nurse.is_department_head is False  # was the head of the old department, not of K01
    assert set(changed) == {"department_id", "title", "full_name", "is_department_head"}
    assert nurse.session_version == version  # same role: nobody is logged out for a move
    assert session.scalar(select(UserSession.ended_at).where(UserSession.user_id == nurse.id)) is None
    row = _audits(session, nurse.id)[-1]
    assert row.user_id == world.users["admin"].id
    assert json.loads(row.details)["changed"]["department_id"] == [None, k01.id]
    assert json.loads(row.details)["changed"]["title"] == [None, "Điều dưỡng trưởng"]


def test_role_change_ends_sessions_and_tokens_at_once(session: Session, world: World) -> None:
    tech = world.users["technician"]
    token = create_token(session, world.actor("admin"), tech.id, "Máy CT phòng 2")
    session.add(UserSession(user_id=tech.id, sid_hash="b" * 64, expires_at=tech.created_at.replace(year=2099)))
    session.commit()
    assert user_for_token(session, token) is not None

    changed = users.update_profile(session, world.actor("admin"), tech.id, **_profile(tech, role="radiologist"))

    assert changed["role"] == ["technician", "radiologist"]
    session.refresh(tech)
    assert tech.role == "radiologist"
    assert user_for_token(session, token) is None
    assert session.scalar(select(UserSession.end_reason).where(UserSession.user_id == tech.id)) == "role"
    details = json.loads(_audits(session, tech.id)[-1].details)
    assert details["sessions_ended"] == 1 and details["tokens_revoked"] == 1


def test_nothing_changed_writes_nothing(session: Session, world: World) -> None:
    nurse = world.users["nurse"]
    assert users.update_profile(session, world.actor("admin"), nurse.id, **_profile(nurse)) == {}
    assert _audits(session, nurse.id) == []


@pytest.mark.parametrize(
    ("over", "field", "key"),
    [
        ({"full_name": "   "}, "full_name", "errors.field_required"),
        ({"role": "superuser"}, "role", "users.error.role"),
        ({"department_id": 987654}, "department_id", "users.error.department"),
        ({"title": "x" * 101}, "title", "errors.field_too_long_max"),
        ({"practising_cert_no": "9" * 51}, "practising_cert_no", "errors.field_too_long_max"),
    ],
)
def test_bad_values_are_refused_field_by_field(
    session: Session, world: World, over: dict[str, Any], field: str, key: str
) -> None:
    nurse = world.users["nurse"]
    before = _profile(nurse)
    with pytest.raises(ValidationFailed) as err:
        users.update_profile(session, world.actor("admin"), nurse.id, **_profile(nurse, **over))
    assert err.value.fields == {field: key}
    session.rollback()
    assert _profile(session.get(User, nurse.id)) == before  # type: ignore[arg-type]


def test_an_admin_cannot_change_their_own_role(session: Session, world: World) -> None:
    admin = world.users["admin"]
    with pytest.raises(ValidationFailed) as err:
        users.update_profile(session, world.actor("admin"), admin.id, **_profile(admin, role="physician"))
    assert err.value.fields == {"role": "users.error.role_self"}
    # Their own name and title they may still correct.
    assert users.update_profile(session, world.actor("admin"), admin.id, **_profile(admin, title="Kỹ sư CNTT"))


def test_certificate_used_in_signatures_is_kept(session: Session, world: World) -> None:
    doctor = world.users["physician"]
    actor = world.actor("physician")
    # Before any signature a mistyped number can be corrected.
    admin = world.actor("admin")
    users.update_profile(session, admin, doctor.id, **_profile(doctor, practising_cert_no="001/HCM-CCHN"))
    p = patients.create_patient(session, actor, patient_data())
    enc = encounters.create_encounter(session, actor,
                                      {"patient_id": p.id, "kind": "outpatient", "department_code": "K19"})
    doc = documents.create_document(session, actor, {"encounter_id": enc.id, "form_type": "progress_note",
                                                     "content": {"note": "Khám lại sau 1 tuần"}})
    documents.mark_signed(session, actor, doc.id, 1)

    with pytest.raises(ValidationFailed) as err:
        users.update_profile(session, world.actor("admin"), doctor.id, **_profile(doctor, practising_cert_no="777/HCM"))
    assert err.value.fields == {"practising_cert_no": "users.error.cert_signed"}
    session.rollback()
    assert session.get(User, doctor.id).practising_cert_no == "001/HCM-CCHN"  # type: ignore[union-attr]
    # Everything else about a signer can still change.
    assert users.update_profile(session, world.actor("admin"), doctor.id, **_profile(doctor, title="Bác sĩ CKI"))


def test_unknown_account(session: Session, world: World) -> None:
    with pytest.raises(NotFoundError):
        users.update_profile(session, world.actor("admin"), 999_999, full_name="X", role="nurse", department_id=None,
                             title=None, practising_cert_no=None)


def test_admin_edits_an_account_in_the_browser_form(app: Flask, world: World, session: Session) -> None:
    nurse_id, admin_id = world.users["nurse"].id, world.users["admin"].id
    k19_id = world.users["physician"].department_id
    session.rollback()  # the test's session holds no lock while the app writes
    admin = app.test_client()
    login(admin, "admin1")
    page = _page(admin.get(f"/admin/users/{nurse_id}"))
    assert t("users.profile") in page and 'value="Nguyễn Văn Nurse"' in page
    token = csrf_token(admin, f"/admin/users/{nurse_id}")
    form = {"csrf_token": token, "full_name": "Nguyễn Văn Nurse", "role": "nurse", "department_id": str(k19_id),
            "title": "Điều dưỡng hành chính", "practising_cert_no": "004/HCM-CCHN"}

    r = admin.post(f"/admin/users/{nurse_id}/profile", data=form)
    assert r.status_code == 302 and "done=profile" in r.headers["Location"]
    shown = _page(admin.get(r.headers["Location"]))
    assert t("users.profile_done") in shown and "Khoa Nội tổng hợp" in shown and "Điều dưỡng hành chính" in shown

    again = admin.post(f"/admin/users/{nurse_id}/profile", data=form)
    assert "done=unchanged" in again.headers["Location"]

    bad = admin.post(f"/admin/users/{nurse_id}/profile", data=form | {"full_name": "", "title": "Trưởng nhóm",
                                                                        "department_id": "abc"})
    page = _page(bad)
    assert bad.status_code == 422
    assert re.search(r'id="err-full_name">' + re.escape(t("errors.field_required")), page)
    assert re.search(r'id="err-department_id">' + re.escape(t("users.error.department")), page)
    assert 'value="Trưởng nhóm"' in page  # what the admin typed is kept for correction
    session.expire_all()
    assert session.get(User, nurse_id).title == "Điều dưỡng hành chính"  # type: ignore[union-attr]
    session.rollback()

    own = admin.post(f"/admin/users/{admin_id}/profile", data=form | {"full_name": "Quản trị", "role": "physician"})
    assert own.status_code == 422 and t("users.error.role_self") in _page(own)


def test_usernames_are_plain_lower_case_and_unique_ignoring_case(session: Session, world: World) -> None:
    from emr.access.users import authenticate, create_user
    from emr.core.exceptions import AuthenticationFailed, ConflictError

    from .conftest import ADMIN_ACTOR, PASSWORD

    made = create_user(session, ADMIN_ACTOR, "BS.An", PASSWORD, "physician", "Lê Văn An")
    assert made.username == "bs.an"
    with pytest.raises(ConflictError):
        create_user(session, ADMIN_ACTOR, "NURSE1", PASSWORD, "nurse", "Người khác")  # 'nurse1' exists
    session.rollback()
    with pytest.raises(ValidationFailed) as err:
        create_user(session, ADMIN_ACTOR, "Bác_sĩ", PASSWORD, "physician", "Bác sĩ")
    assert err.value.fields == {"username": "users.error.username"}
    session.rollback()
    assert authenticate(session, "BS.AN", PASSWORD, "10.0.0.1").id == made.id
    assert authenticate(session, " bs.an ", PASSWORD, "10.0.0.1").id == made.id

    # Accounts made before the rule may differ only by case: then only the exact spelling logs in.
    for name in ("Dup", "dup"):
        session.add(User(username=name, full_name=name, role="nurse", password_hash=made.password_hash))
    session.commit()
    assert authenticate(session, "Dup", PASSWORD, "10.0.0.1").username == "Dup"
    assert authenticate(session, "dup", PASSWORD, "10.0.0.1").username == "dup"
    with pytest.raises(AuthenticationFailed):
        authenticate(session, "DUP", PASSWORD, "10.0.0.1")
