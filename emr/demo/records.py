"""Demo records for the exports: an inpatient stay with every signed paper, and the exported files.

The outpatient chest CT visit of the first demo patient gets a progress note (XML5); a third
patient gets an inpatient stay (admission note, a chest X-ray with its images and report, two
progress notes, diagnosis, discharge paper with the XML7/XML8 fields). :func:`seed_record_demo` writes
them as drafts and returns who signs each, in order; the demo signs them for real with its token
(emr.demo.signing; the discharge paper by the treating physician, then the head of department),
nothing here marks a paper signed. :func:`close_record_demo` discharges the stay, then writes the
discharge paper, so it prints its discharge time (emr.signing.service.render_input). Both visits are
exported as signed QĐ 130/4750 envelopes (XML1/3/4/5) and the stay as a HoSoBenhAn (JSON and XML)
into ``<data dir>/exports/demo/`` — what ``filmless export`` would write, ready to inspect.

The stay's timeline, in the facility's time zone (:data:`STAY_TIMELINE`): admitted at 08:30
:data:`STAY_DAYS` days ago, the admission note and the X-ray (imaged, then read) that morning,
progress notes on the days between, the diagnosis the day before discharge, discharged when the
demo runs. Papers are written on their day; they are signed when the demo runs, in that order.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..access.audit import Actor
from ..core.clock import local_today, to_local, to_utc
from ..core.normalize import split_name
from ..core.settings import EmrSettings
from ..documents import service as documents
from ..imaging import orders
from ..models import Document, Encounter, Patient, User
from ..patients import encounters

__all__ = [
    "SigningStep",
    "STAY_DAYS",
    "STAY_TIMELINE",
    "close_record_demo",
    "seed_record_demo",
    "write_demo_exports",
    "written_at",
    "DEMO_EXPORT_DIR",
]

log = logging.getLogger(__name__)

DEMO_EXPORT_DIR = Path("exports") / "demo"
_INPATIENT_REASON = "Sốt cao, ho đờm, khó thở"
_DEMO_DEVICE_DX = "XQ.1.79001.00031"  # XX.n.YYYYY.Z: X-ray, state budget, facility, serial
_DISCHARGE_DIAGNOSIS = "Viêm phổi thùy dưới phải; tăng huyết áp"
STAY_DAYS = 5  # the papers tell a five-day stay (antibiotics for 5 days, no fever from day 3)
# (day of the stay, facility wall time) of each event; discharge: when the demo runs, on day STAY_DAYS.
STAY_TIMELINE: dict[str, tuple[int, time]] = {
    "admitted": (0, time(8, 30)),
    "admission_note": (0, time(9, 0)),
    "xray_ordered": (0, time(9, 10)),
    "xray_performed": (0, time(9, 30)),
    "xray_report": (0, time(10, 15)),
    "progress_note_1": (2, time(8, 0)),
    "progress_note_2": (4, time(8, 0)),
    "diagnosis": (4, time(15, 0)),
}

SigningStep = tuple[int, Actor]  # (document id, who fills its next signature)


def _actor(user: User) -> Actor:
    return Actor(user.id, user.username, user.role, None)


def _stay_time(first_day: date, event: str) -> datetime:
    """When ``event`` of the stay happened (naive UTC), from its facility wall time."""
    day, wall = STAY_TIMELINE[event]
    return to_utc(datetime.combine(first_day + timedelta(days=day), wall))


def _first_day(enc: Encounter) -> date:
    return to_local(enc.admitted_at).date()


def written_at(doc: Document, when: datetime) -> None:
    """A demo draft written at ``when`` (naive UTC): the paper's day, not the second the demo ran."""
    doc.created_at = when
    for version in doc.versions:
        version.created_at = when


def _paper(
    session: Session,
    steps: list[SigningStep],
    signers: tuple[Actor, ...],
    encounter_id: int,
    form_type: str,
    content: dict[str, Any],
    order_id: int | None = None,
    when: datetime | None = None,
) -> Document:
    """A draft by the first of ``signers`` (written at ``when``), to be signed by each of them in turn."""
    data: dict[str, Any] = {"encounter_id": encounter_id, "form_type": form_type, "content": content}
    if order_id is not None:
        data["order_id"] = order_id
    doc = documents.create_document(session, signers[0], data)
    if when is not None:
        written_at(doc, when)
        session.commit()
    steps.extend((doc.id, signer) for signer in signers)
    return doc


