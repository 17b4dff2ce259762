"""ICD-10 codes as people type them: lower case and stray spaces are the same code (``s06.0`` is S06.0),
on every door that takes codes (the visit form, the diagnosis paper, the JSON API); a code that is
really unknown or malformed is named in the message, not only "Sai định dạng."."""

from __future__ import annotations

import html
import json
import re
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.catalogues import Line, store_version
from emr.core.exceptions import ValidationFailed
from emr.documents import service as documents
from emr.i18n import t
from emr.models import Document, Encounter
from emr.patients import service as patients
from emr.schemas import DiagnosisContent

from .conftest import ADMIN_ACTOR, World, csrf_token, login, outpatient_visit, patient_data


def _page(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))




def test_diagnosis_content_normalises_codes() -> None:
    c = DiagnosisContent.model_validate(
        {"main_code": " s06.0 ", "main_text": "Chấn động não", "secondary_codes": " r51 ; j18.9,i10 "}
    )
    assert (c.main_code, c.secondary_codes) == ("S06.0", "R51;J18.9;I10")
    assert DiagnosisContent.model_validate({"main_code": "I10", "main_text": "x"}).secondary_codes == ""


def test_visit_form_takes_lower_case_codes(client: FlaskClient, world: World, session: Session) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    session.commit()
    login(client, "physician1")
    url = f"/patients/{p.id}/encounters/new"
    r = client.post(
        url,
        data={
            "csrf_token": csrf_token(client, url),
            "kind": "outpatient",
            "department_code": world.department_code,
            "diagnoses": " s06.0  r51 ",
        },
    )
    assert r.status_code == 302, _page(r)
    session.expire_all()
    enc = session.scalars(select(Encounter).where(Encounter.patient_id == p.id)).one()
    assert [d.icd10_code for d in enc.diagnoses] == ["S06.0", "R51"]
    session.rollback()  # SQLite: the test's read transaction would block the form's write

    # Really unknown: the message names the code (as the catalogue spells it), the form keeps what was typed.
    r = client.post(
        url,
        data={
            "csrf_token": csrf_token(client, url),
            "kind": "outpatient",
            "department_code": world.department_code,
            "diagnoses": "s06.0 x99.9",
        },
    )
    page = _page(r)
    assert r.status_code == 422
    assert t("encounters.error.icd10", codes="X99.9") in page
    assert 'value="s06.0 x99.9"' in page


def test_diagnosis_paper_form_takes_lower_case_codes(client: FlaskClient, world: World, session: Session) -> None:
    p, enc = outpatient_visit(session, world)
    login(client, "physician1")
    url = f"/patients/{p.id}/documents/new?form_type=diagnosis"
    form = {
        "csrf_token": csrf_token(client, url),
        "encounter_id": str(enc.id),
        "c_main_code": " s06.0 ",
        "c_main_text": "Chấn động não",
        "c_secondary_codes": "r51; i10",
    }
    r = client.post(url, data=form)
    assert r.status_code == 302, _page(r)
    session.expire_all()
    doc = session.scalars(select(Document).where(Document.encounter_id == enc.id)).one()
    content = json.loads(doc.versions[0].content_json)
    assert (content["main_code"], content["secondary_codes"]) == ("S06.0", "R51;I10")
    session.rollback()

    # A code that is no ICD-10 code at all: the message says which one, not only "Sai định dạng."
    r = client.post(url, data={**form, "c_main_code": "s6", "c_secondary_codes": "r51; abc"})
    page = _page(r)
    assert r.status_code == 422
    assert re.search(rf'id="err-c_main_code">{re.escape(t("errors.field_icd10", codes="S6"))}<', page)
    assert re.search(rf'id="err-c_secondary_codes">{re.escape(t("errors.field_icd10", codes="ABC"))}<',
                     page)
    assert t("errors.field_format") not in page


def test_api_takes_lower_case_codes(
    client: FlaskClient, world: World, session: Session, tokens: dict[str, str]
) -> None:
    p, enc = outpatient_visit(session, world)
    session.commit()
    auth = {"Authorization": f"Bearer {tokens['physician']}"}
    r = client.post(
        "/api/encounters",
        json={"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code,
              "diagnoses": [" j18.9", "i10 "]},
        headers=auth,
    )
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["diagnoses"] == ["J18.9", "I10"]
    r = client.post(
        "/api/documents",
        json={"encounter_id": enc.id, "form_type": "diagnosis",
              "content": {"main_code": "s06.0", "main_text": "Chấn động não", "secondary_codes": "r51"}},
        headers=auth,
    )
    assert r.status_code == 201, r.get_json()
    content = r.get_json()["versions"][0]["content"]
    assert (content["main_code"], content["secondary_codes"]) == ("S06.0", "R51")
    r = client.post(
        "/api/documents",
        json={"encounter_id": enc.id, "form_type": "diagnosis", "content": {"main_code": "s6", "main_text": "x"}},
        headers=auth,
    )
    body = r.get_json()
    assert r.status_code == 422 and body["fields"]["content.main_code"] == "errors.field_icd10"
    assert body["params"]["content.main_code"] == {"codes": "S6"}


