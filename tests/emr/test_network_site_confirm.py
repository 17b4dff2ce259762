"""Registering or editing a site with a signing CA takes two submits: the first shows the CA's fingerprint to
read out by phone and saves nothing, the second (box ticked) saves. Everything typed on the first must be what
the second saves (QA walkthrough, /network/sites):

- the secrets (the token the other site issued to us, the DICOMweb password) are never printed back, so they
  come back sealed (encrypted, bound to the login session and the form, 15 minutes) and are saved on the
  confirmation; before the fix the site was saved with no outbound token at all. A sealed value that is too
  old, or posted from another login, is refused with a request to type the secret again: never saved blank;
- the edit page's "active" and "new token" choices survive the round trip too;
- the confirmation step opens at the top of the form with the fingerprint and its box, the form's action
  lands on it (#site-form-status), and the add-site form comes before the list it used to sit ~1000 px under;
- "blank keeps the stored token / CA" is said only where something is stored (editing a site).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.i18n import t
from emr.models import NetworkSite
from emr.network.sites import SiteIn, create_site
from emr.web import network as network_web

from .conftest import World, csrf_token, login

SETUP = Actor(None, "setup", "admin", None)
OUTBOUND = "token-bv-b-cap-cho-ta-" + "q" * 24
PASSWORD = "mat-khau-dicomweb-bv-b"
SITE = {"name": "Bệnh viện tỉnh B", "ae_title": "SITEB", "host": "10.0.0.2", "port": "11112",
        "emr_url": "https://bv-b.example.vn", "dicomweb_url": "https://pacs.bv-b.example.vn/dicom-web",
        "dicomweb_username": "bvb-gui"}


def _admin(client: FlaskClient) -> FlaskClient:
    assert login(client, "admin1").status_code == 302
    return client


def _post(client: FlaskClient, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)},
                       content_type="multipart/form-data")


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    return found.group(1) if found else ""


def _carried(page: str) -> dict[str, str]:
    """What the browser posts back of the sealed secrets (the password boxes themselves come back empty)."""
    return {"carried_secrets": _hidden(page, "carried_secrets"),
            "carried_secrets_fields": _hidden(page, "carried_secrets_fields")}


def _sha(pki: Any) -> str:
    return hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()


def _site(session: Session) -> NetworkSite | None:
    session.expire_all()
    site = session.scalar(select(NetworkSite).where(NetworkSite.ae_title == "SITEB"))
    session.rollback()  # SQLite transactions here are BEGIN IMMEDIATE: none left open while the app writes
    return site


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_secrets_typed_before_the_fingerprint_check_are_saved(
    client: FlaskClient, session: Session, world: World, pki: Any,
) -> None:
    admin = _admin(client)
    form = {**SITE, "signing_ca_pem": pki.ca_cert_path.read_text()}
    first = _post(admin, "/network/sites", {**form, "outbound_token": OUTBOUND, "dicomweb_password": PASSWORD})
    assert first.status_code == 422 and _site(session) is None
    cookies = " ".join(c.value for c in admin._cookies.values())  # type: ignore[attr-defined]

    # The confirmation, as the browser sends it: the password boxes are empty again.
    saved = _post(admin, "/network/sites", {**form, "signing_ca_confirm": _sha(pki), **_carried(first.text)})
    assert saved.status_code == 200, saved.text
    site = _site(session)
    assert site is not None and site.signing_ca_sha256 == _sha(pki)
    assert site.outbound_token == OUTBOUND and site.dicomweb_password == PASSWORD

    # Never printed back in clear, in the page or in the session cookie; each field says it holds a value.
    assert OUTBOUND not in first.text and PASSWORD not in first.text
    assert OUTBOUND not in cookies and PASSWORD not in cookies
    assert _carried(first.text)["carried_secrets_fields"] == "dicomweb_password,outbound_token"
    assert t("network.sites.secrets_carried", minutes=15) in first.text
    assert first.text.count('data-carried="1"') == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_secret_typed_again_on_the_confirmation_wins(
    client: FlaskClient, session: Session, world: World, pki: Any,
) -> None:
    admin = _admin(client)
    form = {**SITE, "signing_ca_pem": pki.ca_cert_path.read_text()}
    first = _post(admin, "/network/sites", {**form, "outbound_token": OUTBOUND})
    retyped = OUTBOUND.replace("q", "r")
    saved = _post(admin, "/network/sites", {**form, "signing_ca_confirm": _sha(pki), "outbound_token": retyped,
                                            **_carried(first.text)})
    assert saved.status_code == 200, saved.text
    site = _site(session)
    assert site is not None and site.outbound_token == retyped and site.dicomweb_password is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stale_or_foreign_sealed_secret_is_refused_not_saved_blank(
    client: FlaskClient, session: Session, world: World, pki: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = _admin(client)
    form = {**SITE, "signing_ca_pem": pki.ca_cert_path.read_text()}
    first = _post(admin, "/network/sites", {**form, "outbound_token": OUTBOUND})
    confirm = {**form, "signing_ca_confirm": _sha(pki), **_carried(first.text)}
    message = t("network.error.secret_expired", minutes=15)
    # Another login (a new session id) cannot use it: the admin types it again.
    _admin(client)
    other = _post(admin, "/network/sites", confirm)
    assert other.status_code == 422 and message in other.text and _site(session) is None
    # Past its time.
    fresh = _post(admin, "/network/sites", {**form, "outbound_token": OUTBOUND})
    monkeypatch.setattr(network_web, "_clock", lambda: time.time() + 15 * 60 + 5)
    late = _post(admin, "/network/sites", {**form, "signing_ca_confirm": _sha(pki), **_carried(fresh.text)})
    assert late.status_code == 422 and message in late.text and _site(session) is None
    # Tampered with.
    forged = {**confirm, "carried_secrets": confirm["carried_secrets"][:-4] + "AAAA"}
    monkeypatch.setattr(network_web, "_clock", time.time)
    assert _post(admin, "/network/sites", forged).status_code == 422 and _site(session) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_edit_pages_choices_survive_the_confirmation(
    client: FlaskClient, session: Session, world: World, pki: Any,
) -> None:
    site, _ = create_site(session, SETUP, SiteIn(SITE["name"], "SITEB", "10.0.0.2", 11112, SITE["emr_url"],
                                                 outbound_token="token-cu-" + "o" * 30), inbound_token="i" * 40)
    session.rollback()
    path = f"/network/sites/{site.id}"
    admin = _admin(client)
    # "active" unticked (switching the site off), a new token asked for, a new outbound token typed.
    form = {**SITE, "new_token": "1", "signing_ca_pem": pki.ca_cert_path.read_text()}
    first = _post(admin, path, {**form, "outbound_token": OUTBOUND})
    assert first.status_code == 422 and OUTBOUND not in first.text
    assert re.search(r'name="active" value="1"[^>]*>', first.text).group(0).find("checked") == -1  # type: ignore[union-attr]
    assert 'name="new_token" value="1" checked' in first.text
    saved = _post(admin, path, {**form, "signing_ca_confirm": _sha(pki), **_carried(first.text)})
    assert saved.status_code == 200, saved.text
    assert 'id="issued-token"' in saved.text
    after = _site(session)
    assert after is not None and after.outbound_token == OUTBOUND and after.active is False
    assert after.signing_ca_sha256 == _sha(pki)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_confirmation_step_opens_at_the_top(client: FlaskClient, session: Session, world: World,
                                                pki: Any) -> None:
    admin = _admin(client)
    first = _post(admin, "/network/sites", {**SITE, "signing_ca_pem": pki.ca_cert_path.read_text()}).text
    status = first.index('id="site-form-status"')
    # The form (with its status box first) comes before the empty list and the trust store.
    assert status < first.index(t("network.sites.empty")) < first.index('id="trust-anchors"')
    assert status < first.index('id="signing-ca-offered"') < first.index('name="signing_ca_confirm"')
    assert first.index('name="signing_ca_confirm"') < first.index('name="name"')  # the box before the fields
    assert 'action="/network/sites#site-form-status"' in first
    # A field to fix: said at the top too.
    bad = _post(admin, "/network/sites", {**SITE, "port": "99999"}).text
    assert bad.index(t("network.sites.not_saved")) < bad.index(t("network.sites.empty"))
    # Nothing posted: the list first, as before.
    plain = admin.get("/network/sites").text
    assert 'id="site-form-status"' not in plain and plain.index(t("network.sites.empty")) < plain.index('id="add-site"')


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_keep_what_is_stored_hints_only_when_editing(client: FlaskClient, session: Session, world: World) -> None:
    admin = _admin(client)
    keep_token, keep_ca = t("network.field.outbound_token.hint"), t("network.signing_ca.keep_hint")
    new = admin.get("/network/sites").text
    assert keep_token not in new and keep_ca not in new and "Để trống: giữ" not in new
    site, _ = create_site(session, SETUP, SiteIn(SITE["name"], "SITEB", "10.0.0.2", 11112, SITE["emr_url"]),
                          inbound_token="i" * 40)
    session.rollback()
    edit = admin.get(f"/network/sites/{site.id}").text
    assert edit.count(keep_token) == 2 and keep_ca in edit