def seed_record_demo(
    session: Session, users: dict[str, User], outpatient: Patient, inpatient: Patient, images: Any = None
) -> list[SigningStep]:
    """Idempotent: a progress note on the outpatient visit, and the inpatient stay, as drafts; returns
    the signatures they need, in order (empty when they exist already). ``images``: where the stay's
    chest X-ray is sent (the image store, or emr.demo.seed.HeadersOnly); none: no X-ray image."""
    from .seed import demo_uid, make_dx_image

    doctor, reader = _actor(users["physician"]), _actor(users["radiologist"])
    steps: list[SigningStep] = []
    visit = session.scalar(
        select(Encounter).where(Encounter.patient_id == outpatient.id, Encounter.kind == "outpatient")
    )
    if (
        visit is not None
        and visit.status == "open"
        and session.scalar(
            select(Document.id).where(Document.encounter_id == visit.id, Document.form_type == "progress_note")
        )
        is None
    ):
        _paper(
            session,
            steps,
            (doctor,),
            visit.id,
            "progress_note",
            {"note": "Sốt 38,5 °C, ho đờm, ran nổ đáy phổi phải; chỉ định CT ngực.", "stage": "Khởi phát"},
            when=visit.admitted_at + timedelta(minutes=5),  # on seeing the patient, before the CT order
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
    first_day = local_today() - timedelta(days=STAY_DAYS)
    enc.admitted_at = enc.inpatient_at = _stay_time(first_day, "admitted")  # days ago, not this minute
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
            "plan": "Nhập khoa Nội tổng hợp, kháng sinh tĩnh mạch, chụp X-quang ngực",
        },
        when=_stay_time(first_day, "admission_note"),
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
    order.ordered_at = order.scheduled_at = _stay_time(first_day, "xray_ordered")
    order.performed_at = _stay_time(first_day, "xray_performed")
    order.study_instance_uid = demo_uid("study", order.accession_number)  # the same study on every run
    order.device_code = _DEMO_DEVICE_DX  # MA_MAY of the X-ray room
    session.commit()
    if images is not None:  # imaged: the report below is read from this radiograph, linked by the caller
        family, given = split_name(inpatient.full_name)
        images.upload(
            make_dx_image(
                patient_id=inpatient.code,
                patient_name=f"{family}^{given}",
                birth_date=inpatient.birth_date.strftime("%Y%m%d"),
                sex=inpatient.sex,
                accession_number=order.accession_number,
                study_instance_uid=order.study_instance_uid,
                acquired=to_local(order.performed_at),
            )
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
        when=_stay_time(first_day, "xray_report"),
    )
    for n, note in enumerate(
        ("Còn sốt 38 °C, ho giảm; tiếp tục kháng sinh.", "Hết sốt 48 giờ, phổi thông khí tốt; cho ra viện."), start=1
    ):
        _paper(session, steps, (doctor,), enc.id, "progress_note", {"note": note, "stage": "Ổn định"},
               when=_stay_time(first_day, f"progress_note_{n}"))  # fmt: skip
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
        when=_stay_time(first_day, "diagnosis"),
    )
    log.info("demo: inpatient stay %s with its papers, to be signed", enc.visit_code)
    return steps


def close_record_demo(session: Session, users: dict[str, User], inpatient: Patient) -> list[SigningStep]:
    """Discharge the inpatient stay (idempotent), then write its discharge paper, which prints the discharge
    time; returns its signatures (the treating physician, then the head of K19: emr.signing.service.slots_for)."""
    doctor, head = _actor(users["physician"]), _actor(users["head"])
    enc = session.scalar(
        select(Encounter).where(Encounter.patient_id == inpatient.id, Encounter.kind == "inpatient")
    )
    steps: list[SigningStep] = []
    if enc is None or enc.status != "open":
        return steps
    encounters.close_encounter(session, doctor, enc.id, _DISCHARGE_DIAGNOSIS)
    _paper(
        session,
        steps,
        (doctor, head),
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
    return steps


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
