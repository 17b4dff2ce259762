"""Registering a patient who looks already on file (same name, birth date and sex) asks first.

A tester registered "Hoàng Văn Lâm, 02/02/1970, Nam" twice and got two
records silently: one person's history then splits across them. Now the
desk sees the record(s) on file and either opens one or confirms another
person; the API answers 409 ``possible_duplicate`` with the matches.
"""

from __future__ import annotations

import html
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.core.exceptions import PossibleDuplicate
from emr.i18n import t
from emr.models import Patient
from emr.patients import service as patients

from .conftest import World, csrf_token, login, patient_data

LAM = {"full_name": "Hoàng Văn Lâm", "birth_date": "1970-02-02", "sex": "M"}


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count(Patient.id))) or 0)


def test_a_namesake_is_refused_until_confirmed(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    first = patients.create_patient(session, clerk, LAM)
    for spelled in (LAM, LAM | {"full_name": "hoang van  LAM"}):  # with or without diacritics, any case
        with pytest.raises(PossibleDuplicate) as err:
            patients.create_patient(session, clerk, spelled)
        assert err.value.matches == [(first.id, first.code)]
        session.rollback()
    assert _count(session) == 1
    second = patients.create_patient(session, clerk, LAM | {"confirm_new_person": True})
    assert second.id != first.id and _count(session) == 2


def test_different_identifiers_on_file_are_another_person(session: Session, world: World) -> None:
    clerk = world.actor("records_clerk")
    patients.create_patient(session, clerk, LAM | {"cccd": "001070000321"})
    # Another CCCD: another person, registered without a question.
    patients.create_patient(session, clerk, LAM | {"cccd": "001070000999"})
    # No CCCD given: either could be the same person.
    with pytest.raises(PossibleDuplicate) as err:
        patients.create_patient(session, clerk, LAM)
    assert len(err.value.matches) == 2
    session.rollback()
    # Another birth date or sex is not a namesake.
    patients.create_patient(session, clerk, LAM | {"birth_date": "1971-02-02"})
    patients.create_patient(session, clerk, LAM | {"sex": "F", "full_name": "Hoàng Văn Lâm"})
    assert _count(session) == 4


def test_the_desk_sees_the_record_on_file_and_confirms(app: Flask, world: World, session: Session) -> None:
    existing = patients.create_patient(session, world.actor("records_clerk"), LAM | {"address": "5 Trần Phú, Huế"})
    code = existing.code
    session.commit()
    desk = app.test_client()
    login(desk, "nurse1")
    token = csrf_token(desk, "/patients/new")
    form = LAM | {"csrf_token": token, "phone": "0912345678"}

    r = desk.post("/patients/new", data=form)
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 409
    assert t("patients.error.possible_duplicate") in page
    assert code in page and "5 Trần Phú, Huế" in page  # enough to tell the two apart
    assert 'value="0912345678"' in page and 'name="confirm_new_person"' in page  # nothing typed is lost
    assert _count(session) == 1
    session.rollback()

    r = desk.post("/patients/new", data=form | {"confirm_new_person": "1"})
    assert r.status_code == 302
    assert _count(session) == 2


def test_api_answers_409_with_the_matches(client: FlaskClient, tokens: dict[str, str], session: Session) -> None:
    clerk = {"Authorization": f"Bearer {tokens['records_clerk']}"}
    first = client.post("/api/patients", json=LAM, headers=clerk)
    assert first.status_code == 201
    r = client.post("/api/patients", json=LAM, headers=clerk)
    assert r.status_code == 409 and r.json["error"] == "possible_duplicate"
    assert r.json["duplicates"] == [{"id": first.json["id"], "code": first.json["code"]}]
    again = client.post("/api/patients", json=LAM | {"confirm_new_person": True}, headers=clerk)
    assert again.status_code == 201 and again.json["id"] != first.json["id"]


def test_hl7_and_network_registrations_are_not_asked(session: Session, world: World) -> None:
    """Interfaces carry their own identifiers and match by them; they pass check_namesakes=False."""
    clerk = world.actor("records_clerk")
    patients.create_patient(session, clerk, patient_data(**LAM, cccd=None, bhyt_number=None))
    again: Any = patients.create_patient(session, clerk, LAM, check_namesakes=False)
    assert again.id is not None
