"""FHIR R4 search and HTTP rules clients depend on: paging, dates, names, tokens, references, errors, formats."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.exports.fhir import SYSTEMS
from emr.fhir import params as fp

from .conftest import Visit, make_visit


def _get(client: FlaskClient, url: str, token: str | None, **headers: str) -> Any:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.get(url, headers=headers)


def _ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in body.get("entry", [])]


def _outcome(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    get_fhir_model_class("OperationOutcome").model_validate(body)
    return body


@pytest.fixture
def patients(session: Session, world: Any, visit: Visit) -> list[Visit]:
    """Five patients born 1990-05-17 … 1994, three named Nhung."""
    out = [visit]
    people = [
        ("001191004321", "Trần Thị Lan", "1991-02-03", "HT3010987654321"),
        ("079191005555", "Lê Hồng Nhung", "1991-05-20", "DN4790111111111"),
        ("079192006666", "Phạm Nhung", "1992-12-31", "DN4790222222222"),
        ("079094007777", "Ngô Văn Nhu", "1994-01-01", "DN4790333333333"),
    ]
    for cccd, name, born, card in people:
        out.append(
            make_visit(
                session,
                world,
                cccd=cccd,
                full_name=name,
                birth_date=born,
                bhyt_number=card,
                sex="M" if cccd[3] == "0" else "F",
            )
        )
    return out


def test_paging_with_next_and_previous_links(
    client: FlaskClient, tokens: dict[str, str], patients: list[Visit]
) -> None:
    tok = tokens["physician"]
    first = _ok(_get(client, "/fhir/Patient?_count=2", tok))
    assert first["total"] == 5 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "previous" not in links and {"self", "next", "first", "last"} <= set(links)
    seen = _ids(first)
    url = links["next"]
    pages = 1
    while url:
        path = urlsplit(url)
        body = _ok(_get(client, f"{path.path}?{path.query}", tok))
        pages += 1
        seen += _ids(body)
        rel = {link["relation"]: link["url"] for link in body["link"]}
        assert "previous" in rel
        url = rel.get("next")
    assert pages == 3 and sorted(seen, key=int) == sorted({str(p.patient.id) for p in patients}, key=int)
    assert len(seen) == len(set(seen))
    # previous of the last page goes back one page
    last = _ok(_get(client, "/fhir/Patient?_count=2&_offset=4", tok))
    prev = next(link["url"] for link in last["link"] if link["relation"] == "previous")
    assert parse_qs(urlsplit(prev).query)["_offset"] == ["2"]
    # beyond the old 200 cap: _offset reaches everything; _count=0 gives the total only
    assert _ok(_get(client, "/fhir/Patient?_count=0", tok))["total"] == 5
    assert "entry" not in _ok(_get(client, "/fhir/Patient?_count=0", tok))
    _outcome(_get(client, "/fhir/Patient?_count=201", tok), 400)
    _outcome(_get(client, "/fhir/Patient?_offset=-1", tok), 400)


def test_birthdate_partial_dates_and_prefixes(
    client: FlaskClient, tokens: dict[str, str], patients: list[Visit]
) -> None:
    tok = tokens["physician"]
    ids = {p.patient.full_name: str(p.patient.id) for p in patients}

    def names(query: str) -> set[str]:
        found = set(_ids(_ok(_get(client, f"/fhir/Patient?{query}", tok))))
        return {n for n, i in ids.items() if i in found}

    assert names("birthdate=1990") == {"Nguyễn Thị Hồng Nhung"}
    assert names("birthdate=1991") == {"Trần Thị Lan", "Lê Hồng Nhung"}
    assert names("birthdate=1991-05") == {"Lê Hồng Nhung"}
    assert names("birthdate=1991-05-20") == {"Lê Hồng Nhung"}
    assert names("birthdate=ge1992-01-01") == {"Phạm Nhung", "Ngô Văn Nhu"}
    assert names("birthdate=lt1991") == {"Nguyễn Thị Hồng Nhung"}
    assert names("birthdate=gt1991") == {"Phạm Nhung", "Ngô Văn Nhu"}
    assert names("birthdate=le1991-02") == {"Nguyễn Thị Hồng Nhung", "Trần Thị Lan"}
    assert names("birthdate=ne1991") == {"Nguyễn Thị Hồng Nhung", "Phạm Nhung", "Ngô Văn Nhu"}
    assert names("birthdate=sa1992-12-30") == {"Phạm Nhung", "Ngô Văn Nhu"}
    assert names("birthdate=eb1990-12") == {"Nguyễn Thị Hồng Nhung"}
    assert names("birthdate=ge1991&birthdate=lt1992") == {"Trần Thị Lan", "Lê Hồng Nhung"}  # AND
    assert names("birthdate=1990,1994") == {"Nguyễn Thị Hồng Nhung", "Ngô Văn Nhu"}  # OR
    assert "Nguyễn Thị Hồng Nhung" in names("birthdate=ap1990-05-18")
    for bad in ("birthdate=1990-13", "birthdate=199", "birthdate=xx1990", "birthdate=17/05/1990"):
        _outcome(_get(client, f"/fhir/Patient?{bad}", tok), 400)


def test_date_ranges_in_local_time() -> None:
    r = fp.parse_date("2026-11")
    assert (r.prefix, r.start.isoformat(), r.end.isoformat()) == ("eq", "2026-11-01T00:00:00", "2026-12-01T00:00:00")
    r = fp.parse_date("ge2026-11-23T08:30")
    assert (r.prefix, r.start.isoformat(), r.end.isoformat()) == ("ge", "2026-11-23T08:30:00", "2026-11-23T08:31:00")
    # an explicit zone is converted to Vietnam time
    assert fp.parse_date("2026-11-23T01:30:00Z").start.isoformat() == "2026-11-23T08:30:00"
    assert fp.parse_date("2026-12").end.isoformat() == "2027-01-01T00:00:00"


def test_encounter_dates_with_minutes_and_prefixes(client: FlaskClient, tokens: dict[str, str], visit: Visit) -> None:
    tok = tokens["physician"]
    eid = str(visit.encounter.id)  # admitted 08:30 local (01:30 UTC) on 23 Nov 2026
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=2026-11-23T08:30", tok))) == [eid]
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=2026-11-23T08:31", tok))) == []
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=2026-11", tok))) == [eid]
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=2026", tok))) == [eid]
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=lt2026-11-23T08:30", tok))) == []
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=gt2026-11-23T08:29", tok))) == [eid]
    assert _ids(_ok(_get(client, "/fhir/Encounter?date=ge2026-11-23T01:30:00Z", tok))) == [eid]


def test_name_matches_any_word_start_without_diacritics(
    client: FlaskClient, tokens: dict[str, str], patients: list[Visit]
) -> None:
    tok = tokens["physician"]
    by_id = {str(p.patient.id): p.patient.full_name for p in patients}

    def names(q: str) -> set[str]:
        return {by_id[i] for i in _ids(_ok(_get(client, f"/fhir/Patient?name={q}", tok)))}

    nhung = {"Nguyễn Thị Hồng Nhung", "Lê Hồng Nhung", "Phạm Nhung"}
    assert names("nhung") == nhung
    assert names("Nhung") == nhung and names("NHUNG") == nhung
    assert names("nhu") == nhung | {"Ngô Văn Nhu"}
    assert names("Hồng") == {"Nguyễn Thị Hồng Nhung", "Lê Hồng Nhung"}
    assert names("hong nh") == {"Nguyễn Thị Hồng Nhung", "Lê Hồng Nhung"}
    assert names("nguyen") == {"Nguyễn Thị Hồng Nhung"}
    assert names("ung") == set()  # the start of a word, not any substring
    assert names("100%25") == set()  # LIKE wildcards are plain characters
    cap = _ok(client.get("/fhir/metadata"))
    patient = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
    assert {p["name"]: p["type"] for p in patient["searchParam"]}["name"] == "string"


def test_identifier_token_rules_and_absolute_references(
    client: FlaskClient, tokens: dict[str, str], patients: list[Visit]
) -> None:
    tok = tokens["physician"]
    v = patients[0]
    pid = str(v.patient.id)
    cccd = SYSTEMS["cccd"]
    assert cccd == "http://fhir.ehealth.gov.vn/core/sid/national_id"  # VN Core IG, VNCorePatient slice TheCCCD
    assert _ids(_ok(_get(client, f"/fhir/Patient?identifier={cccd}|079190001234", tok))) == [pid]
    # the systems emitted before still work: the project's first URI and the old draft IG's
    for old in ("https://filmless.vn/fhir/sid/cccd", "http://fhir.hl7.org.vn/core/sid/cccd"):
        assert _ids(_ok(_get(client, f"/fhir/Patient?identifier={old}|079190001234", tok))) == [pid]
    # |value: identifiers without a system (this server has none)
    assert _ids(_ok(_get(client, "/fhir/Patient?identifier=|079190001234", tok))) == []
    assert _ids(_ok(_get(client, "/fhir/Patient?identifier=079190001234", tok))) == [pid]
    # system|: every patient with a value in the system
    assert len(_ids(_ok(_get(client, f"/fhir/Patient?identifier={cccd}|", tok)))) == 5
    assert len(_ids(_ok(_get(client, f"/fhir/Patient?identifier={SYSTEMS['bhyt']}|", tok)))) == 5
    # comma = OR
    both = _ids(_ok(_get(client, f"/fhir/Patient?identifier={cccd}|079190001234,{cccd}|001191004321", tok)))
    assert len(both) == 2
    # BHXH number (10 digits inside the legacy card)
    assert _ids(_ok(_get(client, f"/fhir/Patient?identifier={SYSTEMS['bhxh']}|0123456789", tok))) == [pid]
    # absolute and relative references
    for ref in (pid, f"Patient/{pid}", f"https://his.example.vn/fhir/Patient/{pid}"):
        assert _ids(_ok(_get(client, f"/fhir/Encounter?patient={ref}", tok))) == [str(v.encounter.id)]
        assert _ids(_ok(_get(client, f"/fhir/Encounter?subject={ref}", tok))) == [str(v.encounter.id)]
    assert _ids(_ok(_get(client, f"/fhir/ServiceRequest?encounter=http://x/fhir/Encounter/{v.encounter.id}", tok))) == [
        str(v.order.id)
    ]
    _outcome(_get(client, f"/fhir/Encounter?patient=Encounter/{pid}", tok), 400)


def test_lenient_and_strict_handling(client: FlaskClient, tokens: dict[str, str], visit: Visit) -> None:
    tok = tokens["physician"]
    body = _outcome(_get(client, "/fhir/Patient?foo=1&name=nhung", tok), 400)
    assert "foo" in body["issue"][0]["diagnostics"]
    _outcome(_get(client, "/fhir/Patient?foo=1", tok, Prefer="handling=strict"), 400)
    ok = _ok(_get(client, "/fhir/Patient?foo=1&name=nhung", tok, Prefer="handling=lenient"))
    assert _ids(ok) == [str(visit.patient.id)]
    self_url = next(link["url"] for link in ok["link"] if link["relation"] == "self")
    assert "foo" not in self_url and "name=nhung" in self_url


def test_errors_are_operation_outcomes(client: FlaskClient, tokens: dict[str, str], visit: Visit) -> None:
    tok = tokens["physician"]
    auth = {"Authorization": f"Bearer {tok}"}
    _outcome(_get(client, "/fhir/Foo", tok), 404)
    _outcome(_get(client, "/fhir/Foo/1", tok), 404)
    _outcome(_get(client, "/fhir/", tok), 404)
    _outcome(_get(client, "/fhir/Patient/1/_history", tok), 404)
    for method in ("post", "put", "delete", "patch"):
        r = getattr(client, method)(f"/fhir/Patient/{visit.patient.id}", headers=auth, json={})
        _outcome(r, 405)
        assert "GET" in r.headers["Allow"] and "POST" not in r.headers["Allow"]
        _outcome(getattr(client, method)("/fhir/Patient", headers=auth, json={}), 405)
    _outcome(client.post("/fhir/metadata"), 405)
    _outcome(_get(client, "/fhir/Patient/999999", tok), 404)


def test_xml_is_not_acceptable(client: FlaskClient, tokens: dict[str, str], visit: Visit) -> None:
    tok = tokens["physician"]
    _outcome(_get(client, "/fhir/Patient", tok, Accept="application/fhir+xml"), 406)
    _outcome(_get(client, f"/fhir/Patient/{visit.patient.id}", tok, Accept="application/xml"), 406)
    _outcome(_get(client, "/fhir/Patient?_format=xml", tok), 406)
    _outcome(client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}), 406)
    _ok(_get(client, "/fhir/Patient", tok, Accept="application/fhir+json"))
    _ok(_get(client, "/fhir/Patient", tok, Accept="application/fhir+xml;q=0.9, application/fhir+json;q=0.5"))
    _ok(_get(client, "/fhir/Patient", tok, Accept="*/*"))
    _ok(_get(client, "/fhir/Patient?_format=json", tok))


def test_reads_have_version_last_updated_and_etag(
    client: FlaskClient, tokens: dict[str, str], visit: Visit, session: Session
) -> None:
    tok = tokens["physician"]
    for kind, ident in (
        ("Patient", visit.patient.id),
        ("Encounter", visit.encounter.id),
        ("ServiceRequest", visit.order.id),
        ("ImagingStudy", visit.study.id),
        ("DiagnosticReport", visit.report.id),
        ("DocumentReference", visit.note.id),
    ):
        r = _get(client, f"/fhir/{kind}/{ident}", tok)
        body = _ok(r)
        meta = body["meta"]
        assert meta["versionId"] and meta["lastUpdated"].endswith("+07:00"), kind
        assert r.headers["ETag"] == f'W/"{meta["versionId"]}"'
        assert r.headers["Last-Modified"]
        again = _get(client, f"/fhir/{kind}/{ident}", tok, **{"If-None-Match": r.headers["ETag"]})
        assert again.status_code == 304
    # the version changes when the resource does
    before = _ok(_get(client, f"/fhir/Patient/{visit.patient.id}", tok))["meta"]["versionId"]
    from emr.patients import service as pats

    from .conftest import ADMIN_ACTOR, patient_data

    pats.update_patient(
        session,
        ADMIN_ACTOR,
        visit.patient.id,
        patient_data(phone="0909999999", ward_code="26734", occupation_code="00001"),
    )
    after = _get(client, f"/fhir/Patient/{visit.patient.id}", tok)
    assert _ok(after)["meta"]["versionId"] != before
    assert _ok(after)["telecom"][0]["value"] == "0909999999"
