"""FHIR R4 API: every resource validated by fhir.resources, searches by CCCD, accession number and date."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.exports.artifacts import InMemoryArtifacts
from emr.exports.fhir import SYSTEMS
from emr.models import AuditEntry, DocumentVersion

from .conftest import Visit, make_visit


def _signed_pdf(pki: Any) -> bytes:
    """A one-page PDF signed with pyHanko (PAdES) by a development-CA key."""
    from fpdf import FPDF
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Radiology report")
    raw = bytes(pdf.output())
    user = pki.users["facility"]
    signer = signers.SimpleSigner.load_pkcs12(str(user.p12_path), passphrase=user.password().encode())
    out = io.BytesIO()
    signers.sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(raw)),
        signers.PdfSignatureMetadata(field_name="Sig1"),
        signer=signer,
        new_field_spec=fields.SigFieldSpec("Sig1"),
        output=out,
    )
    return out.getvalue()


def _get(client: FlaskClient, url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(url, headers=headers)


def _check(resource: dict[str, Any]) -> dict[str, Any]:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def _bundle(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/fhir+json"
    body = _check(resp.get_json())
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return [_check(e["resource"]) for e in body.get("entry", [])]


@pytest.fixture
def two_visits(session: Session, world: Any, visit: Visit) -> tuple[Visit, Visit]:
    other = make_visit(
        session, world, cccd="001190004321", full_name="Trần Thị Lan", province_code="01", bhyt_number="HT3010987654321"
    )
    return visit, other


def test_search_by_cccd_accession_and_date(
    client: FlaskClient, tokens: dict[str, str], two_visits: tuple[Visit, Visit], session: Session
) -> None:
    v, other = two_visits
    tok = tokens["physician"]
    pats = _bundle(_get(client, f"/fhir/Patient?identifier={SYSTEMS['cccd']}|079190001234", tok))
    assert [p["id"] for p in pats] == [str(v.patient.id)]
    cccd = next(i for i in pats[0]["identifier"] if i["system"] == SYSTEMS["cccd"])
    bhyt = next(i for i in pats[0]["identifier"] if i["system"] == SYSTEMS["bhyt"])
    assert cccd["value"] == "079190001234" and bhyt["value"] == "DN4790123456789"
    assert bhyt["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    assert [p["id"] for p in _bundle(_get(client, "/fhir/Patient?identifier=001190004321", tok))] == [
        str(other.patient.id)
    ]
    assert _bundle(_get(client, f"/fhir/Patient?identifier={SYSTEMS['cccd']}|000000000000", tok)) == []

    acc = v.order.accession_number
    studies = _bundle(_get(client, f"/fhir/ImagingStudy?identifier={acc}", tok))
    assert [s["id"] for s in studies] == [str(v.study.id)]
    endpoint = studies[0]["contained"][0]
    assert endpoint["resourceType"] == "Endpoint" and endpoint["address"] == "http://127.0.0.1:8080/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert studies[0]["endpoint"] == [{"reference": "#dicomweb"}]
    srs = _bundle(_get(client, f"/fhir/ServiceRequest?identifier={SYSTEMS['accession']}|{acc}", tok))
    assert [s["id"] for s in srs] == [str(v.order.id)]
    assert srs[0]["requester"]["identifier"]["value"]

    # dates are Vietnam-local days
    assert len(_bundle(_get(client, "/fhir/Encounter?date=2026-11-23", tok))) == 2
    assert _bundle(_get(client, "/fhir/Encounter?date=2026-11-24", tok)) == []
    both = _bundle(_get(client, "/fhir/Encounter?date=ge2026-11-23&date=lt2026-11-24", tok))
    assert len(both) == 2
    mine = _bundle(_get(client, f"/fhir/Encounter?patient={v.patient.id}&date=2026-11-23", tok))
    assert [e["id"] for e in mine] == [str(v.encounter.id)]
    assert mine[0]["period"]["start"] == "2026-11-23T08:30:00+07:00"
    assert len(_bundle(_get(client, "/fhir/DiagnosticReport?date=2026-11-23", tok))) == 2
    assert _bundle(_get(client, "/fhir/DiagnosticReport?date=le2026-11-22", tok)) == []
    assert len(_bundle(_get(client, "/fhir/ImagingStudy?started=2026-11-23", tok))) == 2

    # every search is audited with the patient it returned
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "fhir.search")).all()
    assert any(r.patient_id == v.patient.id and r.object_type == "Patient" for r in rows)


def test_patient_reads_signed_report_and_study(
    app: Flask, client: FlaskClient, tokens: dict[str, str], visit: Visit, session: Session, pki: Any
) -> None:
    pdf = _signed_pdf(pki)
    version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == visit.report.id)).one()
    session.commit()
    app.extensions["emr.signed_artifacts"] = InMemoryArtifacts(pdfs={version.id: pdf}, cms={version.id: b"0\x00"})
    tok = tokens["physician"]
    reports = _bundle(_get(client, f"/fhir/DiagnosticReport?patient={visit.patient.id}", tok))
    assert len(reports) == 1
    dr = reports[0]
    assert dr["status"] == "final" and dr["conclusion"] == "Viêm phổi thùy dưới phải."
    form = dr["presentedForm"][0]
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]) == pdf and b"/ByteRange" in pdf
    assert dr["imagingStudy"] == [{"reference": f"ImagingStudy/{visit.study.id}"}]
    assert dr["resultsInterpreter"][0]["identifier"]["value"] == "002/HCM-CCHN"

    read = _get(client, f"/fhir/ImagingStudy/{visit.study.id}", tok)
    assert read.status_code == 200
    study = _check(read.get_json())
    assert study["subject"] == {"reference": f"Patient/{visit.patient.id}"}
    assert study["identifier"][0]["value"] == f"urn:oid:{visit.order.study_instance_uid}"

    docs = _bundle(_get(client, f"/fhir/DocumentReference?patient={visit.patient.id}", tok))
    forms = {c["code"] for d in docs for c in d["type"]["coding"] if c["system"] == SYSTEMS["form_type"]}
    assert forms == {"radiology_report", "progress_note"}
    prov = _bundle(_get(client, f"/fhir/Provenance?patient={visit.patient.id}", tok))
    assert len(prov) == 2
    signed = next(p for p in prov if p["id"] == str(version.id))
    assert signed["signature"][0]["sigFormat"] == "application/pkcs7-signature"
    assert {"reference": f"DiagnosticReport/{visit.report.id}"} in signed["target"]

    for kind, ident in (
        ("Patient", visit.patient.id),
        ("Encounter", visit.encounter.id),
        ("ServiceRequest", visit.order.id),
        ("DiagnosticReport", visit.report.id),
        ("DocumentReference", visit.note.id),
        ("Provenance", version.id),
    ):
        r = _get(client, f"/fhir/{kind}/{ident}", tok)
        assert r.status_code == 200, (kind, r.get_data(as_text=True))
        assert _check(r.get_json())["resourceType"] == kind
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "fhir.read")).all()[-1]
    assert row.patient_id == visit.patient.id and row.username == "physician1"


def test_audit_events_errors_and_metadata(client: FlaskClient, tokens: dict[str, str], visit: Visit) -> None:
    events = _bundle(_get(client, f"/fhir/AuditEvent?patient={visit.patient.id}&date=ge2020-01-01", tokens["admin"]))
    assert any(e["type"]["code"] == "document.sign" for e in events)
    one = _get(client, f"/fhir/AuditEvent/{events[0]['id']}", tokens["admin"])
    assert one.status_code == 200 and _check(one.get_json())["resourceType"] == "AuditEvent"

    for url, token, status in (
        ("/fhir/Patient", None, 401),
        ("/fhir/Patient", "not-a-token", 401),
        ("/fhir/AuditEvent", tokens["physician"], 403),
        ("/fhir/DocumentReference", tokens["technician"], 403),
        ("/fhir/Patient/999999", tokens["physician"], 404),
        ("/fhir/Patient/abc", tokens["physician"], 404),
        ("/fhir/Patient?foo=1", tokens["physician"], 400),
        ("/fhir/Encounter?date=23/11/2026", tokens["physician"], 400),
    ):
        r = _get(client, url, token)
        assert r.status_code == status, (url, r.status_code)
        assert _check(r.get_json())["resourceType"] == "OperationOutcome"
    # a system this server does not hold matches nothing (R4 token search), it is no error
    assert _bundle(_get(client, "/fhir/Patient?identifier=urn:unknown|1", tokens["physician"])) == []
    meta = client.get("/fhir/metadata")
    cap = _check(meta.get_json())
    assert cap["fhirVersion"] == "4.0.1"
    assert {r["type"] for r in cap["rest"][0]["resource"]} >= {"Patient", "ImagingStudy", "DiagnosticReport"}


def test_routing_errors_under_fhir_are_operation_outcomes(client: FlaskClient, tokens: dict[str, str]) -> None:
    """404 (no such path) and 405 (wrong method) under /fhir answer FHIR JSON, not the HTML error page."""
    for method, url, status, code in (
        ("get", "/fhir/NoSuchType", 404, "not-found"),
        ("get", "/fhir/Patient/1/_history/2", 404, "not-found"),
        ("post", "/fhir/Patient", 405, "not-supported"),
        ("delete", "/fhir/Patient/1", 405, "not-supported"),
    ):
        r = getattr(client, method)(url, headers={"Authorization": f"Bearer {tokens['physician']}"})
        assert r.status_code == status, (method, url, r.status_code)
        assert r.mimetype == "application/fhir+json", (url, r.mimetype)
        outcome = _check(r.get_json())
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code
    # the HTML UI and the JSON API keep their own error shapes
    html = client.get("/patients/no/such/page")
    assert html.status_code == 404 and html.mimetype == "text/html"
    api = client.post("/api/patients/1/no-such")
    assert api.status_code == 404 and api.get_json()["error"] == "not_found"


def test_document_titles_are_the_forms_vietnamese_names(
    app: Flask, client: FlaskClient, tokens: dict[str, str], visit: Visit, session: Session
) -> None:
    """What a person reads of a document (type.text, description, attachment titles) is Vietnamese, built the
    same way for every form from its Vietnamese name; the LOINC display stays LOINC's own, in its coding."""
    from emr.i18n import t

    versions = session.scalars(
        select(DocumentVersion).where(DocumentVersion.document_id.in_([visit.report.id, visit.note.id]))
    ).all()
    session.commit()
    app.extensions["emr.signed_artifacts"] = InMemoryArtifacts(pdfs={v.id: b"%PDF-1.7 signed" for v in versions})
    tok = tokens["physician"]
    docs = {d["id"]: d for d in _bundle(_get(client, f"/fhir/DocumentReference?patient={visit.patient.id}", tok))}
    for doc, form in ((visit.note, "progress_note"), (visit.report, "radiology_report")):
        d = docs[str(doc.id)]
        name = t(f"documents.form.{form}")
        title = f"{name} số {doc.id}"
        assert d["type"]["text"] == name and d["description"] == title
        loinc, local = d["type"]["coding"]
        assert loinc["system"] == "http://loinc.org" and (local["code"], local["display"]) == (form, name)
        titles = [c["attachment"]["title"] for c in d["content"]]
        assert titles == [f"{title} (PDF đã ký số)", f"{title}, phiên bản 1 (JSON chuẩn hóa)"]
        assert loinc["display"] not in " ".join(titles)  # no "Progress note (PDF đã ký)"
    [report] = _bundle(_get(client, f"/fhir/DiagnosticReport?patient={visit.patient.id}", tok))
    name = t("documents.form.radiology_report")
    assert report["code"]["text"] == name
    assert report["presentedForm"][0]["title"] == f"{name} số {visit.report.id} (PDF đã ký số)"
