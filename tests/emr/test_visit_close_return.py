"""Closing a visit from the discharge paper's sign page: the close form offers what the paper says (its
discharge diagnosis and the ICD-10 codes written in it) and, once the visit is closed, brings the physician
back to the sign page they came from — a path on this site only, never another site named in ``next``."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.orm import Session

from emr.documents import service as documents
from emr.i18n import t
from emr.models import Encounter, EncounterDiagnosis
from emr.patients import encounters

from .conftest import World, csrf_token, login, outpatient_visit

PAPER = {
    "summary": "Sốt, ho giảm dần; phổi còn ít ran",
    "discharge_diagnosis": "Viêm phổi thùy dưới phải (J18.9); tăng huyết áp I10",
    "treatment": "Kháng sinh 7 ngày",
    "result": "1",
}


@dataclass(frozen=True)
class Ids:
    id: int


def _paper_visit(session: Session, world: World, content: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """A visit with its discharge paper: (patient, visit, paper) ids, the session's transaction ended (SQLite: the
    test's session must not hold the write lock while the app answers)."""
    p, enc = outpatient_visit(session, world)
    enc.admission_diagnosis = "Sốt chưa rõ nguyên nhân"
    session.commit()
    doc = documents.create_document(session, world.actor("physician"),
                                    {"encounter_id": enc.id, "form_type": "discharge_summary",
                                     "content": content or PAPER})
    session.commit()
    out = Ids(p.id), Ids(enc.id), Ids(doc.id)
    session.rollback()
    return out


def _close(p: Any, enc: Any, query: str = "") -> str:
    return f"/patients/{p.id}/encounters/{enc.id}/close" + query


def test_sign_page_links_to_the_close_form_with_the_way_back(session: Session, world: World, client: Any) -> None:
    p, enc, doc = _paper_visit(session, world)
    login(client, "physician1")
    sign = f"/signing/documents/{doc.id}/sign"
    page = client.get(sign).get_data(as_text=True)
    assert f'{_close(p, enc)}?next={quote(sign, safe="")}' in page or f"{_close(p, enc)}?next={sign}" in page


def test_close_form_prefills_the_paper_diagnosis_and_its_codes(session: Session, world: World, client: Any) -> None:
    p, enc, doc = _paper_visit(session, world)
    login(client, "physician1")
    page = client.get(_close(p, enc, f"?next=/signing/documents/{doc.id}/sign")).get_data(as_text=True)
    assert PAPER["discharge_diagnosis"] in page  # the paper's words, not the admission diagnosis
    assert "Sốt chưa rõ nguyên nhân" not in page
    assert 'name="main_code" value="J18.9"' in page and 'name="secondary_codes" value="I10"' in page
    assert t("ehr.close.from_paper", codes="J18.9, I10") in page and 'id="paper-codes-unknown"' not in page
    assert f'href="/signing/documents/{doc.id}/sign" id="close-back"' in page  # back to the sign page


def test_codes_not_in_the_catalogue_are_not_offered(session: Session, world: World) -> None:
    _p, enc, doc = _paper_visit(session, world, {**PAPER, "discharge_diagnosis": "Viêm phổi (J18.9), B99.9"})
    prefill = encounters.close_form_prefill(session, session.get(Encounter, enc.id))
    values, from_paper = prefill.values, prefill.from_paper
    assert from_paper and values["main_code"] == "J18.9" and values["secondary_codes"] == ""  # B99.9 not loaded
    documents.update_draft(session, world.actor("physician"), doc.id,
                         {**PAPER, "discharge_diagnosis": "Viêm phổi thùy dưới phải"}, base_version=1)
    session.expire_all()
    prefill = encounters.close_form_prefill(session, session.get(Encounter, enc.id))
    values, from_paper = prefill.values, prefill.from_paper
    assert from_paper and values["discharge_diagnosis"] == "Viêm phổi thùy dưới phải"
    assert values["main_code"] == ""  # no code written: the visit's own (none here)


