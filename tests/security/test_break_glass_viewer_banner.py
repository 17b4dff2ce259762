"""``GET /break-glass/mine``: the image viewer's banner of emergency (break-the-glass) accesses in force.

The EMR's pages say so from base.html; the viewer is a page of its own and asks this route. It answers with the
logged-in user's own accesses only: nothing in the request names a user (a ``user_id`` or ``username`` in the
query string changes nothing), another user's access is never listed, an access that ended is gone, a role that
cannot break the glass gets an empty list, and a logged-out caller is sent to the login page (no list). The end
is given in facility time, as the EMR's banner shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from emr import Actor
from emr.access import break_glass
from emr.access.users import create_user
from emr.core.clock import to_local
from emr.models import BreakGlassAccess, utcnow
from emr.patients import service as patients
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    patient_data,
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"


@dataclass
class World:
    app: Flask
    factory: Any
    users: dict[str, int]
    patients: dict[str, tuple[int, str]]  # name -> (id, code)
    grants: dict[str, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:  # noqa: F811
    patch = cheap_password_hashing()
    _settings, engine, app, factory = sqlite_app(tmp_path_factory.mktemp("bg-mine"), sqlite_template)
    with factory() as s:
        users = {}
        for username, role in (("bacsi", "physician"), ("ktv", "technician"), ("dieuduong", "nurse"),
                               ("quantri", "admin")):
            users[username] = create_user(s, SETUP, username, PASSWORD, role, f"Người dùng {username}",
                                          practising_cert_no=f"{username}/HCM-CCHN").id
        s.commit()
        clerk = Actor(None, "test-setup", "records_clerk", "127.0.0.1")
        made = {}
        for name, cccd in (("Lý Thị Khẩn", "079190000020"), ("Đào Văn Cấp", "079190000021")):
            p = patients.create_patient(s, clerk, patient_data(full_name=name, cccd=cccd, bhyt_number=None))
            made[name] = (p.id, p.code)
        s.commit()

        def actor(username: str, role: str) -> Actor:
            return Actor(users[username], username, role, "127.0.0.1")

        grants = {
            "bacsi": break_glass.open_break_glass(s, actor("bacsi", "physician"), made["Lý Thị Khẩn"][0],
                                                  "Cấp cứu ngoài giờ, bác sĩ điều trị vắng mặt", hours=4).id,
            "ktv": break_glass.open_break_glass(s, actor("ktv", "technician"), made["Đào Văn Cấp"][0],
                                                "Máy CT khoa cấp cứu hỏng, chụp lại tại khoa", hours=2).id,
        }
    yield World(app, factory, users, made, grants)
    engine.dispose()
    patch.undo()


def _mine(world: World, username: str, query: str = "") -> list[dict[str, Any]]:
    r = logged_in(world.app, username).get(f"/break-glass/mine{query}")
    assert r.status_code == 200 and r.is_json, (username, r.status_code)
    assert "no-store" in r.headers["Cache-Control"]
    grants: list[dict[str, Any]] = r.get_json()["grants"]
    return grants


def test_only_the_callers_own_accesses_with_the_end_in_facility_time(world: World) -> None:
    pid, code = world.patients["Lý Thị Khẩn"]
    with world.factory() as s:
        expires = s.get(BreakGlassAccess, world.grants["bacsi"]).expires_at
    [grant] = _mine(world, "bacsi")
    assert grant["patient_id"] == pid and grant["patient_name"] == "Lý Thị Khẩn" and grant["patient_code"] == code
    assert grant["chart_url"] == f"/patients/{pid}"
    assert grant["until"] == to_local(expires).strftime("%d/%m/%Y %H:%M")
    assert grant["until"] != expires.strftime("%d/%m/%Y %H:%M")  # facility time, not UTC
    assert grant["expires_at"].endswith("+07:00")
    # Naming another user changes nothing: the technician's access is never in the physician's list.
    for query in (f"?user_id={world.users['ktv']}", "?username=ktv", f"?patient_id={world.patients['Đào Văn Cấp'][0]}"):
        assert [g["patient_name"] for g in _mine(world, "bacsi", query)] == ["Lý Thị Khẩn"], query
    assert [g["patient_name"] for g in _mine(world, "ktv", f"?user_id={world.users['bacsi']}")] == ["Đào Văn Cấp"]


def test_roles_without_break_glass_and_the_logged_out_get_nothing(world: World) -> None:
    assert _mine(world, "dieuduong") == []
    assert _mine(world, "quantri") == []  # the admin reviews accesses; the route never lists them
    r = world.app.test_client().get("/break-glass/mine")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert b"patient" not in r.data


def test_an_ended_access_is_no_longer_listed(world: World) -> None:
    with world.factory() as s:
        s.execute(update(BreakGlassAccess).where(BreakGlassAccess.id == world.grants["ktv"])
                  .values(expires_at=utcnow() - timedelta(minutes=1)))
        s.commit()
    assert _mine(world, "ktv") == []
    assert len(_mine(world, "bacsi")) == 1
