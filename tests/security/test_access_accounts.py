"""Editing an account (role, department) is the admin's alone, and a demotion takes effect at once.

Real HTTP against `filmless emr serve`: a physician tries to make their own
account an admin through the admin form; an admin's form without its CSRF
token; extra fields smuggled into the profile form (username, active,
department head); and a demoted physician's cookie and API token, replayed
right after the role change.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import select

from emr.models import AuditEntry, User
from tests.security.auth_support import SETUP, RunningEmr, client, csrf, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-accounts")) as running:
        make_users(running, ("quantri", "admin"), ("bacsi", "physician"), ("bsnoi", "physician"))
        yield running


def _user(emr: RunningEmr, username: str) -> User:
    factory = emr.session_factory()
    with factory() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        session.expunge(user)
    factory.kw["bind"].dispose()
    return user


def _form(user: User, **over: str) -> dict[str, str]:
    return {"full_name": user.full_name, "role": user.role, "department_id": str(user.department_id or ""),
            "title": user.title or "", "practising_cert_no": user.practising_cert_no or ""} | over


def test_a_physician_cannot_promote_themselves(emr: RunningEmr) -> None:
    me = _user(emr, "bacsi")
    s, r = emr.login("bacsi")
    assert r.status_code == 302
    token = csrf(s.get(emr.url("/patients/"), timeout=30).text)
    r = s.post(emr.url(f"/admin/users/{me.id}/profile"), data=_form(me, role="admin") | {"csrf_token": token},
               allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert s.get(emr.url(f"/admin/users/{me.id}"), allow_redirects=False, timeout=30).status_code == 403
    assert _user(emr, "bacsi").role == "physician"
    factory = emr.session_factory()
    with factory() as session:
        assert session.scalar(select(AuditEntry.id).where(AuditEntry.action == "user.update")) is None
    factory.kw["bind"].dispose()


def test_the_admin_form_needs_its_csrf_token_and_ignores_smuggled_fields(emr: RunningEmr) -> None:
    target = _user(emr, "bsnoi")
    admin, r = emr.login("quantri")
    assert r.status_code == 302
    url = emr.url(f"/admin/users/{target.id}/profile")
    forged = admin.post(url, data=_form(target, role="admin"), allow_redirects=False, timeout=30)
    assert forged.status_code == 400  # a page elsewhere posting with the admin's cookie
    assert _user(emr, "bsnoi").role == "physician"

    token = csrf(admin.get(emr.url(f"/admin/users/{target.id}"), timeout=30).text)
    smuggled = _form(target, title="Bác sĩ nội trú") | {
        "csrf_token": token, "username": "quantri2", "active": "0", "is_department_head": "1",
        "password_hash": "x", "session_version": "0"}
    assert admin.post(url, data=smuggled, allow_redirects=False, timeout=30).status_code == 302
    after = _user(emr, "bsnoi")
    assert after.title == "Bác sĩ nội trú"
    assert (after.username, after.active, after.is_department_head) == ("bsnoi", True, False)
    assert after.password_hash == target.password_hash and after.session_version == target.session_version
    assert emr.login("bsnoi")[1].status_code == 302  # the account still logs in as before


def test_a_demotion_ends_the_cookie_and_the_token_at_once(emr: RunningEmr) -> None:
    from emr.access.users import create_token

    victim = _user(emr, "bacsi")
    factory = emr.session_factory()
    with factory() as session:
        api_token = create_token(session, SETUP, victim.id, "máy trạm")
    factory.kw["bind"].dispose()
    doctor, r = emr.login("bacsi")
    assert r.status_code == 302
    copy = doctor.cookies.get_dict()

    def api() -> int:
        return requests.get(emr.url("/api/patients?q=nguyen"), headers={"Authorization": f"Bearer {api_token}"},
                            timeout=30).status_code

    def replay() -> requests.Response:
        thief = client("127.0.0.9")
        thief.cookies.update(copy)
        return thief.get(emr.url("/orders/new/1"), allow_redirects=False, timeout=30)

    assert api() == 200 and replay().status_code != 302
    admin, _ = emr.login("quantri")
    token = csrf(admin.get(emr.url(f"/admin/users/{victim.id}"), timeout=30).text)
    r = admin.post(emr.url(f"/admin/users/{victim.id}/profile"), data=_form(victim, role="nurse") | {
        "csrf_token": token}, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "done=role" in r.headers["Location"]

    assert replay().status_code == 302  # back to the login page: the physician's session is over
    assert api() == 401
    nurse, r = emr.login("bacsi")
    assert r.status_code == 302
    # Logged in again, the account has the nurse's rights only: ordering imaging is a physician's.
    assert nurse.get(emr.url("/orders/new/1"), allow_redirects=False, timeout=30).status_code == 403
