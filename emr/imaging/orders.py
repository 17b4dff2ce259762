"""Imaging orders: accession number and Study Instance UID are fixed when the order is placed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access, in_care_clause
from emr.billing.prices import price_on
from emr.catalogues import check_code
from emr.core.clock import local_day_bounds, local_today, to_local, to_utc
from emr.core.exceptions import InvalidState, ValidationFailed
from emr.core.states import CANCELLABLE, OrderStatus, StudyState, exam_progress
from emr.models.lookup import get_or_404, next_number, parse

from ..models import Encounter, ImagingOrder, Patient, Study, User, utcnow
from ..schemas import OrderIn
from .order_visit import visit_for_new_order

__all__ = [
    "DAY_EXAMS_LIMIT",
    "DayExam",
    "SCHEDULE_YEARS_AHEAD",
    "schedule_window",
    "scheduled_utc",
    "check_entry",
    "day_exams",
    "create_order",
    "get_order",
    "list_orders",
    "cancel_order",
    "apply_catalogue_price",
    "order_dict",
    "study_dict",
]


# How far ahead an order may be scheduled: up to the same day next year (Feb 29 → Feb 28).
SCHEDULE_YEARS_AHEAD = 1


def schedule_window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The facility-local days an order typed by a person may be scheduled on: from the start of today
    (an exam already under way this morning) to the end of the same day next year, as naive-UTC
    ``[start, end)``. Outside it a date typed wrong (01/01/1900, 31/12/9999) went to the modality
    worklist (ScheduledProcedureStepStartDate 19000101) and no technician's list of the day showed it."""
    today = local_today(now)
    try:
        last = today.replace(year=today.year + SCHEDULE_YEARS_AHEAD)
    except ValueError:  # 29 February
        last = today.replace(year=today.year + SCHEDULE_YEARS_AHEAD, day=28)
    return local_day_bounds(today)[0], local_day_bounds(last)[1]


def scheduled_utc(value: datetime | None, now: datetime) -> datetime:
    """An order's scheduled time as stored (naive UTC): with an offset as it says, without one the
    facility's wall time (what the form's datetime-local sends, an HL7 DTM without offset); none: now."""
    if value is None:
        return now
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return to_utc(value)


def check_entry(scheduled: datetime, station: str | None, stations: Collection[str], now: datetime) -> None:
    """The scheduling rules of an order from a person or the HIS: the scheduled time (naive UTC, see
    :func:`scheduled_utc`) in :func:`schedule_window`, the station one of the modalities the gateway knows
    by name (when it knows them), so the worklist can offer the exam. :class:`ValidationFailed` with
    ``scheduled_at`` / ``station_ae_title`` (their limits in ``field_params``) otherwise."""
    problems: dict[str, str] = {}
    params: dict[str, dict[str, object]] = {}
    start, end = schedule_window(now)
    if not start <= scheduled < end:
        problems["scheduled_at"] = "orders.error.scheduled_range"
        params["scheduled_at"] = {
            "start": to_local(start).strftime("%H:%M %d/%m/%Y"),
            "end": to_local(end - timedelta(minutes=1)).strftime("%H:%M %d/%m/%Y"),
        }
    if station is not None and stations and station not in stations:
        problems["station_ae_title"] = "orders.error.station_unknown"
        params["station_ae_title"] = {"station": station, "stations": ", ".join(stations)}
    if problems:
        raise ValidationFailed(problems, params=params)


