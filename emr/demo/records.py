"""Demo records for the exports: an inpatient stay with every signed paper, and the exported files.

The outpatient chest CT visit of the first demo patient gets a progress note (XML5); a third
patient gets an inpatient stay (admission note, two progress notes, diagnosis, a chest X-ray with
its report, discharge paper with the XML7/XML8 fields). :func:`seed_record_demo` writes them as
drafts and returns who signs each, in order; the demo signs them for real with its token
(emr.demo.signing; the discharge paper by the treating physician, then the head of department),
nothing here marks a paper signed. :func:`close_record_demo` discharges the stay before the papers are
signed, so the discharge paper prints its discharge time (emr.signing.service.render_input). Both visits are
exported as signed QĐ 130/4750 envelopes (XML1/3/4/5) and the stay as a HoSoBenhAn (JSON and XML)
into ``<data dir>/exports/demo/`` — what ``filmless export`` would write, ready to inspect.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..access.audit import Actor
from ..core.clock import to_local, to_utc, utcnow
from ..core.settings import EmrSettings
from ..core.states import OrderStatus
from ..documents import service as documents
from ..imaging import orders
from ..models import Document, Encounter, ImagingOrder, Patient, User
from ..patients import encounters

__all__ = ["SigningStep", "close_record_demo", "seed_record_demo", "write_demo_exports", "DEMO_EXPORT_DIR"]

log = logging.getLogger(__name__)

DEMO_EXPORT_DIR = Path("exports") / "demo"
_INPATIENT_REASON = "Sốt cao, ho đờm, khó thở"
_DEMO_DEVICE_DX = "XQ.1.79001.00031"  # XX.n.YYYYY.Z: X-ray, state budget, facility, serial
_DISCHARGE_DIAGNOSIS = "Viêm phổi thùy dưới phải; tăng huyết áp"
_STAY_DAYS = 5  # the papers tell a five-day stay (antibiotics for 5 days, no fever from day 3)

SigningStep = tuple[int, Actor]  # (document id, who fills its next signature)


def _actor(user: User) -> Actor:
    return Actor(user.id, user.username, user.role, None)


def _admit_days_ago(enc: Encounter, days: int = _STAY_DAYS) -> None:
    """Admission ``days`` calendar days before now, at the same wall-clock time in the facility's zone."""
    enc.admitted_at = enc.inpatient_at = to_utc(to_local(utcnow()) - timedelta(days=days))


def _paper(
    session: Session,
    steps: list[SigningStep],
    signers: tuple[Actor, ...],
    encounter_id: int,
    form_type: str,
    content: dict[str, Any],
    order_id: int | None = None,
) -> Document:
    """A draft by the first of ``signers``, to be signed by each of them in turn (``steps``)."""
    data: dict[str, Any] = {"encounter_id": encounter_id, "form_type": form_type, "content": content}
    if order_id is not None:
        data["order_id"] = order_id
    doc = documents.create_document(session, signers[0], data)
    steps.extend((doc.id, signer) for signer in signers)
    return doc


