"""Issue 15: other facilities may only do what the registry lets them, and people only what their role
and care scope let them.

* the gateway: an unknown AE title gets A-ASSOCIATE-RJ, a registered site's AE is admitted, a
  disabled site is refused again (real gateway, DCMTK echoscu, the EMR's registry on SQLite);
* the inter-site API: no token, a forged token, a disabled site's token → 401, audited; a report
  with no valid signature is refused and nothing is kept; a site cannot answer another site's
  request; hostile payloads get 4xx, never 500;
* people at the receiving site: the received list and a returned report only for patients in
  their care; the registry only for admins; the issued token is shown once, stored as a hash.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import EmrSettings, create_app, network_peer_provider, upgrade_database
from emr.access.audit import Actor
from emr.access.login_guard import LoginGuard
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.imaging import orders
from emr.models import AuditEntry, NetworkReceived, NetworkSite, NetworkTransfer
from emr.network import incoming
from emr.network.sites import SiteIn, create_site, token_hash, update_site
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing.dicom_pdf import encapsulate_pdf
from pacs_gateway import Gateway
from storage import OrthancStore
from tests.helpers import wait_for
from tests.pacs_gateway.conftest import dcmtk, gateway_settings

PASSWORD = "correct horse battery staple"
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
TOKEN_B = "token-site-b-" + "x" * 30
TOKEN_C = "token-site-c-" + "y" * 30


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("network-security")
    settings = EmrSettings(data_dir=tmp, database_url=f"sqlite:///{tmp}/emr.sqlite3", secret_key_file=tmp / "key")
    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings.database_url))
    with factory() as s:
        encounters.ensure_department(s, "K19", "Khoa Nội")
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        users = {}
        for name, role, dep in (("bs_care", "physician", k01.id), ("bs_other", "physician", None),
                                ("dieuduong", "nurse", None), ("quantri", "admin", None)):
            users[name] = create_user(s, SETUP, name, PASSWORD, role, name, department_id=dep)
        doctor = Actor(users["bs_care"].id, "bs_care", "physician", None)
        patient = patients.create_patient(s, doctor, {"full_name": "Đỗ Văn Bình", "birth_date": "1970-05-02",
                                                      "sex": "M", "cccd": "079070001122"})
        encounters.create_encounter(s, doctor, {"patient_id": patient.id, "kind": "outpatient",
                                                "department_code": "K01"})
        order = orders.create_order(s, doctor, {"patient_id": patient.id, "modality": "CT",
                                                "procedure_name": "CT sọ não"})
        site_b, _ = create_site(s, SETUP, SiteIn("Bệnh viện tỉnh B", "SITEB", "127.0.0.1", 11112,
                                                 "http://127.0.0.1:9", None, None, "t" * 40), inbound_token=TOKEN_B)
        site_c, _ = create_site(s, SETUP, SiteIn("Bệnh viện C", "SITEC", "127.0.0.2", 11112,
                                                 "http://127.0.0.1:9", None, None, "u" * 40), inbound_token=TOKEN_C)
        # A read request this site sent to B (as outgoing.request_read leaves it once delivered).
        request = NetworkTransfer(kind="read_request", site_id=site_b.id, patient_id=patient.id, order_id=order.id,
                                  study_instance_uid=order.study_instance_uid, status="sent", question="?")
        s.add(request)
        s.commit()
        ids = {"patient": patient.id, "order": order.id, "uid": order.study_instance_uid, "request": request.id,
               "site_b": site_b.id, "site_c": site_c.id}
    app = create_app(settings, test_config={"TESTING": True})
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    yield {"settings": settings, "factory": factory, "app": app, **ids}


def _login(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        r = client.post("/login", data={"username": username, "password": PASSWORD})
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    assert r.status_code == 302, r.text
    return client


def _denials(world: dict[str, Any]) -> int:
    with world["factory"]() as s:
        return len(list(s.scalars(select(AuditEntry).where(AuditEntry.action == "network.api",
                                                            AuditEntry.outcome == "denied"))))


# -- the DICOM door -----------------------------------------------------------------


@pytest.mark.slow
def test_gateway_refuses_unknown_ae_and_disabled_sites(world: dict[str, Any], orthanc: OrthancStore,
                                                       tmp_path: Path) -> None:
    gw = Gateway(gateway_settings(spool_dir=tmp_path / "spool", allowed_peers=("CT01@127.0.0.1",)), orthanc,
                 extra_peers=network_peer_provider(world["settings"]))
    gw.peers._refresh = 0.2  # the registry is re-read every few seconds; quicker here
    gw.start()
    try:
        def echo(aet: str) -> tuple[int, str]:
            done = dcmtk("echoscu", "-aet", aet, "-aec", "FILMLESS", "127.0.0.1", str(gw.port), timeout=30)
            return done.returncode, done.stdout + done.stderr

        code, out = echo("EVIL")
        assert code != 0 and "Rejected" in out, out
        assert echo("SITEB")[0] == 0  # registered: admitted although not in FILMLESS_GATEWAY_ALLOWED
        code, out = echo("SITEC")  # registered, but at 127.0.0.2: not from this address
        assert code != 0 and "Rejected" in out, out
        with world["factory"]() as s:
            site = s.get(NetworkSite, world["site_b"])
            update_site(s, SETUP, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url),
                        active=False)
        try:
            wait_for(lambda: echo("SITEB")[0] != 0, timeout=15, what="the disabled site refused")
        finally:
            with world["factory"]() as s:
                site = s.get(NetworkSite, world["site_b"])
                update_site(s, SETUP, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url),
                            active=True)
    finally:
        gw.stop()


# -- the inter-site API ---------------------------------------------------------------


def _study_body(world: dict[str, Any], ref: str = "77", **patient: Any) -> dict[str, Any]:
    who = {"cccd": "079070001122", "full_name": "Đỗ Văn Bình", "birth_date": "1970-05-02", "sex": "M"} | patient
    return {"ref": ref, "study_instance_uid": "1.2.826.0.1.3680043.8.498.1", "patient": who}


def test_inter_site_calls_need_an_active_sites_token(world: dict[str, Any]) -> None:
    client = world["app"].test_client()
    body = _study_body(world)
    before = _denials(world)
    assert client.post("/network/api/v1/studies", json=body).status_code == 401
    assert client.post("/network/api/v1/studies", json=body,
                       headers={"Authorization": "Bearer forged-token-" + "z" * 30}).status_code == 401
    assert client.post("/network/api/v1/studies", json=body,
                       headers={"Authorization": f"Basic {TOKEN_B}"}).status_code == 401
    assert _denials(world) == before + 3  # each refusal is on record
    with world["factory"]() as s:
        site = s.get(NetworkSite, world["site_c"])
        update_site(s, SETUP, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url),
                    active=False)
    try:
        r = client.post("/network/api/v1/studies", json=body, headers={"Authorization": f"Bearer {TOKEN_C}"})
        assert r.status_code == 401
    finally:
        with world["factory"]() as s:
            site = s.get(NetworkSite, world["site_c"])
            update_site(s, SETUP, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url),
                        active=True)
    r = client.post("/network/api/v1/studies", json=body, headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert r.status_code == 200 and r.get_json()["matched"] is True
    again = client.post("/network/api/v1/studies", json=body, headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert again.get_json() == r.get_json()  # a repeated delivery: the same row, not a second one
    with world["factory"]() as s:
        rows = list(s.scalars(select(NetworkReceived).where(NetworkReceived.remote_ref == "77")))
        assert len(rows) == 1 and rows[0].patient_id == world["patient"] and rows[0].match_method == "cccd"
        # Only the token's hash is kept.
        site = s.get(NetworkSite, world["site_b"])
        assert site.inbound_token_sha256 == token_hash(TOKEN_B) and TOKEN_B not in repr(vars(site))


@pytest.mark.parametrize("body", [
    {"ref": "1", "study_instance_uid": "1.2.3' OR 1=1", "patient": {"full_name": "X Y", "birth_date": "1970-01-01"}},
    {"ref": "1", "study_instance_uid": "1.2.3", "patient": {"full_name": "X Y", "birth_date": "not a date"}},
    {"ref": "1", "study_instance_uid": "1.2.3", "patient": {"full_name": "X Y", "birth_date": "1970-01-01",
                                                            "cccd": "12"}},
    {"ref": "1", "study_instance_uid": "1.2.3", "patient": "Đỗ Văn Bình"},
    {"ref": "", "study_instance_uid": "1.2.3", "patient": {}},
    [1, 2, 3],
])
def test_hostile_payloads_are_refused_cleanly(world: dict[str, Any], body: Any) -> None:
    client = world["app"].test_client()
    for path in ("/network/api/v1/studies", "/network/api/v1/read-requests", "/network/api/v1/reports"):
        r = client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN_B}"})
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)


def _report(world: dict[str, Any], ref: str) -> dict[str, Any]:
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"  # a report with no signature at all
    dicom = encapsulate_pdf(pdf, {"StudyInstanceUID": world["uid"], "PatientID": "X", "PatientName": "X",
                                  "AccessionNumber": "1", "StudyDate": "", "StudyDescription": ""},
                            title="Kết quả", instance_number=1)
    return {"ref": ref, "dicom": base64.b64encode(dicom).decode(), "sha256": hashlib.sha256(dicom).hexdigest()}


def test_reports_must_be_signed_and_answer_this_sites_request(world: dict[str, Any]) -> None:
    client = world["app"].test_client()
    body = _report(world, str(world["request"]))
    r = client.post("/network/api/v1/reports", json=body, headers={"Authorization": f"Bearer {TOKEN_C}"})
    assert r.status_code == 404  # C never got this request: it cannot answer it
    r = client.post("/network/api/v1/reports", json=body, headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert r.status_code == 422 and r.get_json()["key"] == "errors.validation"
    tampered = dict(body, sha256="0" * 64)
    r = client.post("/network/api/v1/reports", json=tampered, headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert r.status_code == 422
    with world["factory"]() as s:
        assert s.scalar(select(NetworkReceived).where(NetworkReceived.kind == "report")) is None
        assert s.get(NetworkTransfer, world["request"]).report_received_at is None
        refused = s.scalar(select(AuditEntry).where(AuditEntry.action == "network.report.receive",
                                                    AuditEntry.outcome == "failure"))
        assert refused is not None and refused.username == "site:Bệnh viện tỉnh B"


# -- people at the receiving site ----------------------------------------------------------


def test_received_list_and_reports_follow_the_care_scope(world: dict[str, Any]) -> None:
    with world["factory"]() as s:
        site = s.get(NetworkSite, world["site_b"])
        incoming.receive_study(s, site, _study_body(world, ref="care-1"))
        unmatched = _study_body(world, ref="care-2", cccd=None, full_name="Người Lạ", birth_date="1999-09-09")
        incoming.receive_study(s, site, unmatched)
        report = NetworkReceived(kind="report", site_id=site.id, remote_ref="care-3",
                                 study_instance_uid=world["uid"], patient_id=world["patient"],
                                 dicom=base64.b64decode(_report(world, "x")["dicom"]), signature_status="intact")
        s.add(report)
        s.commit()
        report_id = report.id
    app = world["app"]
    in_care = _login(app, "bs_care").get("/network/received").text
    assert "Đỗ Văn Bình" in in_care and "Người Lạ" not in in_care  # unmatched rows: for the records desk
    other = _login(app, "bs_other")
    page = other.get("/network/received").text
    assert "Đỗ Văn Bình" not in page and "Người Lạ" not in page
    assert other.get(f"/network/received/{report_id}/report.pdf").status_code == 403
    assert _login(app, "bs_care").get(f"/network/received/{report_id}/report.pdf").status_code == 200
    nurse = _login(app, "dieuduong").get("/network/received").text  # not care-scoped: the whole list
    assert "Người Lạ" in nurse and "Đỗ Văn Bình" in nurse
    assert _login(app, "quantri").get("/network/received").status_code == 403  # admins see no clinical data
    with world["factory"]() as s:
        views = list(s.scalars(select(AuditEntry).where(AuditEntry.action.in_(("network.received.list",
                                                                                "network.report.view")))))
        assert {v.username for v in views} >= {"bs_care", "bs_other", "dieuduong"}
        assert any(v.action == "care.denied" for v in s.scalars(select(AuditEntry).where(
            AuditEntry.username == "bs_other")))


def test_only_admins_manage_sites_and_tokens_are_shown_once(world: dict[str, Any]) -> None:
    app = world["app"]
    doctor, admin = _login(app, "bs_care"), _login(app, "quantri")
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        assert doctor.post("/network/sites", data={"name": "Giả mạo", "ae_title": "EVIL", "host": "10.0.0.1",
                                                   "port": "104"}).status_code == 403
        r = admin.post("/network/sites", data={"name": "Bệnh viện D", "ae_title": "SITED", "host": "10.0.0.4",
                                              "port": "104", "emr_url": "https://bv-d.example.vn"})
        assert r.status_code == 200, r.text
        token = r.text.split('<code id="issued-token">')[1].split("</code>")[0]
        assert len(token) >= 40
        assert token not in admin.get("/network/sites").text  # never shown again
        bad = admin.post("/network/sites", data={"name": "X", "ae_title": "A\\B", "host": "h h", "port": "0",
                                                "emr_url": "javascript:alert(1)"})
        assert bad.status_code == 422
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    with world["factory"]() as s:
        site = s.scalar(select(NetworkSite).where(NetworkSite.ae_title == "SITED"))
        assert site.inbound_token_sha256 == token_hash(token)
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "network.site.create",
                                                 AuditEntry.username == "quantri")) is not None
    assert "SITED@10.0.0.4" in network_peer_provider(world["settings"])()


def test_the_received_study_viewer_page_follows_role_and_care_scope(world: dict[str, Any]) -> None:
    """/network/received/<id>/view: image roles only, the patient in care, a study row whose images are here."""
    from emr.models import Study

    uid = "1.2.826.0.1.3680043.8.498.4242"
    with world["factory"]() as s:
        s.add(Study(orthanc_id="v" * 44, study_instance_uid=uid, state="linked", patient_id=world["patient"],
                    link_method="site"))
        row = NetworkReceived(kind="study", site_id=world["site_b"], remote_ref="view-1", study_instance_uid=uid,
                              patient_id=world["patient"], match_method="cccd")
        waiting = NetworkReceived(kind="study", site_id=world["site_b"], remote_ref="view-2",
                                  study_instance_uid=uid + ".9", patient_id=world["patient"], match_method="cccd")
        report = s.scalar(select(NetworkReceived).where(NetworkReceived.kind == "report"))
        s.add_all([row, waiting])
        s.commit()
        ids = (row.id, waiting.id, report.id if report else None)
    url = f"/network/received/{ids[0]}/view"
    ok = _login(world["app"], "bs_care").get(url)
    assert ok.status_code == 200 and "Nhận từ Bệnh viện tỉnh B" in ok.text
    assert _login(world["app"], "bs_other").get(url).status_code == 403  # not in care
    assert _login(world["app"], "dieuduong").get(url).status_code == 403  # no image role
    assert _login(world["app"], "quantri").get(url).status_code == 403
    client = _login(world["app"], "bs_care")
    assert client.get(f"/network/received/{ids[1]}/view").status_code == 404  # images not here
    if ids[2] is not None:
        assert client.get(f"/network/received/{ids[2]}/view").status_code == 404  # a report is not a study
    assert client.get("/network/received/999999/view").status_code == 404
    with world["factory"]() as s:
        denied = s.scalar(select(AuditEntry).where(AuditEntry.action == "care.denied",
                                                   AuditEntry.patient_id == world["patient"]))
        assert denied is not None


def test_a_stow_sites_dicomweb_password_is_kept_but_never_shown(world: dict[str, Any]) -> None:
    app = world["app"]
    admin = _login(app, "quantri")
    secret = "mat-khau-dicomweb-" + "z" * 20
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        r = admin.post("/network/sites", data={"name": "PACS tư nhân E", "ae_title": "PACSE", "host": "10.0.0.5",
                                              "port": "", "dicomweb_url": "https://pacs-e.example.vn/dicom-web",
                                              "send_by": "stow", "dicomweb_username": "filmless",
                                              "dicomweb_password": secret})
        assert r.status_code == 200, r.text
        assert secret not in r.text
        with world["factory"]() as s:
            site = s.scalar(select(NetworkSite).where(NetworkSite.ae_title == "PACSE"))
            assert site.port == 0 and site.send_by == "stow" and site.dicomweb_password == secret
            site_id = site.id
        page = admin.get(f"/network/sites/{site_id}")
        assert page.status_code == 200 and secret not in page.text and "filmless" in page.text
        # Saving the form with the password left blank keeps it; the audit names the change, not the value.
        r = admin.post(f"/network/sites/{site_id}", data={
            "name": "PACS tư nhân E", "ae_title": "PACSE", "host": "10.0.0.5", "port": "",
            "dicomweb_url": "https://pacs-e.example.vn/dicom-web", "send_by": "stow", "dicomweb_username": "filmless2"})
        assert r.status_code in (200, 302), r.text
        # A DICOM-only choice without a DICOM port is refused with a reason.
        bad = admin.post(f"/network/sites/{site_id}", data={
            "name": "PACS tư nhân E", "ae_title": "PACSE", "host": "10.0.0.5", "port": "",
            "dicomweb_url": "https://pacs-e.example.vn/dicom-web", "send_by": "dicom"})
        assert bad.status_code == 422
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    with world["factory"]() as s:
        site = s.get(NetworkSite, site_id)
        assert site.dicomweb_password == secret and site.dicomweb_username == "filmless2"
        details = [a.details for a in s.scalars(select(AuditEntry).where(AuditEntry.action.like("network.site.%")))]
        assert not any(secret in d for d in details)


def test_only_admins_attach_a_sites_signing_ca(world: dict[str, Any], pki: Any) -> None:
    """Trusting another site's CA makes every signature under it valid here: a doctor or a nurse posting
    the edit or the registration form directly (fingerprint "confirmed" and all) gets 403, and nothing
    reaches the trust store, the site row or the audit log as a change."""
    from cryptography.hazmat.primitives import serialization

    from emr.core.exceptions import PermissionDenied
    from emr.signing.pki import list_trust_anchors
    from emr.signing.trust import trust_anchors_dir

    pem = pki.ca_cert_path.read_text()
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    store = trust_anchors_dir(world["settings"])
    form = {"name": "Bệnh viện tỉnh B", "ae_title": "SITEB", "host": "127.0.0.1", "port": "11112",
            "emr_url": "http://127.0.0.1:9", "active": "1", "signing_ca_pem": pem, "signing_ca_confirm": sha}
    app = world["app"]
    clients = [_login(app, user) for user in ("bs_care", "dieuduong")]
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        for client in clients:
            assert client.post(f"/network/sites/{world['site_b']}", data=form).status_code == 403
            fake = {**form, "name": "Giả mạo", "ae_title": "EVILCA"}
            assert client.post("/network/sites", data=fake).status_code == 403
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    # The rule holds below the routes too (a script calling the service with a clinician's actor).
    with world["factory"]() as s:
        site = s.get(NetworkSite, world["site_b"])
        doctor = Actor(None, "bs_care", "physician", None)
        with pytest.raises(PermissionDenied):
            update_site(s, doctor, site.id, SiteIn(site.name, site.ae_title, site.host, site.port, site.emr_url,
                                                   signing_ca_pem=pem, signing_ca_confirm=sha),
                        trust_anchors_dir=store)
        s.rollback()
    assert sha not in {a.sha256 for a in list_trust_anchors(store)}
    with world["factory"]() as s:
        assert s.get(NetworkSite, world["site_b"]).signing_ca_sha256 is None
        assert s.scalar(select(NetworkSite).where(NetworkSite.ae_title == "EVILCA")) is None
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "network.site.signing_ca")) is None


def test_only_admins_withdraw_a_trust_anchor(world: dict[str, Any]) -> None:
    """Withdrawing a CA makes every signature under it untrusted here: a doctor or a nurse posting the
    withdrawal directly (reason and confirmation given) gets 403, audited as a denial, and the anchor stays;
    the service refuses a clinician's actor too; a forged cross-site POST (no CSRF token) is refused; and the
    CLI's withdraw-anchor command has no web route (the only route that withdraws is this admin page)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from emr.core.exceptions import PermissionDenied
    from emr.network.sites import withdraw_anchor
    from emr.signing.pki import import_trust_anchor, list_trust_anchors, list_withdrawn_anchors
    from emr.signing.trust import trust_anchors_dir

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA của BV C")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    store = trust_anchors_dir(world["settings"])
    [anchor] = import_trust_anchor(cert.public_bytes(serialization.Encoding.PEM), store)
    path = f"/network/trust-anchors/{anchor.sha256}/withdraw"
    form = {"reason": "giả mạo thu hồi", "confirm": "1"}
    app = world["app"]
    with world["factory"]() as s:
        denied_before = len(list(s.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied",
                                                                     AuditEntry.object_id == path[:64]))))
    clients = [_login(app, user) for user in ("bs_care", "dieuduong")]
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        for client in clients:
            assert client.get(path).status_code == 403
            assert client.post(path, data=form).status_code == 403
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    # The admin, but a cross-site form without the CSRF token: refused too.
    assert _login(app, "quantri").post(path, data=form).status_code == 400
    with world["factory"]() as s:
        with pytest.raises(PermissionDenied):
            withdraw_anchor(s, Actor(None, "bs_care", "physician", None), anchor.sha256, "giả mạo thu hồi",
                            trust_anchors_dir=store, confirmed=True)
        s.rollback()
        denied = list(s.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied",
                                                          AuditEntry.object_id == path[:64])))
        assert len(denied) - denied_before == 4
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "signing.trust_anchor.withdraw")) is None
    assert anchor.sha256 in {a.sha256 for a in list_trust_anchors(store)}
    assert list_withdrawn_anchors(store) == []
    withdrawing = [r.rule for r in app.url_map.iter_rules() if "withdraw" in r.rule or "anchor" in r.rule]
    assert withdrawing == ["/network/trust-anchors/<sha256>/withdraw"]
    assert app.view_functions[next(app.url_map.iter_rules("network.withdraw_anchor")).endpoint].__module__ \
        == "emr.web.network"
