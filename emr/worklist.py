"""Data for the gateway: the modality worklist, identity coercion and MPPS.

The gateway (pacs_gateway) owns the DICOM side; these providers answer from
the EMR's orders. Each provider builds one engine when it is created and a
short-lived session per call, so gateway threads can call it concurrently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
from .audit import Actor
from .db import make_engine, make_session_factory
from .models import LOCAL_OFFSET, ImagingOrder, Patient, User
from .normalize import fold
from .settings import EmrSettings

__all__ = [
    "worklist_provider",
    "identity_provider",
    "order_identity",
    "mpps_provider",
    "apply_mpps",
    "query_worklist",
    "dicom_name",
]

log = logging.getLogger(__name__)

_DATE = re.compile(r"\d{8}")
_OPEN = ("scheduled", "in_progress")


def dicom_name(family: str, given: str) -> str:
    return f"{family}^{given}" if given else family


def _date_range(value: str) -> tuple[datetime | None, datetime | None] | None:
    """DICOM DA matching: 'YYYYMMDD', 'YYYYMMDD-', '-YYYYMMDD', 'A-B'; None = unparseable."""
    value = value.strip()
    if not value:
        return None, None
    lo_s, sep, hi_s = value.partition("-")
    if not sep:
        hi_s = lo_s
    try:
        lo = datetime.strptime(lo_s, "%Y%m%d") if lo_s else None
        hi = datetime.strptime(hi_s, "%Y%m%d") + timedelta(days=1) if hi_s else None
    except ValueError:
        return None
    if (lo_s and not _DATE.fullmatch(lo_s)) or (hi_s and not _DATE.fullmatch(hi_s)):
        return None
    return lo, hi


def _wildcard(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE) is not None


def query_worklist(session: Session, query: dict[str, str], limit: int = 500) -> list[dict[str, object]]:
    stmt = (
        select(ImagingOrder, Patient)
        .join(Patient, Patient.id == ImagingOrder.patient_id)
        .where(ImagingOrder.status.in_(_OPEN))
    )
    q = {k: (v or "").strip() for k, v in query.items()}
    if q.get("Modality") and q["Modality"] != "*":
        stmt = stmt.where(ImagingOrder.modality == q["Modality"].upper())
    aet = q.get("ScheduledStationAETitle")
    if aet and aet != "*":
        # Orders without a station are offered to every station.
        stmt = stmt.where((ImagingOrder.station_ae_title == aet) | ImagingOrder.station_ae_title.is_(None))
    if q.get("ScheduledProcedureStepStartDate"):
        rng = _date_range(q["ScheduledProcedureStepStartDate"])
        if rng is None:
            return []
        lo, hi = rng
        if lo is not None:
            stmt = stmt.where(ImagingOrder.scheduled_at >= lo - LOCAL_OFFSET)
        if hi is not None:
            stmt = stmt.where(ImagingOrder.scheduled_at < hi - LOCAL_OFFSET)
    for key, column in (("AccessionNumber", ImagingOrder.accession_number), ("PatientID", Patient.code)):
        value = q.get(key)
        if value and "*" not in value and "?" not in value:
            stmt = stmt.where(column == value)
    rows = session.execute(stmt.order_by(ImagingOrder.scheduled_at, ImagingOrder.id).limit(limit)).all()
    items: list[dict[str, object]] = []
    name_pattern = q.get("PatientName", "")
    for order, patient in rows:
        name = dicom_name(patient.family_name, patient.given_name)
        if name_pattern and name_pattern != "*":
            if not (_wildcard(name_pattern, name) or _wildcard(fold(name_pattern), fold(name))):
                continue
        for key in ("AccessionNumber", "PatientID"):
            value = q.get(key, "")
            if value and ("*" in value or "?" in value):
                actual = order.accession_number if key == "AccessionNumber" else patient.code
                if not _wildcard(value, actual):
                    break
        else:
            ordering = session.get(User, order.ordered_by)
            local = order.scheduled_at + LOCAL_OFFSET
            physician = dicom_name(*_split(ordering.full_name)) if ordering else ""
            items.append(
                {
                    "AccessionNumber": order.accession_number,
                    "StudyInstanceUID": order.study_instance_uid,
                    "PatientID": patient.code,
                    "PatientName": name,
                    "PatientBirthDate": patient.birth_date.strftime("%Y%m%d"),
                    "PatientSex": patient.sex,
                    "RequestedProcedureID": order.accession_number,
                    "RequestedProcedureDescription": order.procedure_name[:64],
                    "ReferringPhysicianName": physician,
                    "RequestingPhysician": physician,
                    "Modality": order.modality,
                    "ScheduledStationAETitle": order.station_ae_title or "",
                    "ScheduledProcedureStepStartDate": local.strftime("%Y%m%d"),
                    "ScheduledProcedureStepStartTime": local.strftime("%H%M%S"),
                    "ScheduledProcedureStepID": f"SPS{order.id}",
                    "ScheduledProcedureStepDescription": (
                        order.procedure_name + (f" - {order.body_part}" if order.body_part else "")
                    )[:64],
                    "ScheduledPerformingPhysicianName": "",
                }
            )
    return items


def _split(full_name: str) -> tuple[str, str]:
    from .normalize import split_name

    return split_name(full_name)


def worklist_provider(settings: EmrSettings) -> Callable[[dict[str, str]], list[dict[str, object]]]:
    """Callable for the gateway's C-FIND MWL SCP: query keys → flat worklist items."""
    factory = make_session_factory(make_engine(settings.database_url))

    def provide(query: dict[str, str]) -> list[dict[str, object]]:
        with factory() as session:
            return query_worklist(session, query)

    return provide


