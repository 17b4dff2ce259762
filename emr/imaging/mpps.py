"""MPPS for the gateway: a modality's performed procedure step moves the order's status along.

Each provider builds one engine when it is created and a short-lived session
per call, so gateway threads can call it concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import to_utc, use_timezone
from emr.core.settings import EmrSettings
from emr.core.states import MPPS_STATUSES, after_mpps
from emr.db import make_engine, make_session_factory
from emr.imaging.order_lookup import find_orders
from emr.models import ImagingOrder

__all__ = ["apply_mpps", "mpps_provider"]

log = logging.getLogger(__name__)


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
    if status not in MPPS_STATUSES:
        log.warning("mpps: ignoring unknown status %r for %s", status, event.get("sop_instance_uid"))
        return []
    station = str(event.get("station_ae") or "") or None
    actor = Actor(None, station, "modality", None) if station else audit.SYSTEM
    orders, _ = find_orders(
        session, [str(a) for a in event.get("accession_numbers") or []],
        [str(u) for u in event.get("study_instance_uids") or []],
    )
    if not orders:
        log.warning("mpps: %s %s matches no order (accession %s, study %s)", event.get("sop_instance_uid"), status,
                    event.get("accession_numbers"), event.get("study_instance_uids"))
        return []
    for order in orders:
        before = order.status
        order.status = after_mpps(before, status)
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
    return orders


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
