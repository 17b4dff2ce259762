"""A registered site's signing CA (issue 15): attached when the site is registered or edited, after the
admin confirms its SHA-256 fingerprint by phone, imported into the one trust store; reports that site
signs and sends back then verify as trusted ("valid"), not "intact" (chain not trusted).

The other site is played by the session's development PKI (tests/signing_fixtures.py: its CA, TSA and a
clinician's PKCS#12); this site's trust store starts empty, as at a hospital that never met that CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.exceptions import ValidationFailed
from emr.i18n import t
from emr.imaging import orders
from emr.models import AuditEntry, NetworkReceived, NetworkSite, NetworkTransfer
from emr.network.sites import SiteIn, create_site, read_signing_ca
from emr.patients import service as patients
from emr.signing.dicom_pdf import encapsulate_pdf
from emr.signing.pki import fingerprint, list_trust_anchors
from emr.signing.trust import trust_anchors_dir

from .conftest import World, csrf_token, login

SETUP = Actor(None, "setup", "admin", None)
TOKEN = "site-b-token-" + "x" * 30
SITE = {"name": "Bệnh viện tỉnh B", "ae_title": "SITEB", "host": "10.0.0.2", "port": "11112",
        "emr_url": "https://bv-b.example.vn"}


@pytest.fixture(scope="module")
def signed_report(pki: Any, pki_server: Any) -> bytes:
    """A report signed at the other site by a clinician whose certificate its CA issued (timestamped by its TSA)."""
    from emr.signing import render_document_pdf, sign_pdf
    from tests.signing.conftest import document, make_context, signer_for

    return sign_pdf(render_document_pdf(document()), "radiologist", signer_for(pki, "bs.an"),
                    make_context(pki, pki_server))


def _ca_sha256(pki: Any) -> str:
    return hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()


def _read_request(session: Session, world: World, site_id: int) -> tuple[int, str]:
    """A read request this site sent to ``site_id`` for a new CT order (as outgoing.request_read leaves it)."""
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, {"full_name": "Đỗ Văn Bình", "birth_date": "1970-05-02", "sex": "M",
                                                  "confirm_new_person": True})
    order = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ"})
    request = NetworkTransfer(kind="read_request", site_id=site_id, patient_id=p.id, order_id=order.id,
                              study_instance_uid=order.study_instance_uid, status="sent", question="?")
    session.add(request)
    session.commit()
    ids = request.id, request.study_instance_uid
    session.rollback()  # SQLite transactions here are BEGIN IMMEDIATE: none left open while the app writes
    return ids


def _send_report(app: Flask, request: tuple[int, str], pdf: bytes, token: str) -> dict[str, Any]:
    """The other site returns its signed report (for read request ``request``: id, Study UID) through
    the inter-site API."""
    dicom = encapsulate_pdf(pdf, {"StudyInstanceUID": request[1], "PatientID": "B-1",
                                  "PatientName": "X", "AccessionNumber": "1", "StudyDate": "",
                                  "StudyDescription": ""}, title="Kết quả", instance_number=1)
    body = {"ref": str(request[0]), "dicom": base64.b64encode(dicom).decode(),
            "sha256": hashlib.sha256(dicom).hexdigest()}
    r = app.test_client().post("/network/api/v1/reports", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.get_json()
    return answer


def _admin(client: FlaskClient) -> FlaskClient:
    assert login(client, "admin1").status_code == 302
    return client


def _shown(response: Any) -> str:
    """The page's text as read: a fingerprint may break only between its pairs (<wbr>)."""
    return str(response.text).replace("<wbr>", "")


def _post(client: FlaskClient, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)},
                       content_type="multipart/form-data")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_registering_a_site_with_its_ca_makes_its_reports_trusted(
    app: Flask, client: FlaskClient, session: Session, world: World, settings: Any, pki: Any, signed_report: bytes,
) -> None:
    admin = _admin(client)
    store = trust_anchors_dir(settings)
    sha = _ca_sha256(pki)
    # First post: nothing is saved; the page shows the CA's subject and fingerprint to read out by phone.
    first = _post(admin, "/network/sites", {**SITE, "signing_ca_pem": pki.ca_cert_path.read_text()})
    assert first.status_code == 422
    assert fingerprint(sha) in _shown(first) and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint(sha))
    assert pki.ca_certificate().subject.rfc4514_string() in first.text
    assert t("network.error.signing_ca_unconfirmed") in first.text
    assert session.scalar(select(NetworkSite)) is None and list_trust_anchors(store) == []
    session.rollback()  # SQLite transactions here are BEGIN IMMEDIATE: end the read before the app writes
    # Confirmed (the checkbox posts the fingerprint that was shown), uploaded as a DER file this time.
    der = pki.ca_certificate().public_bytes(serialization.Encoding.DER)
    r = _post(admin, "/network/sites", {**SITE, "signing_ca_confirm": sha,
                                        "signing_ca_file": (io.BytesIO(der), "ca-bv-b.cer")})
    assert r.status_code == 200, r.text
    token = r.text.split('<code id="issued-token">')[1].split("</code>")[0]
    session.expire_all()
    site = session.scalar(select(NetworkSite).where(NetworkSite.ae_title == "SITEB"))
    assert site is not None and site.signing_ca_sha256 == sha
    assert [a.sha256 for a in list_trust_anchors(store)] == [sha]  # the one trust store, via import_trust_anchor
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "network.site.signing_ca"))
    assert entry is not None and entry.username == "admin1" and sha in entry.details

    result = _send_report(app, _read_request(session, world, site.id), signed_report, token)
    assert result["signature"] == "valid"
    row = session.scalar(select(NetworkReceived).where(NetworkReceived.kind == "report"))
    assert row is not None and row.signature_status == "valid"
    session.rollback()
    # The trust-anchor list says whose CA it is.
    page = admin.get("/network/sites").text
    assert t("network.anchors.owner", site="Bệnh viện tỉnh B") in page and fingerprint(sha) in page.replace("<wbr>", "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_attaching_the_ca_when_editing_a_site_turns_intact_into_trusted(
    app: Flask, client: FlaskClient, session: Session, world: World, settings: Any, pki: Any, signed_report: bytes,
) -> None:
    site, _ = create_site(session, SETUP, SiteIn(SITE["name"], "SITEB", "10.0.0.2", 11112, SITE["emr_url"]),
                          inbound_token=TOKEN)
    before = _send_report(app, _read_request(session, world, site.id), signed_report, TOKEN)
    assert before["signature"] == "intact"  # the gap: signed there, chain not trusted here
    admin = _admin(client)
    path = f"/network/sites/{site.id}"
    form = {**SITE, "active": "1", "signing_ca_pem": pki.ca_cert_path.read_text().replace("\n", "\r\n")}
    shown = _post(admin, path, form)
    assert shown.status_code == 422 and fingerprint(_ca_sha256(pki)) in _shown(shown)
    saved = _post(admin, path, {**form, "signing_ca_confirm": fingerprint(_ca_sha256(pki))})
    assert saved.status_code == 200, saved.text
    assert fingerprint(_ca_sha256(pki)) in _shown(admin.get(path))  # the edit page shows the CA attached
    after = _send_report(app, _read_request(session, world, site.id), signed_report, TOKEN)
    assert after["signature"] == "valid"
    session.expire_all()
    update = session.scalar(select(AuditEntry).where(AuditEntry.action == "network.site.update",
                                                     AuditEntry.username == "admin1"))
    assert update is not None and "signing_ca" in update.details


