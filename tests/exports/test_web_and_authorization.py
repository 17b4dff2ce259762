"""Every /fhir and /export route × every role, the visit page's download buttons, downloads audited."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.exports.config import save_config
from emr.exports.envelope import read_envelope
from emr.i18n import t
from emr.models import ROLES, AuditEntry
from tests.emr.conftest import login

from .conftest import DEVICE_CT, HEAD_CODE, Visit

CLIN = {"physician", "radiologist", "technician", "nurse", "records_clerk"}
DOC = {"physician", "radiologist", "nurse", "records_clerk"}
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/fhir/metadata"): None,
    ("GET", "/fhir/Patient"): CLIN,
    ("GET", "/fhir/Patient/<ident>"): CLIN,
    ("GET", "/fhir/Encounter"): DOC,
    ("GET", "/fhir/Encounter/<ident>"): DOC,
    ("GET", "/fhir/ServiceRequest"): CLIN,
    ("GET", "/fhir/ServiceRequest/<ident>"): CLIN,
    ("GET", "/fhir/ImagingStudy"): CLIN,
    ("GET", "/fhir/ImagingStudy/<ident>"): CLIN,
    ("GET", "/fhir/DiagnosticReport"): DOC,
    ("GET", "/fhir/DiagnosticReport/<ident>"): DOC,
    ("GET", "/fhir/DocumentReference"): DOC,
    ("GET", "/fhir/DocumentReference/<ident>"): DOC,
    ("GET", "/fhir/Provenance"): DOC,
    ("GET", "/fhir/Provenance/<ident>"): DOC,
    ("GET", "/fhir/AuditEvent"): {"admin"},
    ("GET", "/fhir/AuditEvent/<ident>"): {"admin"},
    ("GET", "/export/encounters/<int:encounter_id>/xml130"): {"records_clerk"},
    ("GET", "/export/encounters/<int:encounter_id>/hsba.<fmt>"): {"physician", "records_clerk"},
}


def _routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if re.match(r"^/(fhir|export)(/|$)", rule.rule):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out.append((method, rule.rule))
    return out


def test_every_route_is_in_the_table(app: Flask) -> None:
    routes = _routes(app)
    assert set(routes) == set(EXPECTED), set(routes) ^ set(EXPECTED)


def test_matrix(app: Flask, client: FlaskClient, tokens: dict[str, str], world: Any) -> None:
    from emr.access.login_guard import LoginGuard

    # Dozens of logins from one address: this test is about roles, not the login rate limit.
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    for method, rule in _routes(app):
        allowed_roles = EXPECTED[(method, rule)]
        if allowed_roles is None:
            continue
        url = rule.replace("<ident>", "1").replace("<int:encounter_id>", "1").replace("<fmt>", "json")
        for role in ROLES:
            if rule.startswith("/fhir/"):
                r = client.open(url, method=method, headers={"Authorization": f"Bearer {tokens[role]}"})
                assert client.open(url, method=method).status_code == 401, url
            else:
                c = app.test_client()
                assert login(c, f"{role}1").status_code == 302
                r = c.open(url, method=method)
                assert app.test_client().open(url, method=method).status_code == 302, url
            if role in allowed_roles:
                assert r.status_code not in (401, 403), (url, role, r.status_code)
            else:
                assert r.status_code == 403, (url, role, r.status_code)
            assert r.status_code < 500, (url, role, r.status_code, r.get_data(as_text=True)[:300])


def _configure(settings: Any, pki: Any) -> None:
    user = pki.users["facility"]
    save_config(
        settings,
        {
            "head_code": HEAD_CODE,
            "device_codes": {"CT": DEVICE_CT},
            "facility_p12": str(user.p12_path),
            "facility_p12_password_file": str(user.password_path),
        },
    )
    assert (Path(settings.data_dir) / "exports.json").stat().st_mode & 0o777 == 0o600


def test_visit_page_buttons_and_downloads(app: Flask, settings: Any, pki: Any, visit: Visit, session: Session) -> None:
    _configure(settings, pki)
    c = app.test_client()
    assert login(c, "records_clerk1").status_code == 302
    page = c.get(f"/patients/{visit.patient.id}").get_data(as_text=True)
    assert f"/export/encounters/{visit.encounter.id}/xml130" in page
    assert f"/export/encounters/{visit.encounter.id}/hsba.json" in page
    assert "Tải XML 4750 đã ký" in page

    r = c.get(f"/export/encounters/{visit.encounter.id}/xml130")
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.headers["Content-Disposition"] == f'attachment; filename="{visit.encounter.visit_code}.xml"'
    _root, tables = read_envelope(r.data)
    assert set(tables) == {"XML1", "XML3", "XML4", "XML5"}

    r = c.get(f"/export/encounters/{visit.encounter.id}/hsba.json")
    assert r.status_code == 200
    body = json.loads(r.data)
    assert body["HoSoBenhAn"]["ThongTinVaoVien"]["sovaovien"] == visit.encounter.visit_code
    assert body["chuky_xuat"]["cms_base64"]
    assert c.get(f"/export/encounters/{visit.encounter.id}/hsba.xml").data.lstrip().startswith(b"<?xml")
    # No HSBA as PDF: the app's Vietnamese "not found" page, as for any other 404, not a bare "404".
    for missing in (f"/export/encounters/{visit.encounter.id}/hsba.pdf", "/no-such-page"):
        r = c.get(missing)
        page = r.get_data(as_text=True)
        assert r.status_code == 404 and t("errors.not_found") in page and t("errors.title") in page, missing
        assert "<p>404</p>" not in page
    actions = [a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.action.like("export.%")))]
    assert actions == ["export.xml130", "export.hsba", "export.hsba"]
    session.commit()

    # a nurse sees no export buttons
    n = app.test_client()
    login(n, "nurse1")
    assert "/export/" not in n.get(f"/patients/{visit.patient.id}").get_data(as_text=True)


def test_failing_visit_shows_vietnamese_problem_list(
    app: Flask, settings: Any, pki: Any, visit: Visit, session: Session
) -> None:
    _configure(settings, pki)
    save_config(settings, {"head_code": ""})
    c = app.test_client()
    login(c, "records_clerk1")
    r = c.get(f"/export/encounters/{visit.encounter.id}/xml130")
    assert r.status_code == 422
    text = r.get_data(as_text=True)
    assert "thiếu mã thủ trưởng đơn vị (MA_TTDV)" in text
    assert r.headers.get("Content-Disposition") is None


def test_no_facility_key_is_a_clear_error(app: Flask, visit: Visit) -> None:
    c = app.test_client()
    login(c, "records_clerk1")
    r = c.get(f"/export/encounters/{visit.encounter.id}/xml130")
    assert r.status_code == 409
    assert "Chưa cấu hình khóa ký số" in r.get_data(as_text=True)
    # the record export works unsigned without a key
    r = c.get(f"/export/encounters/{visit.encounter.id}/hsba.json")
    assert r.status_code == 200 and json.loads(r.data)["chuky_xuat"]["cms_base64"] is None


def test_patient_form_and_chart_carry_the_record_fields(client: FlaskClient, world: Any, session: Any) -> None:
    """Religion, health ID, father, mother, guardian (XML7/XML8, VN Core) are entered on the form and shown."""
    from emr.models import Patient
    from tests.emr.conftest import csrf_token, login

    session.commit()  # no transaction left open: SQLite would keep its lock from the app
    login(client, "records_clerk1")
    form = {
        "full_name": "Lê Hoàng Phúc",
        "birth_date": "2008-03-21",
        "sex": "M",
        "health_id": "4812345678",
        "religion_code": "02",  # Công giáo; a code the religion list lacks is refused (tests/emr/test_demographics.py)
        "father_name": "Lê Văn Hải",
        "mother_name": "Nguyễn Thị Thu",
        "csrf_token": csrf_token(client, "/patients/new"),
    }
    page = client.get("/patients/new").get_data(as_text=True)
    assert all(f'name="{n}"' in page for n in ("health_id", "religion_code", "father_name", "guardian_name"))
    r = client.post("/patients/new", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    p = session.scalars(select(Patient).where(Patient.full_name == "Lê Hoàng Phúc")).one()
    assert (p.health_id, p.religion_code, p.father_name, p.mother_name) == (
        "4812345678",
        "02",
        "Lê Văn Hải",
        "Nguyễn Thị Thu",
    )
    session.commit()
    chart = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Lê Văn Hải" in chart and "4812345678" in chart
    bad = dict(form, health_id="48-123", csrf_token=csrf_token(client, "/patients/new"))
    assert client.post("/patients/new", data=bad).status_code == 422
    assert re.search("Mã định danh y tế", client.get("/patients/new").get_data(as_text=True))