def test_a_code_not_in_the_catalogue_is_named_not_claimed(session: Session, world: World, client: Any) -> None:
    """Before: the paper read "(S00.0)", a code not in the catalogue; the form kept the visit's own codes
    silently while its note said the codes came from the paper."""
    paper = {**PAPER, "discharge_diagnosis": "Chấn thương phần mềm vùng đầu (S00.0)"}
    p, enc, doc = _paper_visit(session, world, paper)
    session.add(EncounterDiagnosis(encounter_id=enc.id, icd10_code="S06.0", position=0))  # the visit's own code
    session.commit()
    prefill = encounters.close_form_prefill(session, session.get(Encounter, enc.id))
    assert prefill.from_paper and prefill.codes_taken == () and prefill.codes_unknown == ("S00.0",)
    assert prefill.values["main_code"] == "S06.0"  # kept, and the form says so
    session.rollback()
    login(client, "physician1")
    page = html.unescape(client.get(_close(p, enc, f"?next=/signing/documents/{doc.id}/sign")).get_data(as_text=True))
    warning = page.split('id="paper-codes-unknown">')[1].split("</p>")[0]
    assert warning == t("ehr.close.paper_codes_unknown", codes="S00.0")  # named, in a warning
    assert t("ehr.close.from_paper_text") in page  # the diagnosis is the paper's, the codes are not
    assert 'id="from-paper">' + t("ehr.close.from_paper_text") in page  # never "codes from the paper"
    assert 'value="S00.0"' not in page and 'name="main_code" value="S06.0"' in page

    # Part known, part not: only what was taken is claimed.
    documents.update_draft(session, world.actor("physician"), doc.id,
                           {**PAPER, "discharge_diagnosis": "Viêm phổi J18.9; chấn thương đầu S00.0"}, base_version=1)
    session.commit()
    page = html.unescape(client.get(_close(p, enc)).get_data(as_text=True))
    assert t("ehr.close.from_paper", codes="J18.9") in page and 'name="main_code" value="J18.9"' in page
    assert t("ehr.close.paper_codes_unknown", codes="S00.0") in page


def test_the_close_form_of_a_closed_visit_is_not_offered(session: Session, world: World, client: Any) -> None:
    """Before: the full form (and the orders "chưa thực hiện") for a visit already closed."""
    p, enc, doc = _paper_visit(session, world)
    encounters.close_encounter(session, world.actor("physician"), enc.id, "Viêm phổi thùy dưới phải",
                               main_code="J18.9")
    session.commit()
    login(client, "physician1")
    sign = f"/signing/documents/{doc.id}/sign"
    r = client.get(_close(p, enc, f"?next={quote(sign, safe='')}"))
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200
    assert 'id="visit-closed"' in page and t("encounters.error.not_open") in page
    assert 'id="close-visit"' not in page and 'name="discharge_diagnosis"' not in page
    assert 'id="pending-orders"' not in page
    assert f'href="/patients/{p.id}" id="closed-chart"' in page and f'href="{sign}" id="close-back"' in page
    external = html.unescape(client.get(_close(p, enc, "?next=%2F%2Fevil.example")).get_data(as_text=True))
    assert "evil.example" not in external and 'id="close-back"' not in external
    path = _close(p, enc)
    form = {"csrf_token": csrf_token(client, f"/patients/{p.id}"), "discharge_diagnosis": "Viêm phổi thùy dưới",
            "main_code": "J18.9"}
    again = client.post(path, data=form)
    assert again.status_code == 409 and 'id="visit-closed"' in again.get_data(as_text=True)


def test_without_a_paper_the_form_offers_the_visit_own_values(session: Session, world: World) -> None:
    p, enc = outpatient_visit(session, world)
    enc.admission_diagnosis = "Đau đầu"
    session.commit()
    prefill = encounters.close_form_prefill(session, enc)
    values, from_paper = prefill.values, prefill.from_paper
    assert not from_paper and values["discharge_diagnosis"] == "Đau đầu"


def test_closing_returns_to_the_sign_page(session: Session, world: World, client: Any) -> None:
    p, enc, doc = _paper_visit(session, world)
    login(client, "physician1")
    sign = f"/signing/documents/{doc.id}/sign"
    path = _close(p, enc, f"?next={quote(sign, safe='')}")
    form = {"csrf_token": csrf_token(client, path), "discharge_diagnosis": PAPER["discharge_diagnosis"],
            "main_code": "J18.9", "secondary_codes": "I10"}
    r = client.post(path, data=form)
    assert r.status_code == 302 and r.headers["Location"] == sign
    session.expire_all()
    closed = session.get(Encounter, enc.id)
    assert closed is not None and closed.status == "closed"
    assert [d.icd10_code for d in closed.diagnoses] == ["J18.9", "I10"]
    session.rollback()
    assert 'name="secret"' in client.get(sign).get_data(as_text=True)  # the paper can be signed now


@pytest.mark.parametrize("target", [
    "https://evil.example/signing", "//evil.example/x", "/\\evil.example", "/\t/evil.example", "javascript:alert(1)",
    "%2F%2Fevil.example",
])
def test_an_external_next_is_ignored(session: Session, world: World, client: Any, target: str) -> None:
    p, enc, _doc = _paper_visit(session, world)
    login(client, "physician1")
    path = _close(p, enc, f"?next={quote(target, safe='')}")
    page = client.get(path).get_data(as_text=True)
    assert "evil.example" not in page.split('id="close-back"')[0].rsplit("<a ", 1)[-1]
    form = {"csrf_token": csrf_token(client, path), "discharge_diagnosis": "Viêm phổi thùy dưới phải",
            "main_code": "J18.9"}
    r = client.post(path, data=form)
    assert r.status_code == 302 and r.headers["Location"] == f"/patients/{p.id}", r.headers["Location"]
