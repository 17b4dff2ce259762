"""MPPS for the gateway: a modality's performed procedure step moves the order's status along.

Each provider builds one engine when it is created and a short-lived session
per call, so gateway threads can call it concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import to_utc, use_timezone
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.models import ImagingOrder

__all__ = ["apply_mpps", "mpps_provider"]

log = logging.getLogger(__name__)


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
        return to_utc(datetime.fromisoformat(str(value))) if value else None
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
        log.warning("mpps: %s %s matches no order (accession %s, study %s)", event.get("sop_instance_uid"), status,
                    event.get("accession_numbers"), event.get("study_instance_uids"))
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
                **({"performing_physician": event["performing_physician"]}
                   if event.get("performing_physician") else {}),
            },
        )
    return list(orders.values())


def mpps_provider(settings: EmrSettings) -> Callable[[dict[str, Any]], None]:
    """Callable for the gateway's MPPS SCP: a performed-step event → order status + audit row.

    Raises on database failure; the gateway keeps the event and retries.
    """
    use_timezone(settings.timezone)
    factory = make_session_factory(make_engine(settings.database_url))

    def mpps(event: dict[str, Any]) -> None:
        with factory() as session:
            apply_mpps(session, event)
            session.commit()

    return mpps
