"""The Vietnamese texts of the FHIR resources, now read from the catalogue, are byte for byte what they were
when they were written in emr/exports/fhir.py (receivers may match on them)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.exports.artifacts import InMemoryArtifacts
from emr.exports.fhir import SYSTEMS
from emr.models import DocumentVersion

from .conftest import make_visit


def _read(client: FlaskClient, token: str, path: str) -> dict[str, Any]:
    r = client.get(f"/fhir/{path}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    body: dict[str, Any] = r.get_json()
    return body


def test_fhir_texts_are_unchanged(
    app: Flask, client: FlaskClient, tokens: dict[str, str], session: Session, world: Any
) -> None:
    v = make_visit(session, world, father_name="Nguyễn Văn Hùng", mother_name="Trần Thị Lan",
                   guardian_name="Lê Văn Tám")
    version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == v.report.id)).one()
    session.commit()
    app.extensions["emr.signed_artifacts"] = InMemoryArtifacts(pdfs={version.id: b"%PDF-1.7"},
                                                               cms={version.id: b"0\x00"})
    tok = tokens["physician"]

    patient = _read(client, tok, f"Patient/{v.patient.id}")
    ids = {i["system"]: i for i in patient["identifier"]}
    # the IG's slices fix their type exactly (v2-0203, its display, no text); the BHXH number has no slice and
    # its type is the text a person reads
    assert "text" not in ids[SYSTEMS["cccd"]]["type"] and "text" not in ids[SYSTEMS["bhyt"]]["type"]
    assert ids[SYSTEMS["bhxh"]]["type"] == {"text": "Mã số bảo hiểm xã hội"}
    assert ids[SYSTEMS["bhyt"]]["assigner"] == {"display": "Nơi đăng ký KCB ban đầu 79001"}
    assert [(c["relationship"][0]["coding"][0]["code"], c["relationship"][0]["text"], c["name"]["text"])
            for c in patient["contact"]] == [
        ("FTH", "Cha", "Nguyễn Văn Hùng"), ("MTH", "Mẹ", "Trần Thị Lan"), ("GUARD", "Người giám hộ", "Lê Văn Tám")]

    order = _read(client, tok, f"ServiceRequest/{v.order.id}")
    assert order["category"][0]["text"] == "Chẩn đoán hình ảnh"

    report = _read(client, tok, f"DiagnosticReport/{v.report.id}")
    assert report["text"]["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
        "Đám mờ thùy dưới phổi phải, có hình phế quản hơi. Không tràn dịch màng phổi."
        "</p><p><b>Kết luận:</b> Viêm phổi thùy dưới phải.</p></div>"
    )

    provenance = _read(client, tok, f"Provenance/{version.id}")
    assert provenance["entity"][0]["what"]["display"] == "phiên bản 1"
