"""The head of a department (trưởng khoa) reviews the emergency accesses of their own department only.

Decision: the admin reviews every break-the-glass access; the head of a department (a physician or
radiologist with the department-head flag) reviews those of the users now in their department, never
their own (the admin reviews those). Tried here against the real app: a head of another department
cannot see the accesses (list, pending count) nor mark one by posting the form directly with a valid
CSRF token of their own session, and the refusal is audited; a physician of the department who is not
its head, or a head whose flag was taken away, is refused the page; the service refuses on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import Actor
from emr.access import break_glass
from emr.access.permissions import care_basis
from emr.access.users import create_user
from emr.core.exceptions import PermissionDenied
from emr.models import AuditEntry, BreakGlassAccess, User
from emr.patients import encounters
from emr.patients import service as patients
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    csrf_token,
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
# username: (role, department, head of it)
PEOPLE = {
    "quantri": ("admin", None, False),
    "tk_noi": ("physician", "K19", True),  # head of K19
    "tk_capcuu": ("physician", "K01", True),  # head of K01
    "tk_cdha": ("radiologist", "K30", True),  # head of imaging, with nobody's access to review
    "bs_noi": ("physician", "K19", False),  # a physician of K19, not its head
    "ktv_noi": ("technician", "K19", False),
    "bs_capcuu": ("physician", "K01", False),
}


@dataclass
class World:
    app: Flask
    factory: Any
    grants: dict[str, int]  # who broke the glass → the access

    def client(self, username: str) -> FlaskClient:
        return logged_in(self.app, username)

    def state(self, grant_id: int) -> tuple[Any, Any]:
        with self.factory() as s:
            g = s.get(BreakGlassAccess, grant_id)
            return g.reviewed_at, g.reviewed_by

    def user_id(self, username: str) -> int:
        with self.factory() as s:
            return int(s.scalar(select(User.id).where(User.username == username)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:  # noqa: F811
    patch = cheap_password_hashing()  # this module logs in often
    _settings, engine, app, factory = sqlite_app(tmp_path_factory.mktemp("break-glass-heads"), sqlite_template)
    with factory() as s:
        deps = {code: encounters.ensure_department(s, code, f"Khoa {code}").id for code in ("K19", "K01", "K30")}
        s.commit()
        users = {}
        for username, (role, dep, head) in PEOPLE.items():
            users[username] = create_user(s, SETUP, username, PASSWORD, role, f"Người dùng {username}",
                                          department_id=deps[dep] if dep else None,
                                          practising_cert_no=f"{username}/HCM-CCHN")
            users[username].is_department_head = head
        s.commit()
        p = patients.create_patient(s, SETUP, {"full_name": "Lý Thị Khẩn", "birth_date": "1990-05-17", "sex": "F",
                                               "cccd": "079190654321", "province_code": "79"})
        grants = {}
        for username in ("ktv_noi", "bs_capcuu", "tk_noi"):
            u = users[username]
            grants[username] = break_glass.open_break_glass(
                s, Actor(u.id, username, u.role, "127.0.0.1"), p.id, "Cấp cứu ngoài giờ, cần xem phim cũ").id
    yield World(app, factory, grants)
    engine.dispose()
    patch.undo()


def _listed(page: str) -> set[int]:
    return {int(x) for x in re.findall(r'data-grant="(\d+)"', page)}


def _denied(world: World, username: str) -> list[tuple[str, str | None]]:
    with world.factory() as s:
        return [(a, o) for a, o in s.execute(select(AuditEntry.action, AuditEntry.object_id).where(
            AuditEntry.username == username, AuditEntry.outcome == "denied"))]


def test_each_head_sees_only_their_departments_accesses(world: World) -> None:
    g = world.grants
    admin = world.client("quantri").get("/admin/break-glass").get_data(as_text=True)
    assert _listed(admin) == {g["ktv_noi"], g["bs_capcuu"], g["tk_noi"]}
    assert "Chưa xem xét: 3 lượt" in admin
    noi = world.client("tk_noi").get("/admin/break-glass")
    assert noi.status_code == 200
    # Their technician's access; not K01's, nor their own (the admin reviews a head's own access).
    assert _listed(noi.get_data(as_text=True)) == {g["ktv_noi"]}
    assert "Chưa xem xét: 1 lượt" in noi.get_data(as_text=True)
    assert "Khoa K19" in noi.get_data(as_text=True)
    capcuu = world.client("tk_capcuu").get("/admin/break-glass", query_string={"show": "pending"})
    assert capcuu.status_code == 200 and _listed(capcuu.get_data(as_text=True)) == {g["bs_capcuu"]}
    cdha = world.client("tk_cdha").get("/admin/break-glass").get_data(as_text=True)
    assert _listed(cdha) == set() and "Chưa xem xét: 0 lượt" in cdha
    # The listing is audited with the department it covered.
    with world.factory() as s:
        details = s.scalars(select(AuditEntry.details).where(AuditEntry.username == "tk_noi",
                                                             AuditEntry.action == "break_glass.review")).all()
    assert details and all('"department_id"' in d for d in details)


def _care_denials(world: World) -> int:
    with world.factory() as s:
        return len(s.scalars(select(AuditEntry.id).where(AuditEntry.action == "care.denied")).all())


def test_the_patient_links_to_the_chart_only_when_the_head_may_open_it(world: World) -> None:
    """A head reviews accesses to patients outside their own care: the chart would answer 403, so the name is
    plain text then; a link only when the head may open the chart (here: tk_noi's own emergency access to the
    same patient). Deciding this audits no refusal (the page is not an attempt to open the chart)."""
    with world.factory() as s:
        tk_noi, tk_capcuu = (s.scalar(select(User).where(User.username == u)) for u in ("tk_noi", "tk_capcuu"))
        patient_id = s.get(BreakGlassAccess, world.grants["bs_capcuu"]).patient_id
        assert care_basis(s, tk_capcuu, patient_id) is None  # the premise: the chart refuses this head
        assert care_basis(s, tk_noi, patient_id) == "break_glass"
    before = _care_denials(world)
    capcuu = world.client("tk_capcuu").get("/admin/break-glass").get_data(as_text=True)
    row = capcuu[capcuu.index(f'data-grant="{world.grants["bs_capcuu"]}"'):]
    assert "Lý Thị Khẩn" in row and 'class="chart-link"' not in capcuu
    assert f"/patients/{patient_id}" not in capcuu
    noi = world.client("tk_noi").get("/admin/break-glass").get_data(as_text=True)
    assert f'class="chart-link" href="/patients/{patient_id}' in noi
    assert _care_denials(world) == before


def test_a_head_of_another_department_cannot_mark_by_posting_directly(world: World) -> None:
    grant_id = world.grants["ktv_noi"]  # K19's
    for username in ("tk_capcuu", "tk_cdha"):
        c = world.client(username)
        token = csrf_token(c, "/admin/break-glass")  # a valid token of their own session
        r = c.post(f"/admin/break-glass/{grant_id}/review", data={"csrf_token": token, "note": "duyệt hộ"})
        assert r.status_code == 403, username
        assert ("break_glass.reviewed", str(grant_id)) in _denied(world, username), username
    assert world.state(grant_id) == (None, None)
    # A head cannot mark their own access either.
    c = world.client("tk_noi")
    own = world.grants["tk_noi"]
    r = c.post(f"/admin/break-glass/{own}/review", data={"csrf_token": csrf_token(c, "/admin/break-glass")})
    assert r.status_code == 403 and world.state(own) == (None, None)
    assert ("break_glass.reviewed", str(own)) in _denied(world, "tk_noi")

    # The service refuses on its own (a future route cannot forget the check).
    with world.factory() as s:
        for username in ("tk_capcuu", "tk_cdha", "bs_noi", "ktv_noi"):
            u = s.scalar(select(User).where(User.username == username))
            with pytest.raises(PermissionDenied):
                break_glass.mark_reviewed(s, Actor(u.id, username, u.role, "127.0.0.1"), grant_id, "x")
            if username in ("bs_noi", "ktv_noi"):
                with pytest.raises(PermissionDenied):
                    break_glass.recent_break_glass(s, Actor(u.id, username, u.role, "127.0.0.1"))
    assert world.state(grant_id) == (None, None)


def test_the_head_marks_their_departments_access_audited(world: World) -> None:
    grant_id = world.grants["ktv_noi"]
    c = world.client("tk_noi")
    token = csrf_token(c, "/admin/break-glass")
    assert c.post(f"/admin/break-glass/{grant_id}/review", data={"note": "x"}).status_code == 400  # no CSRF
    r = c.post(f"/admin/break-glass/{grant_id}/review", data={"csrf_token": token, "note": "Đã hỏi lại KTV"})
    assert r.status_code == 302
    reviewed_at, reviewed_by = world.state(grant_id)
    assert reviewed_at is not None and reviewed_by == world.user_id("tk_noi")
    with world.factory() as s:
        row = s.scalars(select(AuditEntry).where(AuditEntry.action == "break_glass.reviewed",
                                                 AuditEntry.outcome == "success",
                                                 AuditEntry.object_id == str(grant_id))).one()
    assert row.username == "tk_noi" and '"department_id"' in (row.details or "")


def test_not_a_head_no_page(world: World) -> None:
    for username in ("bs_noi", "ktv_noi", "bs_capcuu"):
        c = world.client(username)
        assert c.get("/admin/break-glass").status_code == 403, username
        assert ("break_glass.review", "/admin/break-glass") in _denied(world, username), username
    # The flag taken away (or the head moved to another department, which drops it): refused at once.
    with world.factory() as s:
        s.scalar(select(User).where(User.username == "tk_capcuu")).is_department_head = False
        s.commit()
    c = world.client("tk_capcuu")
    assert c.get("/admin/break-glass").status_code == 403
    token = csrf_token(c, "/patients/")
    r = c.post(f"/admin/break-glass/{world.grants['bs_capcuu']}/review", data={"csrf_token": token})
    assert r.status_code == 403 and world.state(world.grants["bs_capcuu"]) == (None, None)
