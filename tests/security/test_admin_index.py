"""The index of the administration pages (/admin) lists only what the user may open.

Decision: /admin links the administration pages the user's role allows (the same rule as each page's own
route, emr.access.permissions; a head of department also the break-glass review); a user who may open
none is refused (403, audited) rather than shown an empty page. The top bar's "Quản trị" menu is the same
list except the audit log, which has its own link in the top bar (so it is on the bar once, not twice). Every link
on the index opens for that user, and no link leads to a page that would refuse them. An admin lands on /admin
after logging in. The top bar names a head of department "Trưởng khoa", their role unchanged.
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
from emr.access.users import create_user
from emr.i18n import t
from emr.models import AuditEntry
from emr.patients import encounters
from emr.web.admin import ADMIN_SECTIONS
from tests.emr.app_support import cheap_password_hashing, logged_in, sqlite_app
from tests.emr.conftest import (
    sqlite_template,  # noqa: F401 - the migrated SQLite template (session fixture)
)

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"
ROLES = ("admin", "physician", "radiologist", "technician", "nurse", "records_clerk")
ALL = {"/admin/audit", "/admin/users/", "/admin/catalogues/", "/admin/hl7", "/admin/ops", "/network/sites",
       "/admin/break-glass", "/admin/outbox/"}


@dataclass
class World:
    app: Flask
    factory: Any

    def client(self, username: str) -> FlaskClient:
        return logged_in(self.app, username)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:  # noqa: F811
    patch = cheap_password_hashing()  # this module logs in often
    _settings, engine, app, factory = sqlite_app(tmp_path_factory.mktemp("admin-index"), sqlite_template)
    with factory() as s:
        dep = encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
        s.commit()
        for role in ROLES:
            create_user(s, SETUP, f"{role}1", PASSWORD, role, f"Người dùng {role}", department_id=dep.id,
                        practising_cert_no=f"{role}/HCM-CCHN")
        head = create_user(s, SETUP, "truongkhoa", PASSWORD, "radiologist", "Trưởng khoa CĐHA", department_id=dep.id,
                           practising_cert_no="tk/HCM-CCHN")
        head.is_department_head = True
        s.commit()
    yield World(app, factory)
    engine.dispose()
    patch.undo()


def _links(page: str) -> set[str]:
    section = page.partition('class="admin-sections"')[2].partition("</ul>")[0]
    return set(re.findall(r'<a href="([^"]+)"', section))


EXPECTED = {
    "admin1": ALL,
    "physician1": {"/admin/catalogues/"},
    "nurse1": {"/admin/catalogues/"},
    "records_clerk1": {"/admin/catalogues/"},
    "truongkhoa": {"/admin/break-glass"},  # a radiologist who heads a department: the review, nothing else
}


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_the_index_lists_only_what_the_user_may_open(world: World, username: str) -> None:
    c = world.client(username)
    r = c.get("/admin")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert t("admin.index.title") in page
    assert _links(page) == EXPECTED[username]
    for url in _links(page):  # every link opens for this user
        assert c.get(url).status_code == 200, (username, url)
    listed = page.partition('class="admin-sections"')[2].partition("</ul>")[0]
    user = _user(world, username)
    for section in ADMIN_SECTIONS:  # each by its label from the catalogue, only when its rule allows it
        assert (f">{t(section.label)}</a>" in listed) == section.may(user), (username, section.endpoint)
    # The slashed address leads to the same page with the same rights.
    assert c.get("/admin/").status_code == 308


def _user(world: World, username: str) -> Any:
    from emr.models import User

    with world.factory() as s:
        user = s.scalar(select(User).where(User.username == username))
        s.expunge(user)
        return user


@pytest.mark.parametrize("username", ["radiologist1", "technician1"])
def test_a_user_with_no_administration_page_is_refused_and_audited(world: World, username: str) -> None:
    c = world.client(username)
    assert c.get("/admin").status_code == 403
    assert c.get("/admin/", follow_redirects=True).status_code == 403
    with world.factory() as s:
        denied = s.scalars(select(AuditEntry.action).where(AuditEntry.username == username,
                                                          AuditEntry.outcome == "denied")).all()
    assert "admin.index" in denied
    # No menu either: nothing to open.
    assert t("admin.index.all") not in c.get("/patients/", follow_redirects=True).get_data(as_text=True)


def test_the_menu_is_the_same_list(world: World) -> None:
    page = world.client("truongkhoa").get("/reading/", follow_redirects=True).get_data(as_text=True)
    menu = page.partition('class="nav-more-list"')[2].partition("</div>")[0]
    assert set(re.findall(r'<a href="([^"]+)"', menu)) == {"/admin", "/admin/break-glass"}
    page = world.client("nurse1").get("/patients/").get_data(as_text=True)
    menu = page.partition('class="nav-more-list"')[2].partition("</div>")[0]
    assert set(re.findall(r'<a href="([^"]+)"', menu)) == {"/admin", "/admin/catalogues/"}


def test_the_audit_log_is_on_the_top_bar_once_beside_the_menu(world: World) -> None:
    page = world.client("admin1").get("/admin").get_data(as_text=True)
    bar = page.partition("<nav>")[2].partition("</nav>")[0]
    menu = bar.partition('class="nav-more-list"')[2].partition("</div>")[0]
    assert bar.count('href="/admin/audit"') == 1 and 'href="/admin/audit"' not in menu
    assert set(re.findall(r'<a href="([^"]+)"', menu)) == {"/admin"} | (ALL - {"/admin/audit"})


def test_an_admin_lands_on_the_administration_index(world: World) -> None:
    r = world.client("admin1").get("/")
    assert r.status_code == 302 and r.headers["Location"] == "/admin"


def _who(page: str) -> str:
    return page.partition('<span class="who">')[2].partition("</span>")[0]


def test_the_top_bar_names_a_head_of_department_by_function(world: World) -> None:
    who = _who(world.client("truongkhoa").get("/reading/", follow_redirects=True).get_data(as_text=True))
    assert f"<small>{t('roles.department_head')}</small>" in who and t("roles.department_head") == "Trưởng khoa"
    assert _user(world, "truongkhoa").role == "radiologist"  # the role itself is unchanged
    # Anyone else: their role's name.
    who = _who(world.client("radiologist1").get("/reading/", follow_redirects=True).get_data(as_text=True))
    assert f"<small>{t('roles.radiologist')}</small>" in who and t("roles.department_head") not in who


def test_anonymous_is_sent_to_login(world: World) -> None:
    r = world.app.test_client().get("/admin")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
