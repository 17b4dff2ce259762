"""Data for the gateway: the modality worklist (C-FIND MWL) answered from the EMR's orders.

The gateway (pacs_gateway) owns the DICOM side; these providers answer from
the EMR's orders. Each provider builds one engine when it is created and a
short-lived session per call, so gateway threads can call it concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import to_local, to_utc, use_timezone
from emr.core.dicom_match import date_range, has_wildcard, wildcard_match
from emr.core.normalize import fold
from emr.core.settings import EmrSettings
from emr.core.states import ON_WORKLIST
from emr.db import make_engine, make_session_factory
from emr.models import ImagingOrder, Patient, User

__all__ = ["worklist_provider", "query_worklist", "dicom_name"]

log = logging.getLogger(__name__)



def dicom_name(family: str, given: str) -> str:
    return f"{family}^{given}" if given else family


def query_worklist(session: Session, query: dict[str, str], limit: int = 500) -> list[dict[str, object]]:
    stmt = (
        select(ImagingOrder, Patient)
        .join(Patient, Patient.id == ImagingOrder.patient_id)
        .where(ImagingOrder.status.in_(ON_WORKLIST))
    )
    q = {k: (v or "").strip() for k, v in query.items()}
    if q.get("Modality") and q["Modality"] != "*":
        stmt = stmt.where(ImagingOrder.modality == q["Modality"].upper())
    aet = q.get("ScheduledStationAETitle")
    if aet and aet != "*":
        # Orders without a station are offered to every station.
        stmt = stmt.where((ImagingOrder.station_ae_title == aet) | ImagingOrder.station_ae_title.is_(None))
    if q.get("ScheduledProcedureStepStartDate"):
        rng = date_range(q["ScheduledProcedureStepStartDate"])
        if rng is None:
            return []
        lo, hi = rng
        if lo is not None:
            stmt = stmt.where(ImagingOrder.scheduled_at >= to_utc(lo))
        if hi is not None:
            stmt = stmt.where(ImagingOrder.scheduled_at < to_utc(hi))
    for key, column in (("AccessionNumber", ImagingOrder.accession_number), ("PatientID", Patient.code)):
        value = q.get(key)
        if value and not has_wildcard(value):
            stmt = stmt.where(column == value)
    rows = session.execute(stmt.order_by(ImagingOrder.scheduled_at, ImagingOrder.id).limit(limit)).all()
    items: list[dict[str, object]] = []
    name_pattern = q.get("PatientName", "")
    for order, patient in rows:
        name = dicom_name(patient.family_name, patient.given_name)
        if name_pattern and name_pattern != "*":
            if not (wildcard_match(name_pattern, name) or wildcard_match(fold(name_pattern), fold(name))):
                continue
        for key in ("AccessionNumber", "PatientID"):
            value = q.get(key, "")
            if value and has_wildcard(value):
                actual = order.accession_number if key == "AccessionNumber" else patient.code
                if not wildcard_match(value, actual):
                    break
        else:
            ordering = session.get(User, order.ordered_by)
            local = to_local(order.scheduled_at)
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
    from emr.core.normalize import split_name

    return split_name(full_name)


def worklist_provider(settings: EmrSettings) -> Callable[[dict[str, str]], list[dict[str, object]]]:
    """Callable for the gateway's C-FIND MWL SCP: query keys → flat worklist items."""
    use_timezone(settings.timezone)
    factory = make_session_factory(make_engine(settings.database_url))

    def provide(query: dict[str, str]) -> list[dict[str, object]]:
        with factory() as session:
            return query_worklist(session, query)

    return provide