def test_service_stores_the_normalised_codes(world: World, session: Session) -> None:
    _p, enc = outpatient_visit(session, world)
    doc = documents.create_document(
        session,
        world.actor("physician"),
        {"encounter_id": enc.id, "form_type": "diagnosis",
         "content": {"main_code": "j18.9 ", "main_text": "Viêm phổi", "secondary_codes": "i10"}},
    )
    session.commit()
    content = json.loads(doc.versions[0].content_json)
    assert (content["main_code"], content["secondary_codes"]) == ("J18.9", "I10")


def test_diagnosis_paper_codes_are_checked_against_the_catalogue(
    client: FlaskClient, world: World, session: Session, tokens: dict[str, str]
) -> None:
    """Well-formed codes that are in no catalogue are refused on the paper as on the visit form (same message,
    naming them): the form, the JSON API, a draft edited, an amendment; and a code the Ministry's version in
    force today no longer lists, although the loaded list has it."""
    p, enc = outpatient_visit(session, world)
    doctor = world.actor("physician")
    login(client, "physician1")
    url = f"/patients/{p.id}/documents/new?form_type=diagnosis"
    form = {"csrf_token": csrf_token(client, url), "encounter_id": str(enc.id), "c_main_code": "x99.9",
            "c_main_text": "Không rõ", "c_secondary_codes": "i10; y98.8; z99.99"}
    r = client.post(url, data=form)
    page = _page(r)
    assert r.status_code == 422
    assert re.search(rf'id="err-c_main_code">{re.escape(t("encounters.error.icd10", codes="X99.9"))}<', page)
    assert re.search(
        rf'id="err-c_secondary_codes">{re.escape(t("encounters.error.icd10", codes="Y98.8, Z99.99"))}<', page)
    assert "Mã ICD-10 không có trong danh mục: X99.9" in page
    r = client.post("/api/documents", headers={"Authorization": f"Bearer {tokens['physician']}"},
                    json={"encounter_id": enc.id, "form_type": "diagnosis",
                          "content": {"main_code": "I10", "main_text": "x", "secondary_codes": "Q99.9"}})
    body = r.get_json()
    assert r.status_code == 422 and body["fields"] == {"content.secondary_codes": "encounters.error.icd10"}
    assert body["params"]["content.secondary_codes"] == {"codes": "Q99.9"}
    session.rollback()
    assert session.scalars(select(Document).where(Document.encounter_id == enc.id)).all() == []

    doc = documents.create_document(session, doctor, {"encounter_id": enc.id, "form_type": "diagnosis",
                                                      "content": {"main_code": "J18.9", "main_text": "Viêm phổi"}})
    with pytest.raises(ValidationFailed) as err:
        documents.update_draft(session, doctor, doc.id, {"main_code": "J18.9", "main_text": "x",
                                                         "secondary_codes": "A00.0"})
    assert err.value.fields == {"content.secondary_codes": "encounters.error.icd10"}
    session.rollback()

    # The Ministry's ICD-10 version in force today lists J18.9 but not R51: R51 is refused now, J18.9 still taken.
    store_version(session, ADMIN_ACTOR, "icd10", [Line(1, "J18.9", "Viêm phổi"), Line(2, "I10", "Tăng huyết áp")],
                  valid_from=date(2020, 1, 1), source="test", sha256="0" * 64)
    session.commit()
    with pytest.raises(ValidationFailed) as err:
        documents.update_draft(session, doctor, doc.id, {"main_code": "R51", "main_text": "Đau đầu"})
    assert err.value.field_params == {"content.main_code": {"codes": "R51"}}
    session.rollback()
    documents.update_draft(session, doctor, doc.id, {"main_code": "j18.9", "main_text": "x", "secondary_codes": "i10"})
    documents.mark_signed(session, doctor, doc.id, 1)
    with pytest.raises(ValidationFailed) as err:
        documents.amend_document(session, doctor, doc.id, {"main_code": "J18.9", "main_text": "x",
                                                           "secondary_codes": "I10;R51"}, "Thêm bệnh kèm theo")
    assert err.value.field_params == {"content.secondary_codes": {"codes": "R51"}}