def identity_provider(settings: EmrSettings) -> Callable[[str, str], dict[str, str] | None]:
    """Callable for the gateway's identity coercion: (accession, study UID) → the order's patient tags."""
    factory = make_session_factory(make_engine(settings.database_url))

    def identity(accession_number: str, study_instance_uid: str) -> dict[str, str] | None:
        with factory() as session:
            order = None
            if accession_number:
                order = session.scalar(select(ImagingOrder).where(ImagingOrder.accession_number == accession_number))
            if order is None and study_instance_uid:
                order = session.scalar(
                    select(ImagingOrder).where(ImagingOrder.study_instance_uid == study_instance_uid)
                )
            return order_identity(session, order) if order is not None else None

    return identity


def order_identity(session: Session, order: ImagingOrder) -> dict[str, str] | None:
    """The patient tags the PACS copy of an order's study carries: the EMR's, not the modality's."""
    patient = session.get(Patient, order.patient_id)
    if patient is None:
        return None
    return {
        "PatientID": patient.code,
        "PatientName": dicom_name(patient.family_name, patient.given_name),
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d"),
        "PatientSex": patient.sex,
    }


# MPPS status → (order statuses it may move from, the status it moves to).
# Orders already further on (images linked, reported, cancelled) keep their
# status: images and reports are stronger evidence than the modality's word.
_MPPS_MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "IN PROGRESS": (("scheduled", "discontinued"), "in_progress"),
    "COMPLETED": (("scheduled", "in_progress", "discontinued"), "completed"),
    "DISCONTINUED": (("scheduled", "in_progress"), "discontinued"),
}


def _local_to_utc(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) - LOCAL_OFFSET if value else None
    except ValueError:
        return None


def apply_mpps(session: Session, event: dict[str, Any]) -> list[ImagingOrder]:
    """Move the orders an MPPS event performs along; audit each; return them (the caller commits).

    Orders are found by accession number, else by study instance UID. An
    event matching no order is logged and ignored: retrying cannot help, and
    the images will still reach the reconciliation queue.
    """
    status = str(event.get("status") or "")
    move = _MPPS_MOVES.get(status)
    if move is None:
        log.warning("mpps: ignoring unknown status %r for %s", status, event.get("sop_instance_uid"))
        return []
    station = str(event.get("station_ae") or "") or None
    actor = Actor(None, station, "modality", None) if station else audit.SYSTEM
    orders: dict[int, ImagingOrder] = {}
    for accession in event.get("accession_numbers") or []:
        order = session.scalar(select(ImagingOrder).where(ImagingOrder.accession_number == str(accession)))
        if order is not None:
            orders[order.id] = order
    if not orders:
        for uid in event.get("study_instance_uids") or []:
            order = session.scalar(select(ImagingOrder).where(ImagingOrder.study_instance_uid == str(uid)))
            if order is not None:
                orders[order.id] = order
    if not orders:
        log.warning(
            "mpps: %s %s matches no order (accession %s, study %s)",
            event.get("sop_instance_uid"),
            status,
            event.get("accession_numbers"),
            event.get("study_instance_uids"),
        )
        return []
    sources, target = move
    for order in orders.values():
        before = order.status
        if before in sources:
            order.status = target
        started = _local_to_utc(event.get("start"))
        if started is not None and order.performed_at is None:
            order.performed_at = started
        audit.record(
            session,
            actor,
            "order.mpps",
            patient_id=order.patient_id,
            object_type="order",
            object_id=order.id,
            details={
                "mpps": str(event.get("sop_instance_uid") or ""),
                "mpps_status": status,
                "from": before,
                "to": order.status,
                **(
                    {"performing_physician": event["performing_physician"]} if event.get("performing_physician") else {}
                ),
            },
        )
    return list(orders.values())


def mpps_provider(settings: EmrSettings) -> Callable[[dict[str, Any]], None]:
    """Callable for the gateway's MPPS SCP: a performed-step event → order status + audit row.

    Raises on database failure; the gateway keeps the event and retries.
    """
    factory = make_session_factory(make_engine(settings.database_url))

    def mpps(event: dict[str, Any]) -> None:
        with factory() as session:
            apply_mpps(session, event)
            session.commit()

    return mpps