def seed_record_demo(
    session: Session, users: dict[str, User], outpatient: Patient, inpatient: Patient
) -> list[SigningStep]:
    """Idempotent: a progress note on the outpatient visit, and the inpatient stay, as drafts; returns
    the signatures they need, in order (empty when they exist already)."""
    doctor, reader, head = _actor(users["physician"]), _actor(users["radiologist"]), _actor(users["head"])
    steps: list[SigningStep] = []
    visit = session.scalar(
        select(Encounter).where(Encounter.patient_id == outpatient.id, Encounter.kind == "outpatient")
    )
    if visit is not None:
        # Without an image store no study is linked, so nothing records the exam as done (NGAY_TH_YL).
        for order in session.scalars(select(ImagingOrder).where(ImagingOrder.encounter_id == visit.id)):
            if order.performed_at is None:
                order.performed_at = order.ordered_at + timedelta(minutes=30)
        session.commit()
    if (
        visit is not None
        and session.scalar(
            select(Document.id).where(Document.encounter_id == visit.id, Document.form_type == "progress_note")
        )
        is None
    ):
        if visit.status == "open":
            _paper(
                session,
                steps,
                (doctor,),
                visit.id,
                "progress_note",
                {"note": "Sốt 38,5 °C, ho đờm, ran nổ đáy phổi phải; chỉ định CT ngực.", "stage": "Khởi phát"},
            )
    if session.scalar(select(Encounter.id).where(Encounter.patient_id == inpatient.id, Encounter.kind == "inpatient")):
        return steps
    enc = encounters.create_encounter(
        session,
        doctor,
        {
            "patient_id": inpatient.id,
            "kind": "inpatient",
            "department_code": "K19",
            "reason": _INPATIENT_REASON,
            "admission_diagnosis": "Viêm phổi",
            "diagnoses": ["J18.9", "I10"],
            "insurance_object": "1",
            "benefit_level": 80,
        },
    )
    enc.weight_kg = "58.5"
    _admit_days_ago(enc)  # a stay admitted days ago, not in the minute it is discharged
    session.commit()
    _paper(
        session,
        steps,
        (doctor,),
        enc.id,
        "admission_note",
        {
            "reason": _INPATIENT_REASON,
            "history": "Ho đờm 5 ngày, sốt 39 °C, tăng huyết áp đang điều trị",
            "examination": "Ran nổ đáy phổi phải, SpO2 93 %, mạch 98 lần/phút",
            "initial_diagnosis": "Viêm phổi; tăng huyết áp",
            "plan": "Nhập khoa Nội tổng hợp, kháng sinh tĩnh mạch, chụp CT ngực",
        },
    )
    order = orders.create_order(
        session,
        doctor,
        {
            "patient_id": inpatient.id,
            "encounter_id": enc.id,
            "modality": "DX",
            "procedure_name": "Chụp X-quang ngực thẳng",
            "procedure_code": "18.0067.0001",
            "body_part": "CHEST",
            "urgency": "urgent",
            "clinical_info": "Sốt, ran nổ đáy phổi phải",
        },
    )
    _paper(
        session,
        steps,
        (reader,),
        enc.id,
        "radiology_report",
        {
            "technique": "X-quang kỹ thuật số, tư thế thẳng sau-trước",
            "findings": "Đám mờ thùy dưới phổi phải, xóa bờ hoành phải. Không tràn dịch màng phổi.",
            "conclusion": "Viêm phổi thùy dưới phải.",
        },
        order_id=order.id,
    )
    row = session.get(ImagingOrder, order.id)
    assert row is not None
    row.status = OrderStatus.REPORTED
    row.performed_at = row.ordered_at + timedelta(minutes=20)
    row.device_code = _DEMO_DEVICE_DX  # MA_MAY of the X-ray room
    session.commit()
    for note in ("Còn sốt 38 °C, ho giảm; tiếp tục kháng sinh.", "Hết sốt 48 giờ, phổi thông khí tốt; cho ra viện."):
        _paper(session, steps, (doctor,), enc.id, "progress_note", {"note": note, "stage": "Ổn định"})
    _paper(
        session,
        steps,
        (doctor,),
        enc.id,
        "diagnosis",
        {
            "main_code": "J18.9",
            "main_text": "Viêm phổi thùy dưới phải",
            "secondary_codes": "I10",
            "secondary_text": "Tăng huyết áp vô căn",
        },
    )
    _paper(
        session,
        steps,
        (doctor, head),  # the treating physician, then the head of K19 (emr.signing.service.slots_for)
        enc.id,
        "discharge_summary",
        {
            "summary": "Sốt, ho đờm 5 ngày; X-quang: viêm phổi thùy dưới phải; kháng sinh, hết sốt ngày thứ 3.",
            "discharge_diagnosis": _DISCHARGE_DIAGNOSIS,
            "treatment": "Nội khoa: kháng sinh tĩnh mạch 5 ngày, hạ sốt, long đờm",
            "result": "1",
            "follow_up": "Tái khám sau 1 tuần tại Khoa Khám bệnh",
            "test_results": "X-quang ngực: đám mờ thùy dưới phổi phải; bạch cầu 14 G/L giảm còn 8 G/L khi ra viện",
            "doctor_advice": "Uống đủ nước, dùng thuốc theo đơn, tái khám ngay nếu sốt lại hoặc khó thở",
            "storage_number": "LT-2026-00001",
        },
    )
    log.info("demo: inpatient stay %s with its papers, to be signed", enc.visit_code)
    return steps


def close_record_demo(session: Session, users: dict[str, User], inpatient: Patient) -> None:
    """Discharge the inpatient stay (idempotent); its papers are signed afterwards, the discharge paper with
    the discharge time on it."""
    enc = session.scalar(
        select(Encounter).where(Encounter.patient_id == inpatient.id, Encounter.kind == "inpatient")
    )
    if enc is not None and enc.status == "open":
        _admit_days_ago(enc)  # discharged now: admitted _STAY_DAYS days before, in facility local time
        encounters.close_encounter(session, _actor(users["physician"]), enc.id, _DISCHARGE_DIAGNOSIS)


def write_demo_exports(settings: EmrSettings, session: Session) -> list[Path]:
    """The signed XML envelopes of the closed demo visits and the stay's HoSoBenhAn; [] when not exportable."""
    from ..exports import ExportError, export_hsba, export_xml130, load_config, open_facility_key, write_atomically
    from ..signing.service import DbArtifacts

    config = load_config(settings)
    folder = Path(settings.data_dir) / DEMO_EXPORT_DIR
    clerk = Actor(None, "demo", "records_clerk", None)
    written: list[Path] = []
    visits = list(session.scalars(select(Encounter).where(Encounter.status == "closed").order_by(Encounter.id)))
    try:
        with open_facility_key(config) as key:
            for enc in visits:
                try:
                    exp = export_xml130(session, clerk, enc.id, config, key)
                except ExportError as exc:
                    log.warning("demo: %s not exported: %s", enc.visit_code, exc.message)
                    continue
                path = folder / exp.filename
                write_atomically(path, exp.envelope)
                written.append(path)
                if enc.kind == "inpatient":
                    for fmt in ("json", "xml"):
                        h = export_hsba(session, clerk, enc.id, config, key, fmt, artifacts=DbArtifacts())
                        write_atomically(folder / h.filename, h.data)
                        written.append(folder / h.filename)
    except ExportError as exc:
        log.warning("demo: exports skipped: %s", exc.message)
    return written
