"""Delivering a transfer (run by the outbox worker): HTTP to the other EMR, C-STORE to its gateway
or STOW-RS to its DICOMweb archive (:mod:`.stow`, when the site has no DICOM port or chose it).

The EMR does not speak DICOM itself: ``filmless.wiring`` hands it a
:data:`DicomSender` (``pacs_gateway.send_instances`` bound to this site's AE
title) and the Orthanc store. Every step is safe to repeat: the other EMR
keys what it receives by (site, our transfer id) and answers the same again,
and Orthanc keeps a re-sent SOP instance once. So a failure anywhere simply
raises, the outbox retries the whole delivery later, and nothing is
duplicated.

Before sending, each instance's AccessionNumber is set to the receiver's
(the accession its read request order got) or emptied: the receiving gateway
matches images to its own orders by accession first (IHE SWF), and our
accession numbers mean nothing there — they could even equal one of theirs.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom import dcmread
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import SYSTEM
from emr.models import ImagingOrder, NetworkSite, NetworkTransfer, Patient, User, utcnow

from .client import SiteCallFailed, post_json
from .sites import uses_stow
from .stow import stow_instances

__all__ = ["DicomSender", "Transport", "TransferFailed", "deliver", "patient_payload", "register_outbox_handler"]


class DicomSender(Protocol):
    def __call__(
        self, instances: Iterable[Callable[[], bytes]], *, called_aet: str, host: str, port: int,
        certificate_pem: str | None,
    ) -> tuple[int, list[tuple[str, str]]]: ...


@dataclass
class Transport:
    store: Any
    send_dicom: DicomSender


class TransferFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def patient_payload(patient: Patient) -> dict[str, Any]:
    return {
        "cccd": patient.cccd,
        "full_name": patient.full_name,
        "birth_date": patient.birth_date.isoformat(),
        "sex": patient.sex,
    }


def _instance_ids(store: Any, study_uid: str, *, with_reports: bool) -> list[str]:
    found = store.find_studies(study_instance_uid=study_uid, limit=10)
    ids: list[str] = []
    for study in found:
        for series in store.study_series(study.orthanc_id):
            modality = str((series.get("MainDicomTags") or {}).get("Modality", ""))
            if modality == "DOC" and not with_reports:
                continue
            ids.extend(str(i) for i in series.get("Instances", []))
    return ids


def _loader(store: Any, instance_id: str, accession: str) -> Callable[[], bytes]:
    def load() -> bytes:
        ds = dcmread(io.BytesIO(store.instance_file(instance_id)))
        ds.AccessionNumber = accession
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    return load


def _send_images(transport: Transport, site: NetworkSite, study_uid: str, accession: str,
                 *, with_reports: bool) -> int:
    ids = _instance_ids(transport.store, study_uid, with_reports=with_reports)
    if not ids:
        raise TransferFailed(f"study {study_uid} is not in the archive", permanent=True)
    loaders = [_loader(transport.store, i, accession) for i in ids]
    if uses_stow(site):
        sent, refused = stow_instances(site, loaders)
    else:
        sent, refused = transport.send_dicom(
            loaders, called_aet=site.ae_title, host=site.host, port=site.port, certificate_pem=site.certificate_pem,
        )
    if refused:
        uid, status = refused[0]
        how = " (STOW-RS)" if uses_stow(site) else ""
        raise TransferFailed(f"{site.name} refused {len(refused)} instance(s){how}, e.g. {uid} ({status})",
                             permanent=True)
    return sent


def _requester(session: Session, transfer: NetworkTransfer) -> str:
    user = session.get(User, transfer.created_by) if transfer.created_by else None
    return user.full_name if user else ""


def _body(session: Session, transfer: NetworkTransfer) -> dict[str, Any]:
    order = session.get(ImagingOrder, transfer.order_id) if transfer.order_id else None
    patient = session.get(Patient, transfer.patient_id) if transfer.patient_id else None
    return {
        "ref": str(transfer.id),
        "study_instance_uid": transfer.study_instance_uid,
        "patient": patient_payload(patient) if patient else None,
        "modality": order.modality if order else None,
        "procedure_name": order.procedure_name if order else None,
        "requested_by": _requester(session, transfer),
    }


def _deliver_report(session: Session, transfer: NetworkTransfer, site: NetworkSite, transport: Transport) -> int:
    from emr.reading.service import latest_report
    from emr.signing.service import artifact_for

    doc = latest_report(session, transfer.order_id) if transfer.order_id else None
    version = next((v for v in doc.versions if v.number == doc.current_version), None) if doc else None
    artifact = artifact_for(session, version.id) if version else None
    if artifact is None or not artifact.pacs_instance_id:
        raise TransferFailed("the signed report is no longer in the archive", permanent=True)
    dicom = transport.store.instance_file(artifact.pacs_instance_id)
    signer = session.get(User, doc.created_by) if doc else None
    post_json(site, "/network/api/v1/reports", {
        "ref": transfer.reply_to,
        "study_instance_uid": transfer.study_instance_uid,
        "dicom": base64.b64encode(dicom).decode("ascii"),
        "sha256": hashlib.sha256(dicom).hexdigest(),
        "reader": signer.full_name if signer else "",
    })
    return 1


def deliver(session: Session, transfer_id: int, transport: Transport) -> None:
    """Deliver one transfer; on failure the row says why and :class:`TransferFailed` is raised."""
    transfer = session.get(NetworkTransfer, transfer_id)
    if transfer is None or transfer.status == "sent":
        return
    site = session.get(NetworkSite, transfer.site_id)
    assert site is not None
    transfer.attempts += 1
    try:
        if not site.active:
            raise TransferFailed(f"site {site.name} is disabled", permanent=True)
        if transfer.kind == "report":
            sent = _deliver_report(session, transfer, site, transport)
        elif transfer.kind == "read_request":
            body = _body(session, transfer) | {"question": transfer.question, "urgency": transfer.urgency}
            answer = post_json(site, "/network/api/v1/read-requests", body)
            accession = str(answer.get("accession") or "")[:16]
            if not accession:
                raise TransferFailed(f"{site.name} did not give the request an accession number")
            transfer.remote_ref = accession
            sent = _send_images(transport, site, transfer.study_instance_uid, accession, with_reports=False)
        else:
            if site.emr_url:
                post_json(site, "/network/api/v1/studies", _body(session, transfer))
            sent = _send_images(transport, site, transfer.study_instance_uid, "", with_reports=True)
    except (TransferFailed, SiteCallFailed) as exc:
        _failed(session, transfer, site, exc.reason)
        raise TransferFailed(exc.reason, permanent=exc.permanent) from exc
    except Exception as exc:  # noqa: BLE001 - the DICOM sender, Orthanc: the reason goes on the chart
        reason = f"{type(exc).__name__}: {str(getattr(exc, 'reason', exc))[:300]}"
        _failed(session, transfer, site, reason)
        raise TransferFailed(reason, permanent=bool(getattr(exc, "permanent", False))) from exc
    transfer.status = "sent"
    transfer.error = None
    transfer.sent_at = utcnow()
    transfer.instances_sent = sent
    audit.record(session, SYSTEM, f"network.{transfer.kind}.sent", patient_id=transfer.patient_id,
                 object_type="network_transfer", object_id=transfer.id,
                 details={"site": site.name, "instances": sent, "attempt": transfer.attempts})
    session.commit()


def _failed(session: Session, transfer: NetworkTransfer, site: NetworkSite, reason: str) -> None:
    transfer_id = transfer.id
    session.rollback()
    row = session.get(NetworkTransfer, transfer_id)
    assert row is not None
    transfer = row
    transfer.attempts += 1
    transfer.status = "failed"
    transfer.error = reason[:1000]
    audit.record(session, SYSTEM, f"network.{transfer.kind}.failed", outcome="failure",
                 patient_id=transfer.patient_id, object_type="network_transfer", object_id=transfer.id,
                 details={"site": site.name, "reason": reason[:300], "attempt": transfer.attempts})
    session.commit()


def register_outbox_handler(session_factory: Callable[[], Session], transport: Transport) -> None:
    """Let the outbox worker deliver ``network.transfer`` messages with ``transport``."""
    from emr.outbox import DeliveryError, register_handler

    from .outgoing import OUTBOX_KIND

    def handle(message: Any, _context: Any) -> None:
        transfer_id = int((message.payload or {}).get("transfer_id", 0))
        with session_factory() as session:
            try:
                deliver(session, transfer_id, transport)
            except TransferFailed as exc:
                raise DeliveryError(exc.reason, permanent=exc.permanent) from exc

    register_handler(OUTBOX_KIND, handle)
