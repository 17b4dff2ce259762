"""A physician who registers a patient, or finds one outside their care, begins care by opening a visit.

Before, the registration led to a chart the physician could not open, and
the new-visit form itself was refused outside care: the only way in was
breaking the glass.
"""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.i18n import t
from emr.models import AuditEntry, Encounter, Patient

from .conftest import World, csrf_token, login, patient_data


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))


def test_physician_registers_a_patient_then_opens_the_visit_and_the_chart(
    app: Flask, world: World, session: Session
) -> None:
    session.rollback()
    doctor = app.test_client()
    login(doctor, "physician1")
    token = csrf_token(doctor, "/patients/new")
    lam = patient_data(full_name="Hoàng Văn Lâm", cccd="001070000321", sex="M", birth_date="1970-02-02",
                       bhyt_number=None)
    data = {k: v for k, v in lam.items() if v is not None}
    r = doctor.post("/patients/new", data=data | {"csrf_token": token})
    errors = re.findall(r'class="error"[^>]*>([^<]*)', _page(r))
    assert r.status_code == 302 and r.headers["Location"].endswith("/encounters/new"), errors
    patient_id = session.scalars(select(Patient.id).where(Patient.cccd == "001070000321")).one()
    session.rollback()

    form = _page(doctor.get(r.headers["Location"]))
    assert "Hoàng Văn Lâm" in form and '<option value="K19" selected' in form  # the physician's department
    opened = doctor.post(r.headers["Location"], data={"csrf_token": token, "kind": "outpatient",
                                                      "department_code": "K19", "attending_username": "physician1"})
    assert opened.status_code == 302 and opened.headers["Location"].endswith(f"/patients/{patient_id}")
    assert doctor.get(f"/patients/{patient_id}").status_code == 200
    audited = session.scalars(select(AuditEntry.action).where(AuditEntry.patient_id == patient_id)).all()
    assert {"patient.create", "encounter.create", "patient.view"} <= set(audited)


def test_outside_care_the_chart_offers_a_visit_and_a_visit_elsewhere_is_refused_on_the_form(
    app: Flask, world: World, session: Session
) -> None:
    from emr.patients import service as patients

    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    pid = p.id
    session.commit()
    doctor = app.test_client()
    login(doctor, "physician1")
    chart = doctor.get(f"/patients/{pid}")
    assert chart.status_code == 403
    assert t("care.out_of_scope.open_visit") in _page(chart) and f"/patients/{pid}/encounters/new" in _page(chart)

    token = csrf_token(doctor, f"/patients/{pid}/encounters/new")
    # Another department with another attending would not put the patient in this physician's care.
    from emr.patients import encounters

    encounters.ensure_department(session, "K01", "Khoa Cấp cứu")
    session.commit()
    elsewhere = {"csrf_token": token, "kind": "outpatient", "department_code": "K01",
                 "attending_username": "radiologist1", "reason": "Đau ngực"}
    r = doctor.post(f"/patients/{pid}/encounters/new", data=elsewhere)
    page = _page(r)
    assert r.status_code == 403 and t("encounters.error.outside_care") in page
    assert 'value="Đau ngực"' in page  # what was typed stays on the form
    assert session.scalars(select(Encounter).where(Encounter.patient_id == pid)).all() == []
    session.rollback()