def create_order(
    session: Session,
    actor: Actor,
    data: OrderIn | dict[str, Any],
    *,
    typed: bool = False,
    stations: Collection[str] = (),
) -> ImagingOrder:
    """Place an order. ``typed``: a person or the HIS entered it (the web form, the JSON API, an HL7
    ORM/OMI through emr.hl7.orders), so its scheduled time and station are checked (:func:`check_entry`;
    ``stations``: ``EmrSettings.modality_stations``); the demo keeps the time it carries."""
    data = parse(OrderIn, data)
    patient = get_or_404(session, Patient, data.patient_id, "patient")
    if patient.status != "active":
        raise InvalidState("merged patients are read-only", key="patients.error.merged")
    if data.encounter_id is not None:
        ensure_patient_access(session, actor, patient.id)  # issue 10: only patients in the user's care
        enc = session.get(Encounter, data.encounter_id)
        if enc is None or enc.patient_id != patient.id:
            raise ValidationFailed({"encounter_id": "orders.error.encounter"})
        if enc.status != "open":
            raise ValidationFailed({"encounter_id": "encounters.error.not_open"})
    else:
        enc = visit_for_new_order(session, actor, patient)
        # A new visit in the ordering physician's own department is how care begins (audited by
        # the encounter service); the patient's open visit elsewhere, or none, needs care already.
        ensure_patient_access(session, actor, patient.id)
    department_id = enc.department_id if enc is not None else None
    now = utcnow()
    scheduled = scheduled_utc(data.scheduled_at, now)
    if typed:
        check_entry(scheduled, data.station_ae_title, stations, now)
    if data.procedure_code and check_code(session, "dvkt", data.procedure_code.upper(), local_today(now)) is not None:
        raise ValidationFailed({"procedure_code": "catalogues.entry.service"})  # the DVKT list in force (issue 15 §4)
    # The price valid today (Vietnam date) is copied onto the order: later price changes do not touch it.
    price = price_on(session, data.procedure_code.upper(), local_today(now)) if data.procedure_code else None
    order = ImagingOrder(
        patient_id=patient.id,
        encounter_id=enc.id if enc is not None else None,
        # The date part is the facility's day (a CT console and the paper slip show local dates).
        accession_number=f"{to_local(now):%y%m%d}{next_number(session, 'accession'):06d}",
        study_instance_uid=generate_uid(prefix=None),
        modality=data.modality,
        procedure_code=data.procedure_code,
        procedure_name=data.procedure_name,
        body_part=data.body_part,
        urgency=data.urgency,
        clinical_info=data.clinical_info,
        station_ae_title=data.station_ae_title,
        department_id=department_id,
        ordered_by=actor.user_id or 0,
        ordered_at=now,
        scheduled_at=scheduled,
        price_id=price.id if price else None,
        price_hospital=price.price_hospital if price else None,
        price_insurance=price.price_insurance if price else None,
        price_unit=price.unit if price else None,
    )
    session.add(order)
    session.flush()
    details: dict[str, Any] = {"accession": order.accession_number, "modality": order.modality}
    if price is not None:
        details["price"] = {
            "id": price.id,
            "hospital": str(price.price_hospital),
            "insurance": None if price.price_insurance is None else str(price.price_insurance),
        }
    audit.record(
        session,
        actor,
        "order.create",
        patient_id=patient.id,
        object_type="order",
        object_id=order.id,
        details=details,
    )
    session.commit()
    return order


def get_order(session: Session, actor: Actor, order_id: int) -> ImagingOrder:
    order = get_or_404(session, ImagingOrder, order_id, "order")
    ensure_patient_access(session, actor, order.patient_id)  # issue 10: only patients in the user's care
    audit.record(session, actor, "order.view", patient_id=order.patient_id, object_type="order", object_id=order.id)
    session.commit()
    return order


def list_orders(session: Session, patient_id: int) -> list[ImagingOrder]:
    return list(
        session.scalars(
            select(ImagingOrder)
            .where(ImagingOrder.patient_id == patient_id)
            .order_by(ImagingOrder.ordered_at.desc(), ImagingOrder.id.desc())
        )
    )


@dataclass(frozen=True)
class DayExam:
    """One line of the technician's list of the day: an exam to perform, being performed or done."""

    order_id: int
    accession_number: str
    modality: str
    procedure_name: str
    body_part: str | None
    urgency: str
    status: str
    progress: str  # emr.core.states.exam_progress: waiting, in_progress, stopped, done
    scheduled_at: datetime
    station_ae_title: str | None
    patient_id: int
    patient_code: str
    patient_name: str
    birth_date: date
    birth_year_only: bool
    sex: str
    study_ids: tuple[int, ...]  # linked studies (the pages the technician checks the images on)


DAY_EXAMS_LIMIT = 300


def day_exams(
    session: Session, actor: Actor, day: date | None = None, *, modality: str = "", limit: int = DAY_EXAMS_LIMIT
) -> list[DayExam]:
    """The imaging exams scheduled on ``day`` (the facility's day, today by default), not cancelled,
    earliest first: what the technicians of the imaging department perform that day.

    Scheduled from yesterday to tomorrow puts the patient in a technician's care
    (emr.access.permissions), so every line opens; the care scope is in the query, so no
    other role ever sees a patient it may not open. The listing is audited like the other
    lists of patients (``order.worklist``).
    """
    day = day or local_today()
    start, end = local_day_bounds(day)
    stmt = (
        select(ImagingOrder, Patient)
        .join(Patient, Patient.id == ImagingOrder.patient_id)
        .where(  # the worklist index (status, scheduled_at)
            ImagingOrder.status.in_([s.value for s in OrderStatus if s != OrderStatus.CANCELLED]),
            ImagingOrder.scheduled_at >= start,
            ImagingOrder.scheduled_at < end,
        )
    )
    if modality:
        stmt = stmt.where(ImagingOrder.modality == modality)
    # The care scope is part of the query, so the LIMIT never cuts a line the user may open
    # to make room for ones they may not (emr.access.care.in_care_clause).
    scope = in_care_clause(session, actor, ImagingOrder.patient_id)
    if scope is not None:
        stmt = stmt.where(scope)
    rows: list[tuple[ImagingOrder, Patient]] = [
        (o, p) for o, p in session.execute(stmt.order_by(ImagingOrder.scheduled_at, ImagingOrder.id).limit(limit))
    ]
    studies: dict[int, list[int]] = {}
    if rows:
        for study_id, order_id in session.execute(
            select(Study.id, Study.order_id)
            .where(Study.order_id.in_([o.id for o, _ in rows]), Study.state == StudyState.LINKED)
            .order_by(Study.id)
        ):
            studies.setdefault(order_id or 0, []).append(study_id)
    exams = [
        DayExam(
            order_id=o.id, accession_number=o.accession_number, modality=o.modality,
            procedure_name=o.procedure_name, body_part=o.body_part, urgency=o.urgency, status=o.status,
            progress=exam_progress(o.status), scheduled_at=o.scheduled_at, station_ae_title=o.station_ae_title,
            patient_id=p.id, patient_code=p.code, patient_name=p.full_name, birth_date=p.birth_date,
            birth_year_only=bool(p.birth_year_only), sex=p.sex, study_ids=tuple(studies.get(o.id, ())),
        )
        for o, p in rows
    ]
    audit.record(
        session,
        actor,
        "order.worklist",
        object_type="order",
        details={"list": "day_exams", "day": day.isoformat(), "modality": modality, "results": len(exams)},
    )
    session.commit()
    return exams


