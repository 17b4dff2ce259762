"""What this site sends to others: a study (with its signed report), a tele-radiology request,
a signed report going back. Each is a :class:`NetworkTransfer` row (the chart's status line:
waiting, sent, failed with the reason) and one durable outbox message that delivers it
(``emr.outbox``: retried with back-off, survives restarts, never sent twice).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access
from emr.core.exceptions import InvalidState, ValidationFailed
from emr.models import (
    URGENCIES,
    Document,
    ImagingOrder,
    NetworkReceived,
    NetworkSite,
    NetworkTransfer,
    Study,
)
from emr.models.lookup import get_or_404

__all__ = [
    "OUTBOX_KIND",
    "send_study",
    "request_read",
    "report_signed",
    "transfers_for_patient",
    "transfers_for_order",
]

OUTBOX_KIND = "network.transfer"


def _enqueue(session: Session, transfer: NetworkTransfer, site: NetworkSite) -> None:
    from emr.outbox import enqueue

    enqueue(
        session,
        OUTBOX_KIND,
        f"transfer:{transfer.id}",
        {"transfer_id": transfer.id},
        target=site.name,
        patient_id=transfer.patient_id,
        subject=f"{transfer.kind} {transfer.study_instance_uid}",
    )


def _site(session: Session, site_id: int) -> NetworkSite:
    site = get_or_404(session, NetworkSite, site_id, "network site")
    if not site.active:
        raise InvalidState("site disabled", key="network.error.site_disabled")
    return site


def _order_with_images(session: Session, actor: Actor, order_id: int) -> ImagingOrder:
    order = get_or_404(session, ImagingOrder, order_id, "order")
    ensure_patient_access(session, actor, order.patient_id)
    linked = session.scalar(select(Study.id).where(Study.order_id == order.id, Study.state == "linked").limit(1))
    if linked is None:
        raise InvalidState("the order has no images yet", key="network.error.no_images")
    return order


def _create(session: Session, actor: Actor, site: NetworkSite, order: ImagingOrder, kind: str,
            **extra: Any) -> NetworkTransfer:
    transfer = NetworkTransfer(
        kind=kind,
        site_id=site.id,
        patient_id=order.patient_id,
        order_id=order.id,
        study_instance_uid=order.study_instance_uid,
        created_by=actor.user_id,
        **extra,
    )
    session.add(transfer)
    session.flush()
    _enqueue(session, transfer, site)
    audit.record(
        session,
        actor,
        f"network.{kind}.queue",
        patient_id=order.patient_id,
        object_type="network_transfer",
        object_id=transfer.id,
        details={"site": site.name, "order_id": order.id, "study": order.study_instance_uid, **extra},
    )
    session.commit()
    return transfer


def send_study(session: Session, actor: Actor, order_id: int, site_id: int) -> NetworkTransfer:
    """Queue the order's study (images and signed report) for another facility's archive."""
    order = _order_with_images(session, actor, order_id)
    return _create(session, actor, _site(session, site_id), order, "study")


def request_read(
    session: Session, actor: Actor, order_id: int, site_id: int, question: str, urgency: str
) -> NetworkTransfer:
    """Ask another facility's radiologists to read this study (tele-radiology)."""
    question = (question or "").strip()
    errors = {}
    if not 3 <= len(question) <= 2000:
        errors["question"] = "network.error.question"
    if urgency not in URGENCIES:
        errors["urgency"] = "network.error.urgency"
    if errors:
        raise ValidationFailed(errors)
    order = _order_with_images(session, actor, order_id)
    site = _site(session, site_id)
    open_request = session.scalar(
        select(NetworkTransfer.id).where(
            NetworkTransfer.order_id == order.id,
            NetworkTransfer.kind == "read_request",
            NetworkTransfer.site_id == site.id,
            NetworkTransfer.report_received_at.is_(None),
        )
    )
    if open_request is not None:
        raise InvalidState("a read request to this site is open", key="network.error.request_open")
    return _create(session, actor, site, order, "read_request", question=question, urgency=urgency)


def report_signed(session: Session, actor: Actor, document_id: int) -> NetworkTransfer | None:
    """A radiology report was signed: if its order answers another site's read request, send it back.

    Called after every signature; only a complete signature stored in the PACS goes, once per
    signed version (the outbox key), so signing again after an amendment sends the new version.
    """
    from emr.signing.service import artifact_for

    doc = session.get(Document, document_id)
    if doc is None or doc.order_id is None or doc.form_type != "radiology_report":
        return None
    request = session.scalar(
        select(NetworkReceived).where(NetworkReceived.kind == "read_request", NetworkReceived.order_id == doc.order_id)
    )
    if request is None:
        return None
    version = next((v for v in doc.versions if v.number == doc.current_version), None)
    artifact = artifact_for(session, version.id) if version else None
    if artifact is None or not artifact.complete or not artifact.pacs_instance_id:
        return None
    ref = f"{request.remote_ref}:{artifact.id}"
    existing = session.scalar(
        select(NetworkTransfer).where(NetworkTransfer.kind == "report", NetworkTransfer.remote_ref == ref)
    )
    if existing is not None:
        return existing
    order = session.get(ImagingOrder, doc.order_id)
    assert order is not None
    site = session.get(NetworkSite, request.site_id)
    assert site is not None
    return _create(session, actor, site, order, "report", reply_to=request.remote_ref, remote_ref=ref)


def transfers_for_patient(session: Session, patient_id: int) -> list[NetworkTransfer]:
    return list(
        session.scalars(
            select(NetworkTransfer)
            .where(NetworkTransfer.patient_id == patient_id)
            .order_by(NetworkTransfer.created_at.desc(), NetworkTransfer.id.desc())
            .limit(100)
        )
    )


def transfers_for_order(session: Session, order_id: int) -> list[NetworkTransfer]:
    return list(
        session.scalars(
            select(NetworkTransfer).where(NetworkTransfer.order_id == order_id).order_by(NetworkTransfer.id)
        )
    )
