"""The Vietnamese web UI: login and lockout, cookies, CSRF, forms with errors, the chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.users import MAX_FAILURES
from emr.i18n import catalogue, t
from emr.imaging import orders
from emr.models import AuditEntry, Study
from emr.patients import service as patients
from filmless.wiring import viewer_extension

from .conftest import PASSWORD, World, csrf_token, login, patient_data


def test_login_sets_hardened_cookie_and_failed_logins_lock_the_account(
    client: FlaskClient, world: World, session: Session
) -> None:
    r = login(client, "physician1")
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    other = FlaskClient(client.application, use_cookies=True)
    for _ in range(MAX_FAILURES):
        bad = login(other, "nurse1", "wrong password!")
        assert bad.status_code == 401 and t("auth.error.bad_credentials") in bad.get_data(as_text=True)
    locked = login(other, "nurse1", PASSWORD)
    assert locked.status_code == 401 and t("auth.error.locked") in locked.get_data(as_text=True)
    outcomes = [
        (a.username, a.outcome) for a in session.scalars(select(AuditEntry).where(AuditEntry.action == "login"))
    ]
    assert outcomes.count(("nurse1", "failure")) == MAX_FAILURES + 1 and ("physician1", "success") in outcomes


def test_secure_cookie_when_public_url_is_https(settings: Any, engine: Any, world: World) -> None:
    from dataclasses import replace

    from emr import create_app

    app = create_app(

        replace(settings, public_url="https://emr.benhvien.vn"), test_config={"EMR_ENGINE": engine},

        extensions=[viewer_extension(None)],

    )
    r = login(app.test_client(), "physician1")
    assert "Secure" in r.headers["Set-Cookie"]


def test_forms_need_csrf(client: FlaskClient, world: World) -> None:
    login(client, "records_clerk1")
    r = client.post("/patients/new", data=patient_data())
    assert r.status_code == 400 and t("errors.csrf") in r.get_data(as_text=True)


def test_patient_form_shows_vietnamese_errors_beside_fields(client: FlaskClient, world: World) -> None:
    login(client, "records_clerk1")
    token = csrf_token(client, "/patients/new")
    r = client.post("/patients/new", data={**patient_data(cccd="079090001234", bhyt_number="AB"), "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert re.search(r'id="err-cccd">' + re.escape(t("patients.error.cccd_mismatch")), page)
    assert re.search(r'id="err-bhyt_number">' + re.escape(t("patients.error.bhyt_format")), page)
    assert 'value="Nguyễn Thị Hồng Nhung"' in page  # nothing typed is lost
    r = client.post("/patients/new", data={**patient_data(), "csrf_token": token})
    assert r.status_code == 302
    r = client.get("/patients/?q=nguyen thi hong")
    assert "Nguyễn Thị Hồng Nhung" in r.get_data(as_text=True)


def test_chart_shows_orders_with_study_status_and_viewer_link(
    app: Flask, client: FlaskClient, world: World, session: Session
) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    login(client, "physician1")
    token = csrf_token(client, f"/orders/new/{p.id}")
    r = client.post(
        f"/orders/new/{p.id}",
        data={"modality": "CT", "procedure_name": "CT sọ não", "urgency": "stat", "csrf_token": token},
    )
    assert r.status_code == 302
    order = orders.list_orders(session, p.id)[0]
    session.commit()  # end the read (SQLite: writers queue behind an open transaction)
    page = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert order.accession_number in page and t("orders.status.scheduled") in page and "/viewer/" not in page
    session.add(
        Study(
            orthanc_id="abc",
            study_instance_uid=order.study_instance_uid,
            order_id=order.id,
            patient_id=p.id,
            state="linked",
            link_method="accession",
            study_date="20261123",
        )
    )
    order.status = "images_available"
    session.commit()
    page = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert f'href="/viewer/?study={order.study_instance_uid}"' in page
    assert t("orders.status.images_available") in page


def test_order_form_errors(client: FlaskClient, world: World, session: Session) -> None:
    p = patients.create_patient(session, world.actor("physician"), patient_data())
    login(client, "physician1")
    token = csrf_token(client, f"/orders/new/{p.id}")
    r = client.post(f"/orders/new/{p.id}", data={"modality": "XX", "procedure_name": "", "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and t("errors.field_choice") in page and t("errors.field_required") in page


def test_every_catalogue_key_used_exists() -> None:
    root = Path(__file__).resolve().parents[2] / "emr"
    used: set[str] = set()
    for path in list(root.rglob("*.html")) + [p for p in root.rglob("*.py") if "signing" not in p.parts]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bt\('([a-z0-9_.]+)'", text)) | set(re.findall(r'\bt\("([a-z0-9_.]+)"', text))
        used |= set(re.findall(r'key="([a-z_]+\.[a-z0-9_.]+)"', text))
        used |= set(
            re.findall(r'"((?:patients|encounters|documents|orders|reconcile|users|auth)\.error\.[a-z_0-9]+)"', text)
        )
    missing = sorted(k for k in used if k not in catalogue() and not k.endswith("."))
    assert not missing, missing
    for value in catalogue().values():
        assert value.strip()
