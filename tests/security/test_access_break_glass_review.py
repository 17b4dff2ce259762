"""Marking an emergency (break-the-glass) access reviewed: the admin, once, with CSRF, audited.

The mark tells the admin which accesses are already looked at, so a forged or
replayed mark would hide an access from review. Against a real ``filmless emr
serve``: every other role (a physician of the user's own department included)
and the logged-out are refused and the refusal audited, the form needs
its CSRF token, a GET or an API token does nothing, an unknown access is 404,
and a second mark (another admin, a replayed form) is refused without
overwriting the first reviewer's note; the service refuses on its own too.
The head of a department reviews their own department's accesses only:
tests/security/test_access_break_glass_department_head.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emr.access import break_glass
from emr.core.exceptions import PermissionDenied
from emr.models import AuditEntry, BreakGlassAccess, User
from tests.security.auth_support import (
    SETUP,
    Record,
    RunningEmr,
    actor_for,
    csrf,
    in_session,
    make_record,
    make_users,
    running_emr,
)

OTHERS = {"bacsi": "physician", "bschan": "radiologist", "ktv": "technician", "dieuduong": "nurse",
          "luutru": "records_clerk"}


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("emr-break-glass-review")) as running:
        make_users(running, ("quantri", "admin"), ("quantri2", "admin"), *OTHERS.items())
        yield running


@pytest.fixture(scope="module")
def record(emr: RunningEmr) -> Record:
    return make_record(emr, "bacsi", "bschan", signed=True)




def _grant(emr: RunningEmr, record: Record) -> int:
    """The technician breaks the glass on the patient (a reason, audited): one access to review."""
    def make(session: Any) -> int:
        return break_glass.open_break_glass(session, actor_for(session, "ktv"), record.patient_id,
                                            "Máy CT khoa cấp cứu hỏng, chụp lại tại khoa").id

    grant_id: int = in_session(emr, make)
    return grant_id


def _state(emr: RunningEmr, grant_id: int) -> tuple[Any, Any, Any]:
    def read(session: Any) -> tuple[Any, Any, Any]:
        g = session.get(BreakGlassAccess, grant_id)
        return g.reviewed_at, g.reviewed_by, g.review_note

    result: tuple[Any, Any, Any] = in_session(emr, read)
    return result


def _audit(emr: RunningEmr, action: str, outcome: str) -> list[tuple[str, str | None]]:
    def rows(session: Any) -> list[tuple[str, str | None]]:
        return [(u, o) for u, o in session.execute(select(AuditEntry.username, AuditEntry.object_id).where(
            AuditEntry.action == action, AuditEntry.outcome == outcome))]

    result: list[tuple[str, str | None]] = in_session(emr, rows)
    return result


def test_no_other_role_marks_an_access_reviewed(emr: RunningEmr, record: Record) -> None:
    grant_id = _grant(emr, record)
    path = f"/admin/break-glass/{grant_id}/review"
    for i, username in enumerate(OTHERS, start=10):
        http, r = emr.login(username, source=f"127.0.0.{i}")
        assert r.status_code == 302, username
        assert http.get(emr.url("/admin/break-glass"), timeout=30).status_code == 403, username
        token = csrf(http.get(emr.url("/patients/"), timeout=30).text)
        r = http.post(emr.url(path), data={"csrf_token": token, "note": "tự duyệt"}, allow_redirects=False,
                      timeout=30)
        assert r.status_code == 403, (username, r.status_code)
        assert ("break_glass.review", path) in [(a, o) for a, o in _denials(emr, username)], username
    assert _state(emr, grant_id) == (None, None, None)
    # Logged out, or with the admin's API token instead of a session: the login page, nothing marked.
    anonymous = requests.post(emr.url(path), data={"note": "x"}, allow_redirects=False, timeout=30)
    assert anonymous.status_code in (302, 400, 401)
    token = in_session(emr, lambda s: _api_token(s, "quantri"))
    api = requests.post(emr.url(path), data={"note": "x"}, headers={"Authorization": f"Bearer {token}"},
                        allow_redirects=False, timeout=30)
    assert api.status_code in (302, 400, 401)
    assert _state(emr, grant_id) == (None, None, None)

    # The service refuses on its own (a future route cannot forget the check).
    def by_service(session: Any) -> None:
        for username in OTHERS:
            with pytest.raises(PermissionDenied):
                break_glass.mark_reviewed(session, actor_for(session, username), grant_id, "x")

    in_session(emr, by_service)
    assert _state(emr, grant_id) == (None, None, None)


def _denials(emr: RunningEmr, username: str) -> list[tuple[str, str | None]]:
    def rows(session: Any) -> list[tuple[str, str | None]]:
        return [(a, o) for a, o in session.execute(select(AuditEntry.action, AuditEntry.object_id).where(
            AuditEntry.username == username, AuditEntry.outcome == "denied"))]

    result: list[tuple[str, str | None]] = in_session(emr, rows)
    return result


def _api_token(session: Any, username: str) -> str:
    from emr.access.users import create_token

    user = session.scalar(select(User).where(User.username == username))
    return create_token(session, SETUP, user.id, "test")


def test_the_admin_marks_once_with_csrf_and_a_replay_keeps_the_first_note(emr: RunningEmr, record: Record) -> None:
    grant_id = _grant(emr, record)
    path = f"/admin/break-glass/{grant_id}/review"
    admin, r = emr.login("quantri", source="127.0.0.40")
    assert r.status_code == 302
    page = admin.get(emr.url("/admin/break-glass"), timeout=30)
    assert page.status_code == 200 and f'action="{path}"' in page.text
    # No CSRF token (a cross-site form), or a GET: nothing happens.
    assert admin.post(emr.url(path), data={"note": "x"}, allow_redirects=False, timeout=30).status_code == 400
    assert admin.get(emr.url(path), allow_redirects=False, timeout=30).status_code == 405
    assert _state(emr, grant_id) == (None, None, None)
    # An access that does not exist.
    token = csrf(page.text)
    assert admin.post(emr.url("/admin/break-glass/999999/review"), data={"csrf_token": token},
                      allow_redirects=False, timeout=30).status_code == 404
    # The mark: who and when come from the session and the clock, not the form.
    r = admin.post(emr.url(path), data={"csrf_token": token, "note": "Đã xác minh", "reviewed_by": "1",
                                        "reviewed_at": "2020-01-01"}, allow_redirects=False, timeout=30)
    assert r.status_code == 302
    reviewed_at, reviewed_by, note = _state(emr, grant_id)
    admin_id = in_session(emr, lambda s: s.scalar(select(User.id).where(User.username == "quantri")))
    assert reviewed_at is not None and reviewed_at.year != 2020 and reviewed_by == admin_id and note == "Đã xác minh"
    # Replayed by the same admin, or by another admin: refused, the first note stays.
    assert admin.post(emr.url(path), data={"csrf_token": token, "note": "ghi đè"}, allow_redirects=False,
                      timeout=30).status_code == 409
    other, _ = emr.login("quantri2", source="127.0.0.41")
    other_token = csrf(other.get(emr.url("/admin/break-glass"), timeout=30).text)
    r = other.post(emr.url(path), data={"csrf_token": other_token, "note": "của tôi"}, allow_redirects=False,
                   timeout=30)
    assert r.status_code == 409 and "đã được người khác đánh dấu" in r.text
    assert _state(emr, grant_id) == (reviewed_at, admin_id, "Đã xác minh")
    assert [u for u, o in _audit(emr, "break_glass.reviewed", "success") if o == str(grant_id)] == ["quantri"]