def _expired_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA cũ của BV B")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=800))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_leaf_certificate_is_refused_with_the_message(
    client: FlaskClient, session: Session, world: World, settings: Any, pki: Any,
) -> None:
    leaf = pki.users["bs.an"]
    subject = leaf.certificate().subject.rfc4514_string()
    sha = hashlib.sha256(leaf.certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    admin = _admin(client)
    # Even "confirmed", a clinician's own certificate is not a CA: refused, nothing kept.
    r = _post(admin, "/network/sites", {**SITE, "signing_ca_pem": leaf.cert_path.read_text(),
                                        "signing_ca_confirm": sha})
    assert r.status_code == 422, r.text
    assert t("network.error.signing_ca_not_ca", subject=subject) in r.text
    assert session.scalar(select(NetworkSite)) is None and list_trust_anchors(trust_anchors_dir(settings)) == []


@pytest.mark.parametrize(("data", "key"), [
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
     "network.error.signing_ca_unreadable"),
    (b"hello", "network.error.signing_ca_unreadable"),
    (_expired_ca(), "network.error.signing_ca_expired"),
])
def test_garbage_and_expired_cas_are_refused(data: bytes, key: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        read_signing_ca(data)
    assert caught.value.fields == {"signing_ca": key}
    assert "{" not in caught.value.user_message()  # the subject is filled in where the message names it


def test_a_ca_sent_with_its_private_key_is_refused(pki: Any) -> None:
    with_key = pki.ca_cert_path.read_bytes() + (Path(pki.directory) / "ca.key").read_bytes()
    with pytest.raises(ValidationFailed) as caught:
        read_signing_ca(with_key)
    assert caught.value.fields == {"signing_ca": "network.error.signing_ca_private_key"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_registers_a_site_with_its_ca_only_after_the_fingerprint(
    settings: Any, session: Session, tmp_path: Path, pki: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from filmless.cli import main

    monkeypatch.setenv("FILMLESS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", settings.database_url)
    sha = _ca_sha256(pki)
    token_file = tmp_path / "token-for-b"
    args = ["site", "add", "Bệnh viện tỉnh B", "--ae", "SITEB", "--host", "10.0.0.2", "--port", "11112",
            "--issue-token-to", str(token_file), "--signing-ca", str(pki.ca_cert_path)]
    assert main(args) == 3  # not confirmed yet: it prints what to read out, and registers nothing
    out = capsys.readouterr()
    assert fingerprint(sha) in out.out and t("network.error.signing_ca_unconfirmed") in out.err
    assert not token_file.exists() and session.scalar(select(NetworkSite)) is None
    session.rollback()
    assert main([*args, "--signing-ca-fingerprint", fingerprint(sha)]) == 0
    session.expire_all()
    assert session.scalar(select(NetworkSite.signing_ca_sha256)) == sha
    assert [a.sha256 for a in list_trust_anchors(trust_anchors_dir(settings))] == [sha]
    session.rollback()
    capsys.readouterr()
    assert main(["pki", "list"]) == 0
    assert t("network.anchors.owner", site="Bệnh viện tỉnh B") in capsys.readouterr().out
    # A leaf certificate through the CLI: the same Vietnamese refusal.
    leaf = pki.users["bs.cuong"]
    assert main(["site", "trust-ca", "SITEB", "--signing-ca", str(leaf.cert_path)]) == 1
    subject = leaf.certificate().subject.rfc4514_string()
    assert t("network.error.signing_ca_not_ca", subject=subject) in capsys.readouterr().err


def test_migration_0025_matches_the_model(engine: Any) -> None:
    """network_sites.signing_ca_sha256 as the model declares it, on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from emr.models import Base

    with engine.connect() as c:
        diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                 if "network_sites" in repr(d)]
    assert diffs == []
    assert "signing_ca_sha256" in {col["name"] for col in inspect(engine).get_columns("network_sites")}
