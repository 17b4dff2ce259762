"""FHIR Encounter meta.lastUpdated follows every change that produces the resource's content.

Signing an admission note with a coded initial diagnosis adds the Encounter's AD diagnosis (its versionId
changed) but lastUpdated, and the Last-Modified header, stayed at the visit's own times; cancelling the note
removes the diagnosis again, with the same gap."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from emr.documents import service as docs
from emr.models import Document, DocumentVersion

from .conftest import make_visit, utc


def _read(client: FlaskClient, url: str, token: str) -> tuple[dict[str, Any], Any]:
    r = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json(), r


def _uses(enc: dict[str, Any]) -> list[str]:
    return [d["use"]["coding"][0]["code"] for d in enc.get("diagnosis", [])]


def test_signing_and_cancelling_an_admission_note_move_the_encounters_last_updated(
    client: FlaskClient, tokens: dict[str, str], session: Session, world: Any
) -> None:
    v = make_visit(session, world, close=False, cccd="079190007777")
    v.encounter.created_at = utc(2026, 11, 23, 1, 30)  # opened 08:30 in Vietnam
    session.commit()
    url, tok, doctor = f"/fhir/Encounter/{v.encounter.id}", tokens["physician"], world.actor("physician")
    before, r0 = _read(client, url, tok)
    assert _uses(before) == ["CC", "CM"] and before["meta"]["lastUpdated"] == "2026-11-23T08:30:00+07:00"

    note = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": v.encounter.id,
            "form_type": "admission_note",
            "content": {
                "reason": "Đau đầu",
                "examination": "Tỉnh",
                "initial_diagnosis": "Đau đầu",
                "initial_diagnosis_code": "R51",
            },
        },
    )
    docs.mark_signed(session, doctor, note.id, 1)
    session.execute(
        update(DocumentVersion).where(DocumentVersion.document_id == note.id).values(signed_at=utc(2026, 11, 23, 2, 15))
    )
    session.commit()
    signed, r1 = _read(client, url, tok)
    assert _uses(signed) == ["AD", "CC", "CM"]  # the content changed ...
    assert signed["meta"]["versionId"] != before["meta"]["versionId"]
    assert signed["meta"]["lastUpdated"] == "2026-11-23T09:15:00+07:00"  # ... and so did its time
    assert r1.headers["Last-Modified"] != r0.headers["Last-Modified"]

    docs.cancel_document(session, doctor, note.id, "Ghi nhầm lượt khám")
    session.execute(update(Document).where(Document.id == note.id).values(cancelled_at=utc(2026, 11, 23, 3, 0)))
    session.commit()
    cancelled, _r2 = _read(client, url, tok)
    assert _uses(cancelled) == ["CC", "CM"]
    assert cancelled["meta"]["lastUpdated"] == "2026-11-23T10:00:00+07:00"
