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


def test_a_certificate_number_cannot_be_given_to_a_second_account(emr: RunningEmr) -> None:
    """Walkthrough 2: signatures and insurance exports name the signer by the CCHN, so a second account on
    one number could sign as someone else. Spellings that differ by case or spaces, the edit form, and two
    requests at once (past the application's check, onto the unique index) all leave one holder."""
    from concurrent.futures import ThreadPoolExecutor

    held = _user(emr, "bacsi").practising_cert_no or ""
    assert held
    admin, r = emr.login("quantri")
    assert r.status_code == 302
    token = csrf(admin.get(emr.url("/admin/users/"), timeout=30).text)

    def create(username: str, cert: str) -> requests.Response:
        form = {"csrf_token": token, "username": username, "password": "mot-mat-khau-dai", "role": "physician",
                "full_name": "Bác sĩ Mạo Danh", "practising_cert_no": cert}
        return admin.post(emr.url("/admin/users/"), data=form, allow_redirects=False, timeout=60)

    for i, cert in enumerate((held, held.upper(), f"  {held.lower()}\t", f"{held} ")):
        r = create(f"maodanh{i}", cert)
        assert r.status_code == 422 and "bacsi" in r.text and "Người dùng bacsi" in r.text, cert
    target = _user(emr, "bsnoi")
    r = admin.post(emr.url(f"/admin/users/{target.id}/profile"),
                   data=_form(target, practising_cert_no=held.swapcase()) | {"csrf_token": token},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 422 and _user(emr, "bsnoi").practising_cert_no == target.practising_cert_no

    with ThreadPoolExecutor(4) as pool:  # one free number, four accounts asking for it at once
        answers = list(pool.map(lambda i: create(f"cungluc{i}", "009876/HCM-CCHN").status_code, range(4)))
    assert sorted(answers) == [302, 422, 422, 422], answers  # the others are told who holds it
    factory = emr.session_factory()
    with factory() as session:
        holders = session.scalars(select(User.username).where(
            User.practising_cert_no.in_(["009876/HCM-CCHN"]))).all()
        assert len(holders) == 1
        assert session.scalar(select(User.id).where(User.username.like("maodanh%"))) is None
    factory.kw["bind"].dispose()