def cancel_order(session: Session, actor: Actor, order_id: int, reason: str) -> ImagingOrder:
    order = get_or_404(session, ImagingOrder, order_id, "order")
    ensure_patient_access(session, actor, order.patient_id)  # issue 10: only patients in the user's care
    if not reason.strip():
        raise ValidationFailed({"reason": "errors.field_required"})
    if order.status not in CANCELLABLE:
        raise InvalidState("only orders without images can be cancelled", key="orders.error.cannot_cancel")
    order.status = OrderStatus.CANCELLED
    order.cancel_reason = reason.strip()
    audit.record(
        session,
        actor,
        "order.cancel",
        patient_id=order.patient_id,
        object_type="order",
        object_id=order.id,
        details={"reason": reason},
    )
    session.commit()
    return order


def apply_catalogue_price(session: Session, actor: Actor, order_id: int) -> ImagingOrder:
    """Give an order placed while its code was not in the price list the price valid on the day
    it was ordered (Vietnam date); audited. A price already on an order is never changed."""
    order = get_or_404(session, ImagingOrder, order_id, "order")
    if order.status == OrderStatus.CANCELLED:
        raise InvalidState("cancelled orders are not billed", key="orders.error.cancelled")
    if order.price_hospital is not None:
        raise InvalidState(f"order {order.id} already has its price", key="orders.error.already_priced")
    price = (
        price_on(session, order.procedure_code.upper(), local_today(order.ordered_at)) if order.procedure_code else None
    )
    if price is None:
        raise InvalidState(f"no price for order {order.id} on its date", key="orders.error.no_catalogue_price")
    order.price_id = price.id
    order.price_hospital = price.price_hospital
    order.price_insurance = price.price_insurance
    order.price_unit = price.unit
    audit.record(
        session,
        actor,
        "order.price",
        patient_id=order.patient_id,
        object_type="order",
        object_id=order.id,
        details={
            "price": {
                "id": price.id,
                "hospital": str(price.price_hospital),
                "insurance": None if price.price_insurance is None else str(price.price_insurance),
            }
        },
    )
    session.commit()
    return order


def study_dict(study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "orthanc_id": study.orthanc_id,
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number,
        "dicom_patient_id": study.dicom_patient_id,
        "dicom_patient_name": study.dicom_patient_name,
        "study_date": study.study_date,
        "modalities": study.modalities,
        "description": study.description,
        "order_id": study.order_id,
        "patient_id": study.patient_id,
        "state": study.state,
        "link_method": study.link_method,
        "viewer_url": f"/viewer/?study={study.study_instance_uid}",
    }


def order_dict(session: Session, order: ImagingOrder) -> dict[str, Any]:
    by = session.get(User, order.ordered_by)
    studies = session.scalars(select(Study).where(Study.order_id == order.id).order_by(Study.id))
    return {
        "id": order.id,
        "patient_id": order.patient_id,
        "encounter_id": order.encounter_id,
        "accession_number": order.accession_number,
        "study_instance_uid": order.study_instance_uid,
        "modality": order.modality,
        "procedure_name": order.procedure_name,
        "procedure_code": order.procedure_code,
        "body_part": order.body_part,
        "urgency": order.urgency,
        "clinical_info": order.clinical_info,
        "status": order.status,
        "station_ae_title": order.station_ae_title,
        "ordered_at": order.ordered_at,
        "scheduled_at": order.scheduled_at,
        "ordered_by": by.full_name if by else "",
        "price_hospital": order.price_hospital,
        "price_insurance": order.price_insurance,
        "price_unit": order.price_unit,
        "studies": [study_dict(s) for s in studies],
    }
