"""The discharge paper's second signature when the department has no head (or the head is away): before, the
paper could never be completed; now a deputy ("KT. Trưởng khoa") or acting head ("Q. Trưởng khoa") the
hospital designated for the day signs it, and the capacity is recorded, stamped on the PDF, shown on the
verification page and named in the HSBA export."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
from typing import Any

from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields
from sqlalchemy import select

from emr.access import substitutes
from emr.access.users import create_user
from emr.core.clock import local_today
from emr.i18n import t
from emr.models import AuditEntry, Document
from emr.models.signing import DocumentSignature, SignedArtifact
from emr.patients import encounters
from emr.signing import service as svc
from tests.emr.conftest import csrf_token

from .conftest import TOKEN_LABEL, TOKEN_PIN
from .test_workflow import (  # the workflow's app, users and signing form, and its fixtures
    PASSWORD,
    SETUP,
    Env,
    _cheap_argon2,  # noqa: F401 - autouse fixture
    _sign,
    env,  # noqa: F401 - fixture
    token_keys,  # noqa: F401 - fixture
)

PAPER = {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi (J18.9)", "treatment": "Kháng sinh", "result": "1"}


def _text(pdf: bytes) -> str:
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    return " ".join(out.decode().split())


def _head_block(pdf: bytes) -> str:
    """The text of the head's signature block on the paper: its label, its box (the stamp) and the line under it."""
    reader = PdfFileReader(io.BytesIO(pdf))
    widget = next(ref.get_object() for name, _value, ref in fields.enumerate_sig_fields(reader, filled_status=None)
                  if name == "head")
    x0, y0, x1, y1 = (float(v) for v in widget["/Rect"])
    page = reader.root["/Pages"]["/Kids"][0].get_object()
    height = float((page.get("/MediaBox") or reader.root["/Pages"]["/MediaBox"])[3])
    crop = ["-r", "72", "-x", str(int(x0) - 20), "-y", str(int(height - y1) - 20), "-W", str(int(x1 - x0) + 40),
            "-H", str(int(y1 - y0) + 40)]
    out = subprocess.run(["pdftotext", "-f", "1", "-l", "1", *crop, "-", "-"], input=pdf, capture_output=True,
                         check=True).stdout
    return " ".join(out.decode().split())


def _reasons(pdf: bytes) -> list[str]:
    return [str(s.sig_object.get("/Reason", "")) for s in PdfFileReader(io.BytesIO(pdf)).embedded_signatures]


def _paper_signed_by_the_treating_physician(env: Env) -> Document:  # noqa: F811
    doc = env.document("discharge_summary", PAPER)
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi", main_code="J18.9")
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 302
    return doc


def test_no_head_is_a_dead_end_until_an_acting_head_is_named(env: Env) -> None:  # noqa: F811
    head = env.users["head"]
    head.is_department_head = False  # the post is vacant
    env.session.commit()
    doc = _paper_signed_by_the_treating_physician(env)
    other = env.users["other"]
    svc.register_token_key(env.session, SETUP, other.id, TOKEN_LABEL, env.labels["radiologist"])
    colleague = env.client("other")
    page = colleague.get(f"/signing/documents/{doc.id}/sign").get_data(as_text=True)
    assert t("signing.sign.head_nobody", department="Khoa Nội tổng hợp") in page  # says why, and who can fix it
    assert 'name="secret"' not in page
    assert _sign(colleague, doc.id, TOKEN_PIN).status_code == 403

    admin = create_user(env.session, SETUP, "quantri", PASSWORD, "admin", "Quản trị")
    env.session.commit()
    desk = env.app.test_client()
    desk.get("/login")
    desk.post("/login", data={"username": "quantri", "password": PASSWORD, "csrf_token": csrf_token(desk, "/login")})
    path = f"/signing/users/{other.id}"
    r = desk.post(path, data={"csrf_token": csrf_token(desk, path), "kind": "substitute",
                              "department_id": str(head.department_id), "capacity": "acting",
                              "valid_from": local_today().isoformat(), "reference": "07/QĐ-BV"})
    assert r.status_code == 200 and admin.id

    assert _sign(colleague, doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    d = env.session.get(Document, doc.id)
    assert d is not None and d.status == "signed" and d.versions[0].signed_by == other.id
    rows = env.session.scalars(select(DocumentSignature).join(SignedArtifact).where(
        SignedArtifact.document_id == doc.id).order_by(DocumentSignature.order_index)).all()
    assert [(r.signer_role, r.capacity) for r in rows] == [("treating", None), ("head", "acting")]
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    pdf = bytes(artifact.pdf)
    assert _reasons(pdf) == [t("signing.slot.treating"), "Q. Trưởng khoa"]
    assert "Q. TRƯỞNG KHOA" in _text(pdf)  # stamped in the head's box over the signer's name
    block = _head_block(pdf)  # the acting head's name in the head's block, though the department has no head
    assert "Q. TRƯỞNG KHOA" in block and other.full_name in block and env.users["physician"].full_name not in block
    api = env.app.test_client().get(f"/api/verify/{artifact.verification_code}").get_json()
    assert api["valid"] is True and [s["role"] for s in api["signatures"]] == ["Bác sĩ điều trị", "Q. Trưởng khoa"]
    view = env.client("physician").get(f"/documents/{doc.id}").get_data(as_text=True)
    assert "Q. Trưởng khoa" in view
    signed = [json.loads(a.details) for a in env.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "document.sign_step", AuditEntry.object_id == str(doc.id)))]
    assert [s.get("capacity") for s in signed] == [None, "acting"]


