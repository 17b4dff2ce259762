"""The way to a physician's signing page (/signing/users/<id>: keys, head of department, deputies and acting
heads). Before, no page linked to it and the sign page told users to go "Quản lý tài khoản → Khóa ký số", a path
that does not exist; now the admin's account page links to it and the sign page names the real way."""

from __future__ import annotations

import html
import re

from flask import Flask
from sqlalchemy.orm import Session

from emr.i18n import t

from .conftest import World, login


def _page(client: object, path: str) -> str:
    r = client.get(path)  # type: ignore[attr-defined]
    assert r.status_code == 200, path
    return html.unescape(r.get_data(as_text=True))


def test_the_admin_reaches_a_physician_signing_page_from_the_account_page(
    app: Flask, world: World, session: Session
) -> None:
    doctor, nurse = world.users["physician"].id, world.users["nurse"].id
    radiologist = world.users["radiologist"].id
    session.rollback()
    admin = app.test_client()
    login(admin, "admin1")
    page = _page(admin, f"/admin/users/{doctor}")
    link = re.search(r'<a href="(/signing/users/\d+)">([^<]*)</a>', page)
    assert link and link.group(1) == f"/signing/users/{doctor}"
    assert t("users.signing_keys") in link.group(2)
    keys = _page(admin, link.group(1))  # the page it names: keys, the head flag, deputies and acting heads
    assert t("signing.keys.department_head") in keys and t("substitutes.title") in keys
    assert t("users.signing_keys_only") in _page(admin, f"/admin/users/{radiologist}")  # keys only
    assert "/signing/users/" not in _page(admin, f"/admin/users/{nurse}")  # a nurse does not sign documents


def test_the_sign_page_hint_names_the_real_way(app: Flask, world: World, session: Session) -> None:
    session.rollback()
    hint = t("signing.sign.head_nobody", department="Khoa Nội tổng hợp")
    assert "Quản lý tài khoản" not in hint
    admin = app.test_client()
    login(admin, "admin1")
    # Each step it names is on the pages: the menu, the accounts page, the link on an account's page.
    assert f"{t('nav.admin')} → {t('nav.users')} →" in hint and t("users.signing_keys") in hint
    menu = _page(admin, "/admin").split("</summary>")
    assert menu[0].endswith(t("nav.admin")) and f'<a href="/admin/users/">{t("nav.users")}</a>' in menu[1]
    assert t("users.signing_keys") in _page(admin, f"/admin/users/{world.users['physician'].id}")
