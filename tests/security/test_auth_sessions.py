"""A captured session cookie or API token stops working when the server says so (issue 10, item 12).

Real HTTP against `filmless emr serve`: the attacker replays a copy of the
victim's cookie (or token) after logout, a password reset and a
deactivation; a token also dies at its expiry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from emr.models import ApiToken, UserSession, utcnow
from tests.security.auth_support import SETUP, RunningEmr, client, csrf, make_users, running_emr, user_id


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-sessions")) as running:
        make_users(running, ("quantri", "admin"), ("bacsi", "physician"), ("dieuduong", "nurse"),
                   ("bschan", "radiologist"))
        yield running


def _replay(emr: RunningEmr, cookies: dict[str, str]) -> requests.Response:
    """The attacker's copy of the cookie, on another machine."""
    thief = client("127.0.0.9")
    thief.cookies.update(cookies)
    return thief.get(emr.url("/patients/"), allow_redirects=False, timeout=30)


def _admin_post(emr: RunningEmr, path: str, data: dict[str, str]) -> requests.Response:
    admin, r = emr.login("quantri")
    assert r.status_code == 302
    page = admin.get(emr.url(path.rsplit("/", 1)[0]), timeout=30).text
    return admin.post(emr.url(path), data={**data, "csrf_token": csrf(page)}, allow_redirects=False, timeout=60)


def test_logout_ends_the_session_on_the_server(emr: RunningEmr) -> None:
    victim, r = emr.login("bacsi")
    assert r.status_code == 302
    stolen = victim.cookies.get_dict()
    assert _replay(emr, stolen).status_code == 200  # the copy works while the session lives
    page = victim.get(emr.url("/patients/"), timeout=30).text
    out = victim.post(emr.url("/logout"), data={"csrf_token": csrf(page)}, allow_redirects=False, timeout=30)
    assert out.status_code == 302
    r = _replay(emr, stolen)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    factory = emr.session_factory()
    with factory() as session:
        ended = session.scalars(select(UserSession).where(UserSession.end_reason == "logout")).all()
    factory.kw["bind"].dispose()
    assert ended, "the logout is recorded on the server"


def test_password_reset_and_deactivation_end_sessions(emr: RunningEmr) -> None:
    nurse_id = user_id(emr, "dieuduong")
    victim, _ = emr.login("dieuduong")
    stolen = victim.cookies.get_dict()
    assert _replay(emr, stolen).status_code == 200
    r = _admin_post(emr, f"/admin/users/{nurse_id}/password", {"password": "a new long password 2026"})
    assert r.status_code == 302
    assert _replay(emr, stolen).status_code == 302
    assert victim.get(emr.url("/patients/"), allow_redirects=False, timeout=30).status_code == 302

    victim, r = emr.login("dieuduong", "a new long password 2026")
    assert r.status_code == 302
    stolen = victim.cookies.get_dict()
    assert _replay(emr, stolen).status_code == 200
    assert _admin_post(emr, f"/admin/users/{nurse_id}/active", {"active": "0"}).status_code == 302
    assert _replay(emr, stolen).status_code == 302


def test_api_tokens_expire_and_die_on_password_reset(emr: RunningEmr) -> None:
    from emr.access.users import create_token

    rad_id = user_id(emr, "bschan")
    factory = emr.session_factory()
    with factory() as session:
        short = create_token(session, SETUP, rad_id, "pacs-bridge", days=1)
        long = create_token(session, SETUP, rad_id, "worklist")
        row = session.scalar(select(ApiToken).where(ApiToken.name == "worklist"))
        assert row is not None and row.expires_at is not None
        assert timedelta(days=89) < row.expires_at - utcnow() <= timedelta(days=90)
    factory.kw["bind"].dispose()

    def answer(token: str) -> int:
        return requests.get(emr.url("/api/patients?q=nguyen"), headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code

    assert answer(short) == 200 and answer(long) == 200
    with factory() as session:
        session.execute(update(ApiToken).where(ApiToken.name == "pacs-bridge")
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    factory.kw["bind"].dispose()
    assert answer(short) == 401  # expired
    assert answer(long) == 200
    assert _admin_post(emr, f"/admin/users/{rad_id}/password", {"password": "another long password"}).status_code == 302
    assert answer(long) == 401  # the reset revoked it