def test_a_deputy_signs_for_the_head_on_leave_and_the_export_names_the_capacity(
    env: Env, tmp_path: Any  # noqa: F811
) -> None:
    from emr.exports import ExportConfig, export_hsba

    other = env.users["other"]
    svc.register_token_key(env.session, SETUP, other.id, TOKEN_LABEL, env.labels["radiologist"])
    today = local_today()
    substitutes.designate(env.session, SETUP, other.id, env.users["head"].department_id, "deputy", today,
                          today + dt.timedelta(days=14), "31/QĐ-BV")
    doc = _paper_signed_by_the_treating_physician(env)
    env.session.expire_all()
    first = bytes(env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)).pdf)
    assert env.users["head"].full_name not in _text(first)  # not pre-printed: someone else may sign for the head
    assert _sign(env.client("other"), doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    text = _text(bytes(artifact.pdf))
    assert "KT. TRƯỞNG KHOA" in text and "PHÓ TRƯỞNG KHOA" in text
    block = _head_block(bytes(artifact.pdf))  # the deputy who signed is named in the head's block, not the head
    assert "KT. TRƯỞNG KHOA PHÓ TRƯỞNG KHOA" in block and other.full_name in block
    assert env.users["head"].full_name not in text
    (tmp_path / "deputy.pdf").write_bytes(bytes(artifact.pdf))  # to look at (pdftoppm)
    config = ExportConfig(facility_code="79001", public_url="https://emr.benhvien.example")
    exp = export_hsba(env.session, env.actor("physician"), env.encounter_id, config, None, "json",
                      artifacts=svc.DbArtifacts())
    paper = json.loads(exp.data)["HoSoBenhAn"]["GiayRaVien"]
    assert paper["bacsi_ravien"] == other.full_name and paper["bacsi_ravien_tucach"] == "KT. Trưởng khoa"


def test_the_head_still_signs_as_head(env: Env) -> None:  # noqa: F811
    from emr.exports import ExportConfig, export_hsba

    doc = _paper_signed_by_the_treating_physician(env)
    first = bytes(env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)).pdf)
    # Never pre-printed: a deputy or acting head designated later, on the day of signing, may give it instead.
    assert env.users["head"].full_name not in _text(first)
    assert _sign(env.client("head"), doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    signed = bytes(env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id)).pdf)
    block = _head_block(signed)  # the stamp names the head, in the head's capacity
    assert "TRƯỞNG KHOA" in block and env.users["head"].full_name in block and "KT." not in block
    row = env.session.scalars(select(DocumentSignature).where(DocumentSignature.signer_role == "head")).one()
    assert row.capacity == "head"
    exp = export_hsba(env.session, env.actor("physician"), env.encounter_id,
                      ExportConfig(facility_code="79001", public_url="https://emr.benhvien.example"), None, "json",
                      artifacts=svc.DbArtifacts())
    assert json.loads(exp.data)["HoSoBenhAn"]["GiayRaVien"]["bacsi_ravien_tucach"] == "Trưởng khoa"


def test_the_treating_physician_designated_deputy_cannot_also_give_the_head_signature(
    env: Env, tmp_path: Any  # noqa: F811
) -> None:
    """Before: the treating physician, designated "KT. Trưởng khoa" after signing, gave the head's signature
    too, and the paper verified as valid signed twice by the same person."""
    physician = env.users["physician"]
    today = local_today()
    substitutes.designate(env.session, SETUP, physician.id, env.users["head"].department_id, "deputy", today,
                          None, "12/QĐ-BV")
    doc = _paper_signed_by_the_treating_physician(env)
    c = env.client("physician")
    page = c.get(f"/signing/documents/{doc.id}/sign").get_data(as_text=True)
    assert 'name="secret"' not in page  # no form: the page says why and who else may sign
    said = t("signing.sign.already_signed", slot=t("signing.slot.treating"), next=t("signing.slot.head"))
    assert said in page and env.users["head"].full_name in page.split('id="already-signed"')[1]
    r = _sign(c, doc.id, TOKEN_PIN)
    assert r.status_code == 403
    env.session.expire_all()
    artifact = env.session.scalar(select(SignedArtifact).where(SignedArtifact.document_id == doc.id))
    assert artifact.signatures_done == 1 and not artifact.complete
    assert env.session.get(Document, doc.id).status == "signing"
    refused = [json.loads(a.details) for a in env.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "document.sign", AuditEntry.outcome == "denied", AuditEntry.object_id == str(doc.id)))]
    assert [r.get("error") for r in refused] == ["already_signed"]
    env.session.rollback()
    assert _sign(env.client("head"), doc.id, TOKEN_PIN).status_code == 302  # someone else still can
    env.session.expire_all()
    api = env.app.test_client().get(f"/api/verify/{artifact.verification_code}").get_json()
    assert api["valid"] is True and [s["signer_user"] for s in api["signatures"]] == [
        physician.full_name, env.users["head"].full_name]
    (tmp_path / "head.pdf").write_bytes(bytes(artifact.pdf))  # to look at (pdftoppm)
