"""Withdrawing a trust anchor: an admin stops trusting a CA (compromised, retired) at once, with a reason,
audited, confirmed, and a record kept under ``<store>/withdrawn/`` of what was trusted until when.

The running application reads the store on every verification (SigningConfig.anchors), so no restart:
a report the other site signed before is kept as it was verified ("valid"); the same report received after
the withdrawal is "intact" (chain not trusted), never "invalid". Replacing a site's CA offers to withdraw
the old one. The other site is played by the session's development PKI (tests/signing_fixtures.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.exceptions import ValidationFailed
from emr.i18n import t
from emr.models import AuditEntry, NetworkReceived, NetworkSite
from emr.network.sites import SiteIn, create_site, withdraw_anchor
from emr.signing.exceptions import PkiError
from emr.signing.pki import (
    fingerprint,
    import_trust_anchor,
    list_trust_anchors,
    list_withdrawn_anchors,
    withdraw_trust_anchor,
)
from emr.signing.trust import trust_anchors_dir

from . import test_network_signing_ca as signing_ca
from .conftest import World
from .test_network_signing_ca import (
    SETUP,
    SITE,
    TOKEN,
    _admin,
    _ca_sha256,
    _post,
    _read_request,
    _send_report,
    _shown,
)

signed_report = signing_ca.signed_report  # the other site's signed report (a module fixture)


def _text(response: Any) -> str:
    """The page as read: entities decoded, a fingerprint whole (<wbr> only between its pairs)."""
    return html.unescape(_shown(response))


def _new_ca(name: str = "CA mới của BV B") -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), hashlib.sha256(
        cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _site_with_ca(session: Session, settings: Any, pki: Any) -> NetworkSite:
    site, _ = create_site(session, SETUP, SiteIn(SITE["name"], "SITEB", "10.0.0.2", 11112, SITE["emr_url"],
                                                 signing_ca_pem=pki.ca_cert_path.read_text(),
                                                 signing_ca_confirm=_ca_sha256(pki)),
                          inbound_token=TOKEN, trust_anchors_dir=trust_anchors_dir(settings))
    return site


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_admin_withdraws_a_sites_ca_and_its_new_reports_are_no_longer_trusted(
    app: Flask, client: FlaskClient, session: Session, world: World, settings: Any, pki: Any, signed_report: bytes,
) -> None:
    store = trust_anchors_dir(settings)
    sha = _ca_sha256(pki)
    site = _site_with_ca(session, settings, pki)
    site_id = site.id
    before = _send_report(app, _read_request(session, world, site_id), signed_report, TOKEN)
    assert before["signature"] == "valid"
    admin = _admin(client)
    sites_page = admin.get("/network/sites")
    path = f"/network/trust-anchors/{sha}/withdraw"
    assert path in sites_page.text  # each anchor row links to its withdrawal
    page = admin.get(path)
    assert page.status_code == 200 and fingerprint(sha) in _shown(page)
    assert t("network.anchors.owner", site=SITE["name"]) in page.text and t("network.withdraw.effect") in _text(page)
    # No reason, or not confirmed: nothing happens, and the page says why.
    blank = _post(admin, path, {"reason": "  ", "confirm": "1"})
    assert blank.status_code == 422 and t("network.error.withdraw_reason") in blank.text
    unconfirmed = _post(admin, path, {"reason": "CA của BV B bị lộ khoá"})
    assert unconfirmed.status_code == 422 and t("network.error.withdraw_unconfirmed") in unconfirmed.text
    assert [a.sha256 for a in list_trust_anchors(store)] == [sha]
    done = _post(admin, path, {"reason": "CA của BV B bị lộ khoá", "confirm": "1"})
    assert done.status_code == 302 and done.headers["Location"].endswith("#trust-anchors")
    # Gone from the store at once, kept (certificate + reason) for the auditor.
    assert list_trust_anchors(store) == []
    [gone] = list_withdrawn_anchors(store)
    assert gone.sha256 == sha and gone.reason == "CA của BV B bị lộ khoá" and gone.withdrawn_by == "admin1"
    assert gone.owners == (SITE["name"],)
    assert x509.load_pem_x509_certificate(gone.path.read_bytes()) == pki.ca_certificate()
    assert json.loads(gone.path.with_suffix(".json").read_text())["reason"] == "CA của BV B bị lộ khoá"
    session.expire_all()
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "signing.trust_anchor.withdraw"))
    assert entry is not None and entry.username == "admin1" and entry.object_id == sha
    assert "bị lộ khoá" in entry.details and SITE["name"] in entry.details
    assert session.get(NetworkSite, site_id).signing_ca_sha256 is None  # the site no longer has a trusted CA
    # The report verified before keeps its stored result; the same paper received now is not trusted,
    # its signature still intact: never "invalid". Same running app, no restart.
    stored = session.scalar(select(NetworkReceived.signature_status).where(NetworkReceived.kind == "report"))
    assert stored == "valid"
    session.rollback()
    after = _send_report(app, _read_request(session, world, site_id), signed_report, TOKEN)
    assert after["signature"] == "intact"
    # The sites page lists the withdrawn CA with when, by whom and why, and no longer as trusted.
    shown = admin.get(done.headers["Location"])
    text = _text(shown)
    assert t("network.withdraw.done") in text and t("network.withdrawn.title") in text
    assert "CA của BV B bị lộ khoá" in text and f'<tr data-sha256="{sha}"><td data-label' in text
    assert f'href="{path}"' not in text
    assert admin.get(path).status_code == 404  # withdrawn twice: there is nothing left to withdraw


def test_a_paper_under_a_withdrawn_ca_verifies_as_untrusted_not_invalid(
    tmp_path: Path, pki: Any, signed_report: bytes,
) -> None:
    """What every verification path reads (SigningConfig.anchors → verify_pdf): chain untrusted, signature
    and bytes still good."""
    from emr.signing import verify_pdf
    from emr.signing.service import SigningConfig

    store = tmp_path / "trust-anchors"
    import_trust_anchor(pki.ca_cert_path.read_bytes(), store)
    config = SigningConfig(trust_anchors_dir=store)
    assert verify_pdf(signed_report, config.anchors(), crls=[pki.crl()]).valid
    withdraw_trust_anchor(store, fingerprint(_ca_sha256(pki)), reason="CA đã ngừng sử dụng", by="admin1")
    report = verify_pdf(signed_report, config.anchors(), crls=[pki.crl()])
    assert not report.valid
    [sig] = report.signatures
    assert sig.chain_status == "untrusted" and sig.intact and sig.signature_valid
    assert "signing.verify.untrusted" in sig.problems


def test_withdrawing_needs_a_reason_and_keeps_the_rest_of_a_bundle(tmp_path: Path, pki: Any) -> None:
    store = tmp_path / "trust-anchors"
    other, other_sha = _new_ca()
    store.mkdir()
    (store / "bundle.pem").write_bytes(pki.ca_cert_path.read_bytes() + other)  # as an admin may drop a chain
    sha = _ca_sha256(pki)
    with pytest.raises(PkiError):
        withdraw_trust_anchor(store, sha, reason=" ", by="admin1")
    with pytest.raises(PkiError):
        withdraw_trust_anchor(store, "00" * 32, reason="không có", by="admin1")
    assert {a.sha256 for a in list_trust_anchors(store)} == {sha, other_sha}
    withdraw_trust_anchor(store, sha, reason="CA bị lộ khoá", by="cli:root")
    assert [a.sha256 for a in list_trust_anchors(store)] == [other_sha]
    assert [w.sha256 for w in list_withdrawn_anchors(store)] == [sha]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_replacing_a_sites_ca_offers_to_withdraw_the_old_one(
    client: FlaskClient, session: Session, world: World, settings: Any, pki: Any,
) -> None:
    store = trust_anchors_dir(settings)
    old = _ca_sha256(pki)
    site_id = _site_with_ca(session, settings, pki).id
    session.rollback()
    new_pem, new = _new_ca()
    admin = _admin(client)
    path = f"/network/sites/{site_id}"
    form = {**SITE, "active": "1", "signing_ca_pem": new_pem.decode()}
    shown = _post(admin, path, form)
    assert shown.status_code == 422 and 'name="withdraw_previous"' in shown.text  # the offer
    assert pki.ca_certificate().subject.rfc4514_string() in shown.text  # naming the CA it would withdraw
    # Ticked without a reason: refused, nothing changed.
    no_reason = _post(admin, path, {**form, "signing_ca_confirm": new, "withdraw_previous": "1"})
    assert no_reason.status_code == 422 and t("network.error.withdraw_reason") in no_reason.text
    assert [a.sha256 for a in list_trust_anchors(store)] == [old]
    saved = _post(admin, path, {**form, "signing_ca_confirm": new, "withdraw_previous": "1",
                                "withdraw_previous_reason": "BV B đổi sang CA mới"})
    assert saved.status_code == 200, saved.text
    assert [a.sha256 for a in list_trust_anchors(store)] == [new]
    assert [(w.sha256, w.reason) for w in list_withdrawn_anchors(store)] == [(old, "BV B đổi sang CA mới")]
    session.expire_all()
    assert session.get(NetworkSite, site_id).signing_ca_sha256 == new
    assert session.scalar(select(AuditEntry.object_id).where(
        AuditEntry.action == "signing.trust_anchor.withdraw")) == old


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_replacing_without_ticking_keeps_the_old_ca_trusted(
    session: Session, world: World, settings: Any, pki: Any,
) -> None:
    from emr.network.sites import update_site

    store = trust_anchors_dir(settings)
    site = _site_with_ca(session, settings, pki)
    new_pem, new = _new_ca()
    update_site(session, SETUP, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url,
                                               signing_ca_pem=new_pem.decode(), signing_ca_confirm=new),
                trust_anchors_dir=store)
    assert {a.sha256 for a in list_trust_anchors(store)} == {_ca_sha256(pki), new}
    assert list_withdrawn_anchors(store) == []
    with pytest.raises(ValidationFailed) as caught:  # the service asks for the confirmation too
        withdraw_anchor(session, SETUP, new, "CA bị lộ khoá", trust_anchors_dir=store, confirmed=False)
    assert caught.value.fields == {"withdraw_confirm": "network.error.withdraw_unconfirmed"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_withdraws_an_anchor_only_when_confirmed_and_audits_it(
    settings: Any, session: Session, pki: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from filmless.cli import main

    monkeypatch.setenv("FILMLESS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", settings.database_url)
    store = trust_anchors_dir(settings)
    sha = _ca_sha256(pki)
    import_trust_anchor(pki.ca_cert_path.read_bytes(), store)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    # No terminal to ask on and no --yes: refused, still trusted.
    assert main(["pki", "remove-anchor", fingerprint(sha), "--reason", "CA bị lộ khoá"]) == 3
    assert [a.sha256 for a in list_trust_anchors(store)] == [sha]
    assert main(["pki", "withdraw-anchor", "ab" * 32, "--reason", "x", "--yes"]) == 1  # not in the store
    capsys.readouterr()
    assert main(["pki", "withdraw-anchor", fingerprint(sha), "--reason", "CA bị lộ khoá", "--yes"]) == 0
    assert t("network.withdraw.done") in capsys.readouterr().out
    assert list_trust_anchors(store) == []
    session.expire_all()
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "signing.trust_anchor.withdraw"))
    assert entry is not None and entry.username.startswith("cli:") and entry.object_id == sha
    session.rollback()
    assert main(["pki", "list"]) == 0
    out = capsys.readouterr().out
    assert t("network.withdrawn.title") in out and sha in out and "CA bị lộ khoá" in out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_replaces_a_sites_ca_and_withdraws_the_old_one_when_asked(
    settings: Any, session: Session, world: World, pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from filmless.cli import main

    monkeypatch.setenv("FILMLESS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", settings.database_url)
    store = trust_anchors_dir(settings)
    old = _ca_sha256(pki)
    _site_with_ca(session, settings, pki)
    session.rollback()
    first_pem, first = _new_ca("CA thứ hai của BV B")
    (tmp_path / "first.pem").write_bytes(first_pem)
    # Without --withdraw-previous the old CA stays trusted, and the command says how to withdraw it.
    assert main(["site", "trust-ca", "SITEB", "--signing-ca", str(tmp_path / "first.pem"),
                 "--signing-ca-fingerprint", first]) == 0
    assert f"pki withdraw-anchor {old}" in capsys.readouterr().out
    assert {a.sha256 for a in list_trust_anchors(store)} == {old, first}
    second_pem, second = _new_ca("CA thứ ba của BV B")
    (tmp_path / "second.pem").write_bytes(second_pem)
    assert main(["site", "trust-ca", "SITEB", "--signing-ca", str(tmp_path / "second.pem"),
                 "--signing-ca-fingerprint", second, "--withdraw-previous", "BV B đổi CA"]) == 0
    assert {a.sha256 for a in list_trust_anchors(store)} == {old, second}
    assert [(w.sha256, w.reason) for w in list_withdrawn_anchors(store)] == [(first, "BV B đổi CA")]
