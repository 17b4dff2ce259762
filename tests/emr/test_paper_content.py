"""What a signed paper and the version history say: an amendment states the version it amends, when that one was
signed and why; fields come in the form's order; a discharge paper carries the visit code, admission and discharge
times (facility time) and the ICD-10 diagnoses; a fixed choice is shown by its label, never its stored code."""

from __future__ import annotations

import html
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.core.clock import to_local
from emr.documents import service as documents
from emr.documents.content import content_lines
from emr.i18n import t
from emr.models import Document, Encounter
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing import render_document_pdf
from emr.signing import service as svc

from .conftest import World, login, patient_data

DISCHARGE = {
    "summary": "Sốt, ho đờm 5 ngày; kháng sinh, hết sốt ngày thứ 3.",
    "discharge_diagnosis": "Viêm phổi thùy dưới phải; tăng huyết áp",
    "treatment": "Nội khoa: kháng sinh tĩnh mạch 5 ngày",
    "result": "2",
    "follow_up": "Tái khám sau 1 tuần",
    "test_results": "X-quang ngực: đám mờ thùy dưới phổi phải",
    "doctor_advice": "Uống đủ nước, dùng thuốc theo đơn",
    "storage_number": "LT-2026-00042",
}
OUTPATIENT = {
    "chief_complaint": "Ho kéo dài",
    "history": "Ho 3 tuần",
    "examination": "Phổi ran nổ",
    "conclusion": "Viêm phổi",
    "treatment_plan": "Kháng sinh 7 ngày",
}
ADMITTED = datetime(2026, 3, 10, 1, 30)  # stored as naive UTC: 08:30 in Vietnam
DISCHARGED = datetime(2026, 3, 14, 2, 15)  # 09:15 in Vietnam


def _config(tmp_path: Path) -> svc.SigningConfig:
    return svc.SigningConfig(
        trust_anchors_dir=tmp_path / "anchors", public_url="https://emr.benhvien.example", hospital_name="BV filmless"
    )


def _pdf_text(pdf: bytes) -> str:
    """The PDF's text line by line as printed (``-layout``: a label and its value stay on one line), whitespace
    folded to single spaces."""
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    return " ".join(text.decode().split())


def _stay(session: Session, world: World, *, discharged: bool = True) -> Encounter:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data(health_id="7912345678"))
    enc = encounters.create_encounter(
        session,
        doctor,
        {
            "patient_id": p.id,
            "kind": "inpatient",
            "department_code": world.department_code,
            "diagnoses": ["J18.9", "I10"],
        },
    )
    enc.admitted_at = ADMITTED
    session.commit()
    if discharged:
        _discharge(session, world, enc)
    return enc


def _discharge(session: Session, world: World, enc: Encounter) -> None:
    encounters.close_encounter(session, world.actor("physician"), enc.id, DISCHARGE["discharge_diagnosis"], "2")
    enc.discharged_at = DISCHARGED
    session.commit()


def _document(session: Session, world: World, enc: Encounter, form_type: str, content: dict[str, str]) -> Document:
    return documents.create_document(
        session, world.actor("physician"), {"encounter_id": enc.id, "form_type": form_type, "content": content}
    )


def _current(doc: Document) -> Any:
    return next(v for v in doc.versions if v.number == doc.current_version)


def test_discharge_paper_carries_the_stay_in_local_time_and_the_icd10_diagnoses(
    session: Session, world: World, tmp_path: Path
) -> None:
    enc = _stay(session, world)
    doc = _document(session, world, enc, "discharge_summary", DISCHARGE)
    paper = svc.render_input(session, doc, _current(doc), "code-0001", _config(tmp_path))
    assert list(paper.visit) == [
        (t("signing.pdf.visit_code"), enc.visit_code),
        (t("signing.pdf.admitted_at"), "08:30, 10/03/2026"),
        (t("signing.pdf.discharged_at"), "09:15, 14/03/2026"),
        (t("signing.pdf.icd_main"), "J18.9 – Viêm phổi không đặc hiệu"),
        (t("signing.pdf.icd_secondary"), "I10 – Tăng huyết áp vô căn"),
    ]
    assert dict(paper.patient_details) == {
        t("patients.ethnicity"): "Kinh (01)",  # MA_DANTOC by its name (GSO list), the form's "Dân tộc"
        t("signing.pdf.health_id"): "7912345678",
        t("signing.pdf.bhyt"): "DN4790123456789 · " + t("signing.pdf.bhyt_valid", start="01/01/2026", end="31/12/2026"),
        t("signing.pdf.address"): "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
    }
    text = _pdf_text(render_document_pdf(paper))
    for expected in (
        f"{t('signing.pdf.visit_code')}: {enc.visit_code}",
        f"{t('signing.pdf.admitted_at')}: 08:30, 10/03/2026",
        f"{t('signing.pdf.discharged_at')}: 09:15, 14/03/2026",
        "J18.9 – Viêm phổi không đặc hiệu",
        "I10 – Tăng huyết áp vô căn",
        "DN4790123456789",
        f"{t('documents.field.result')} {t('documents.result.2')}",  # the label, not the stored "2"
    ):
        assert expected in text, (expected, text)


