"""An admin edits an account after creation: name, role, department, job title, certificate number."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from emr.access import users
from emr.access.users import create_token, user_for_token
from emr.core.exceptions import NotFoundError, ValidationFailed
from emr.documents import service as documents
from emr.i18n import t
from emr.models import AuditEntry, User, UserSession
from emr.patients import encounters
from emr.patients import service as patients

from . import test_prices as prices
from .conftest import World, csrf_token, login, patient_data

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)


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


# -- one practising-certificate number (CCHN) per person (walkthrough 2, defect 1) --------------------------------


def test_a_certificate_number_held_by_another_account_is_refused_on_create_and_edit(
    session: Session, world: World
) -> None:
    from emr.access.users import create_user

    from .conftest import ADMIN_ACTOR, PASSWORD

    doctor = world.users["physician"]
    held = doctor.practising_cert_no
    assert held
    for typed in (held, f"  {held.lower()}  ", held.upper()):
        with pytest.raises(ValidationFailed) as err:
            create_user(session, ADMIN_ACTOR, "bs4", PASSWORD, "physician", "Trần Văn Bốn", practising_cert_no=typed)
        assert err.value.fields == {"practising_cert_no": "users.error.cert_taken"}
        said = t(err.value.fields["practising_cert_no"], **err.value.field_params["practising_cert_no"])
        assert "physician1" in said and doctor.full_name in said and typed.strip() in said
        session.rollback()
    assert session.scalar(select(User.id).where(User.username == "bs4")) is None

    nurse = world.users["nurse"]
    with pytest.raises(ValidationFailed) as err:
        users.update_profile(session, world.actor("admin"), nurse.id,
                             **_profile(nurse, practising_cert_no=f" {held.lower()} "))
    assert err.value.fields == {"practising_cert_no": "users.error.cert_taken"}
    session.rollback()
    session.expire_all()
    assert session.get(User, nurse.id).practising_cert_no == "004/HCM-CCHN"  # type: ignore[union-attr]

    # Its own number (another spelling of it) and a free one are accepted; a new number is stored trimmed.
    users.update_profile(session, world.actor("admin"), doctor.id, **_profile(doctor, title="Bác sĩ CKI"))
    made = create_user(session, ADMIN_ACTOR, "bs4", PASSWORD, "physician", "Trần Văn Bốn",
                       practising_cert_no="  009999/HCM-CCHN ")
    assert made.practising_cert_no == "009999/HCM-CCHN"


def test_the_database_refuses_a_second_holder_too(session: Session, world: World) -> None:
    """The unique index (migration 0023) holds when two requests pass the check at the same time."""
    from sqlalchemy.exc import IntegrityError

    held = world.users["physician"].practising_cert_no or ""
    session.add(User(username="bs5", full_name="Bác sĩ Năm", role="physician", password_hash="x",
                     practising_cert_no=f" {held.lower()}"))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    # Accounts without a number are many.
    for name in ("bs6", "bs7"):
        session.add(User(username=name, full_name=name, role="nurse", password_hash="x"))
    session.commit()


def test_the_admin_form_says_who_holds_the_number(app: Flask, world: World, session: Session) -> None:
    nurse_id = world.users["nurse"].id
    held = world.users["radiologist"].practising_cert_no or ""
    session.rollback()
    admin = app.test_client()
    login(admin, "admin1")
    token = csrf_token(admin, "/admin/users/")
    r = admin.post("/admin/users/", data={"csrf_token": token, "username": "bs4", "password": "mat-khau-dai-du",
                                          "role": "physician", "full_name": "Trần Văn Bốn",
                                          "practising_cert_no": held.lower()})
    page = _page(r)
    assert r.status_code == 422
    expected = t("users.error.cert_taken", cert=held.lower(), username="radiologist1",
                 full_name="Nguyễn Văn Radiologist")
    assert expected in page and 'value="bs4"' in page
    token = csrf_token(admin, f"/admin/users/{nurse_id}")
    form = {"csrf_token": token, "full_name": "Nguyễn Văn Nurse", "role": "nurse", "department_id": "",
            "title": "", "practising_cert_no": held}
    r = admin.post(f"/admin/users/{nurse_id}/profile", data=form)
    assert r.status_code == 422 and "radiologist1" in _page(r)
    session.expire_all()
    assert session.scalar(select(User.id).where(User.username == "bs4")) is None
    assert session.get(User, nurse_id).practising_cert_no == "004/HCM-CCHN"  # type: ignore[union-attr]


def test_migration_0023_keeps_existing_duplicates_and_matches_the_models(empty_url: str, caplog: Any) -> None:
    """A database that already has two accounts on one number migrates: no number changes, the first holder is
    in the unique index (nobody new can take it), the later one is left out and named in the log."""
    from datetime import datetime

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.exc import IntegrityError

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    from .test_partially_signed import _downgrade

    engine, t_ = prices.at_revision(empty_url, "0022")
    now = datetime(2026, 11, 1, 8, 0)
    try:
        with engine.begin() as c:
            for uid, name, cert in ((1, "bs1", "001234/HCM-CCHN"), (2, "bs2", "001235/HCM-CCHN"),
                                    (3, "bs3", " 001234/hcm-cchn"), (4, "dd1", ""), (5, "dd2", "  "), (6, "dd3", None)):
                c.execute(t_["users"].insert().values(
                    id=uid, username=name, full_name=name, role="physician", password_hash="x", active=True,
                    failed_logins=0, session_version=1, created_at=now, is_department_head=False,
                    practising_cert_no=cert))
        with caplog.at_level("WARNING"):
            upgrade(engine)
        assert "001234/HCM-CCHN" in caplog.text and "bs3" in caplog.text
        with engine.connect() as c:
            certs = dict(c.execute(select(User.id, User.practising_cert_no)).all())
            assert certs == {1: "001234/HCM-CCHN", 2: "001235/HCM-CCHN", 3: " 001234/hcm-cchn", 4: None, 5: None,
                             6: None}
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"users"})]
            assert diffs == []
        with pytest.raises(IntegrityError), engine.begin() as c:  # the first holder's number stays taken
            c.execute(t_["users"].insert().values(
                id=7, username="bs4", full_name="bs4", role="physician", password_hash="x", active=True,
                failed_logins=0, session_version=1, created_at=now, is_department_head=False,
                practising_cert_no="001235/hcm-cchn "))
        _downgrade(engine, "0022")
        upgrade(engine)  # again, now over the fixed-up blanks
    finally:
        engine.dispose()


def test_migration_0023_on_a_database_without_duplicates(tmp_path: Any) -> None:
    from emr.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path}/clean.sqlite3")
    try:
        upgrade(engine)
        with engine.connect() as c:
            sql = c.execute(text("SELECT sql FROM sqlite_master WHERE name = 'uq_users_practising_cert'")).scalar()
        assert sql.startswith("CREATE UNIQUE INDEX") and "lower(trim(practising_cert_no))" in sql
        assert "WHERE" not in sql  # no account left out
    finally:
        engine.dispose()


def test_a_number_taken_between_the_check_and_the_write_is_refused_the_same_way(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins at once: both pass the check, the unique index stops the second, who is told who holds it."""
    from emr.access.users import create_user

    from .conftest import ADMIN_ACTOR, PASSWORD

    real = users.cert_holder
    calls: list[str | None] = []

    def too_early(session: Session, cert: str | None, *, other_than: int | None = None) -> User | None:
        calls.append(cert)
        return None if len(calls) == 1 else real(session, cert, other_than=other_than)

    monkeypatch.setattr(users, "cert_holder", too_early)
    held = world.users["radiologist"].practising_cert_no
    with pytest.raises(ValidationFailed) as err:
        create_user(session, ADMIN_ACTOR, "bs8", PASSWORD, "physician", "Bác sĩ Tám", practising_cert_no=held)
    assert len(calls) == 2 and err.value.field_params["practising_cert_no"]["username"] == "radiologist1"
    session.rollback()
    assert session.scalar(select(User.id).where(User.username == "bs8")) is None