def test_discharge_paper_of_a_stay_still_open_says_so(session: Session, world: World, tmp_path: Path) -> None:
    enc = _stay(session, world, discharged=False)
    doc = _document(session, world, enc, "discharge_summary", DISCHARGE)
    visit = dict(svc.render_input(session, doc, _current(doc), "code-0002", _config(tmp_path)).visit)
    assert visit[t("signing.pdf.discharged_at")] == t("signing.pdf.not_discharged")


def test_paper_lists_the_fields_in_the_form_order(session: Session, world: World, tmp_path: Path) -> None:
    enc = _stay(session, world, discharged=False)
    # A closed stay takes no new paper but its discharge paper: the record is written while the stay is open.
    made = {"outpatient_record": _document(session, world, enc, "outpatient_record", OUTPATIENT)}
    _discharge(session, world, enc)
    made["discharge_summary"] = _document(session, world, enc, "discharge_summary", DISCHARGE)
    for form_type, content in (("outpatient_record", OUTPATIENT), ("discharge_summary", DISCHARGE)):
        doc = made[form_type]
        paper = svc.render_input(session, doc, _current(doc), "code-0003", _config(tmp_path))
        labels = [t(f"documents.field.{name}") for name in content]  # the schema's (the form's) order
        assert [label for label, _ in paper.sections] == labels
        text = _pdf_text(render_document_pdf(paper))
        positions = [text.index(label) for label in labels]
        assert positions == sorted(positions), form_type
        # The visit code: a line of its own, or the discharge paper's stay block.
        assert f"{enc.visit_code}" in text and text.count(enc.visit_code) == 1, form_type


def test_amended_paper_states_the_version_it_amends_when_that_was_signed_and_why(
    session: Session, world: World, tmp_path: Path
) -> None:
    enc = _stay(session, world, discharged=False)
    doctor = world.actor("physician")
    doc = _document(session, world, enc, "outpatient_record", OUTPATIENT)
    documents.mark_signed(session, doctor, doc.id, 1)
    _discharge(session, world, enc)  # amended after discharge: signed papers are still amended
    v1 = _current(documents.get_document(session, doctor, doc.id))
    signed = to_local(v1.signed_at).strftime("%H:%M, %d/%m/%Y")
    reason = "Bổ sung kết luận sau khi có kết quả CT"
    doc = documents.amend_document(
        session, doctor, doc.id, {**OUTPATIENT, "conclusion": "Viêm phổi thùy dưới phải"}, reason, base_version=1
    )
    paper = svc.render_input(session, doc, _current(doc), "code-0004", _config(tmp_path))
    assert list(paper.notice) == [
        t("signing.pdf.amendment", version=2, old=1, signed=signed),
        t("signing.pdf.amendment_reason", reason=reason),
        t("signing.pdf.amendment_replaces", old=1),
    ]
    assert paper.version == 2
    text = _pdf_text(render_document_pdf(paper))
    for line in paper.notice:
        assert " ".join(line.split()) in text, (line, text)
    assert f"{t('signing.pdf.visit', code=enc.visit_code)}" in text  # the visit code is printed too
    # The first version's paper is no amendment.
    first = svc.render_input(session, doc, v1, "code-0005", _config(tmp_path))
    assert list(first.notice) == []


def test_history_shows_choice_labels_in_the_form_order(
    client: FlaskClient, session: Session, world: World
) -> None:
    enc = _stay(session, world)
    doctor = world.actor("physician")
    doc = _document(session, world, enc, "discharge_summary", DISCHARGE)
    documents.mark_signed(session, doctor, doc.id, 1)
    documents.amend_document(session, doctor, doc.id, {**DISCHARGE, "result": "1"}, "Kết quả ghi nhầm", base_version=1)
    session.commit()
    assert login(client, "physician1").status_code == 302
    page = html.unescape(client.get(f"/documents/{doc.id}").get_data(as_text=True))
    current, _, history = page.partition(t("documents.show_version", version=1))
    # The current version (result "1") and the earlier one (result "2"), each by its label.
    assert f"<dd>{t('documents.result.1')}</dd>" in current
    assert f"<dd>{t('documents.result.2')}</dd>" in history
    assert "<dd>2</dd>" not in page and "<dd>1</dd>" not in page
    for part in (current, history):
        positions = [part.index(f"<dt>{t(f'documents.field.{name}')}</dt>") for name in DISCHARGE]
        assert positions == sorted(positions)


def test_content_lines_keep_fields_the_form_no_longer_has() -> None:
    stored = {"result": "5", "retired_field": "giữ lại", "summary": "Tóm tắt"}
    assert content_lines("discharge_summary", stored) == [
        (t("documents.field.summary"), "Tóm tắt"),
        (t("documents.field.result"), t("documents.result.5")),
        ("retired_field", "giữ lại"),
    ]
    assert content_lines("discharge_summary", {"result": "9"}) == [(t("documents.field.result"), "9")]
