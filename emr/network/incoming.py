"""What another facility sends us through the inter-site API, and the "received" list.

Every entry point takes the :class:`NetworkSite` the bearer token belongs to
(``emr.web.network_api`` refused everyone else) and is idempotent on
(site, kind, the sender's reference): the sender's outbox may deliver twice
after a crash, and the second delivery answers what the first did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import in_care_clause
from emr.core.exceptions import NotFoundError, ValidationFailed
from emr.core.states import OrderStatus, StudyState
from emr.models import (
    URGENCIES,
    ImagingOrder,
    NetworkReceived,
    NetworkSite,
    NetworkTransfer,
    Patient,
    Study,
    User,
    utcnow,
)
from emr.models.lookup import next_number

from .matching import match_patient

__all__ = [
    "RECEIVED_LIMIT",
    "ReceivedRow",
    "attach_received_studies",
    "receive_read_request",
    "receive_report",
    "receive_study",
    "read_requests_for",
    "received_list",
    "sender_name",
    "site_actor",
]

_UID_CHARS = set("0123456789.")


def site_actor(site: NetworkSite, client_ip: str | None = None) -> Actor:
    """Who another facility's calls are audited as (no local user; the site's name)."""
    return Actor(None, f"site:{site.name}"[:64], "network_site", client_ip)


def _uid(value: Any) -> str:
    uid = str(value or "").strip()
    if not 1 <= len(uid) <= 64 or not set(uid) <= _UID_CHARS:
        raise ValidationFailed({"study_instance_uid": "network.error.uid"})
    return uid


def _ref(value: Any) -> str:
    ref = str(value or "").strip()
    if not 1 <= len(ref) <= 64:
        raise ValidationFailed({"ref": "network.error.ref"})
    return ref


@dataclass
class _Who:
    cccd: str | None
    full_name: str | None
    birth_date: date | None
    sex: str | None


def _who(value: Any) -> _Who:
    if not isinstance(value, dict):
        raise ValidationFailed({"patient": "network.error.patient"})
    cccd = str(value.get("cccd") or "").strip() or None
    if cccd is not None and (len(cccd) != 12 or not cccd.isdigit()):
        raise ValidationFailed({"patient.cccd": "network.error.patient"})
    name = str(value.get("full_name") or "").strip()[:200] or None
    try:
        born = date.fromisoformat(str(value.get("birth_date"))) if value.get("birth_date") else None
    except ValueError:
        raise ValidationFailed({"patient.birth_date": "network.error.patient"}) from None
    sex = str(value.get("sex") or "")[:1] or None
    if sex is not None and sex not in ("M", "F", "O"):
        raise ValidationFailed({"patient.sex": "network.error.patient"})
    if name is None or born is None:
        raise ValidationFailed({"patient": "network.error.patient"})
    return _Who(cccd, name, born, sex)


def _existing(session: Session, site: NetworkSite, kind: str, ref: str) -> NetworkReceived | None:
    return session.scalar(
        select(NetworkReceived).where(
            NetworkReceived.site_id == site.id, NetworkReceived.kind == kind, NetworkReceived.remote_ref == ref
        )
    )


def _row(site: NetworkSite, kind: str, ref: str, uid: str, who: _Who | None, body: dict[str, Any]) -> NetworkReceived:
    return NetworkReceived(
        kind=kind,
        site_id=site.id,
        remote_ref=ref,
        study_instance_uid=uid,
        patient_cccd=who.cccd if who else None,
        patient_name=who.full_name if who else None,
        patient_birth_date=who.birth_date.isoformat() if who and who.birth_date else None,
        patient_sex=who.sex if who else None,
        modality=str(body.get("modality") or "")[:4] or None,
        procedure_name=str(body.get("procedure_name") or "")[:200] or None,
        requested_by=str(body.get("requested_by") or "")[:200] or None,
    )


def _commit_once(session: Session, row: NetworkReceived, site: NetworkSite, kind: str, ref: str) -> NetworkReceived:
    """Commit ``row``; a concurrent delivery of the same reference that won keeps its row."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        again = _existing(session, site, kind, ref)
        if again is None:
            raise
        return again
    return row


def receive_study(
    session: Session, site: NetworkSite, body: dict[str, Any], client_ip: str | None = None
) -> dict[str, Any]:
    """A study is on its way from ``site`` (images follow by C-STORE): note who it is for here."""
    ref, uid = _ref(body.get("ref")), _uid(body.get("study_instance_uid"))
    who = _who(body.get("patient"))
    row = _existing(session, site, "study", ref)
    if row is None:
        row = _row(site, "study", ref, uid, who, body)
        patient, method = match_patient(session, who.cccd, who.full_name, who.birth_date)
        row.patient_id = patient.id if patient else None
        row.match_method = method
        session.add(row)
        session.flush()
        audit.record(session, site_actor(site, client_ip), "network.study.receive", patient_id=row.patient_id,
                     object_type="network_received", object_id=row.id,
                     details={"site": site.name, "study": uid, "match": method})
        row = _commit_once(session, row, site, "study", ref)
    return {"received": row.id, "matched": row.match_method is not None}


def _service_user(session: Session, site: NetworkSite) -> User:
    """The (disabled, unable to log in) account a site's read requests are ordered by here."""
    from emr.access.users import create_user

    username = f"site_{site.id}"
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = create_user(session, site_actor(site), username, secrets.token_urlsafe(24), "physician",
                           site.name[:200], title="network")
        user.active = False
        session.flush()
    return user


def _patient_for(session: Session, site: NetworkSite, who: _Who, client_ip: str | None) -> tuple[Patient, str]:
    patient, method = match_patient(session, who.cccd, who.full_name, who.birth_date)
    if patient is not None:
        return patient, method or ""
    from emr.patients.service import create_patient

    created = create_patient(session, site_actor(site, client_ip), {
        "full_name": who.full_name, "birth_date": who.birth_date.isoformat() if who.birth_date else None,
        "sex": who.sex or "O", "cccd": who.cccd,
    }, check_namesakes=False)  # the sending site's identity, matched above by CCCD
    return created, "created"


def receive_read_request(
    session: Session, site: NetworkSite, body: dict[str, Any], client_ip: str | None = None
) -> dict[str, Any]:
    """Tele-radiology: ``site`` asks us to read a study. A local order (same Study Instance UID)
    puts it on the reading worklist when the images arrive; the answer is its accession number,
    which the sender writes into the images it sends."""
    ref, uid = _ref(body.get("ref")), _uid(body.get("study_instance_uid"))
    who = _who(body.get("patient"))
    question = str(body.get("question") or "").strip()[:2000]
    urgency = str(body.get("urgency") or "routine")
    if urgency not in URGENCIES or not question:
        raise ValidationFailed({"request": "network.error.question"})
    row = _existing(session, site, "read_request", ref)
    if row is not None:
        order = session.get(ImagingOrder, row.order_id)
        return {"received": row.id, "accession": order.accession_number if order else ""}
    if session.scalar(select(ImagingOrder.id).where(ImagingOrder.study_instance_uid == uid)) is not None:
        # 422, not 409: the sender's retry cannot change it (409 means "a concurrent delivery, retry").
        raise ValidationFailed({"study_instance_uid": "network.error.study_has_order"})
    actor = site_actor(site, client_ip)
    patient, method = _patient_for(session, site, who, client_ip)
    user = _service_user(session, site)
    modality = str(body.get("modality") or "OT")[:4]
    now = utcnow()
    from emr.core.clock import to_local

    order = ImagingOrder(
        patient_id=patient.id,
        accession_number=f"{to_local(now):%y%m%d}{next_number(session, 'accession'):06d}",
        study_instance_uid=uid,
        modality=modality,
        procedure_name=(str(body.get("procedure_name") or "") or modality)[:200],
        urgency=urgency,
        clinical_info=question,
        ordered_by=user.id,
        ordered_at=now,
        scheduled_at=now,
        status=OrderStatus.COMPLETED.value,  # performed at the other site: waiting for its images
    )
    session.add(order)
    session.flush()
    _adopt_arrived_copy(session, actor, order)
    row = _row(site, "read_request", ref, uid, who, body)
    row.patient_id, row.match_method, row.order_id = patient.id, method, order.id
    row.question, row.urgency = question, urgency
    session.add(row)
    session.flush()
    audit.record(session, actor, "network.read_request.receive", patient_id=patient.id,
                 object_type="network_received", object_id=row.id,
                 details={"site": site.name, "study": uid, "order_id": order.id, "match": method,
                          "requested_by": row.requested_by, "urgency": urgency})
    session.commit()
    return {"received": row.id, "accession": order.accession_number}


def _adopt_arrived_copy(session: Session, actor: Actor, order: ImagingOrder) -> None:
    """The images may already be here (sent earlier as a plain transfer): the new read order takes
    them, so they are on the reading worklist now rather than never (the linker only sees new ones)."""
    for study in session.scalars(select(Study).where(Study.study_instance_uid == order.study_instance_uid)):
        if study.order_id is not None:
            continue
        study.order_id, study.patient_id = order.id, order.patient_id
        study.state, study.link_method, study.linked_at = StudyState.LINKED, "study_uid", utcnow()
        order.status = OrderStatus.IMAGES_AVAILABLE.value
        audit.record(session, actor, "study.link", patient_id=order.patient_id, object_type="study",
                     object_id=study.study_instance_uid, details={"order_id": order.id, "method": "study_uid"})


def _verify(pdf: bytes, config: Any) -> tuple[str, str]:
    """("valid" | "intact" | "invalid", signer names): "intact" = every signature's bytes are
    unchanged and its CMS checks out, but its chain does not reach one of OUR trust anchors
    (the other province's CA is not ours until an admin adds it)."""
    from emr.signing import verify_pdf

    anchors = config.anchors() if config is not None else []
    crls = config.crls() if config is not None else []
    report = verify_pdf(pdf, anchors, crls=crls)
    names = ", ".join(s.signer_name or "" for s in report.signatures)[:500]
    if report.valid:
        return "valid", names
    if report.signatures and all(s.intact and s.signature_valid for s in report.signatures):
        return "intact", names
    return "invalid", names


def receive_report(
    session: Session, site: NetworkSite, body: dict[str, Any], *, store: Any, signing_config: Any,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """The signed report for our read request: verified, archived in our study, attached to our order."""
    from emr.imaging.identity import order_identity
    from emr.signing.dicom_pdf import DicomEncapsulationError, extract_pdf

    ref = _ref(body.get("ref"))
    transfer = session.get(NetworkTransfer, int(ref)) if ref.isdigit() and len(ref) < 12 else None
    if transfer is None or transfer.kind != "read_request" or transfer.site_id != site.id:
        raise NotFoundError("read request", ref)
    try:
        dicom = base64.b64decode(str(body.get("dicom") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed({"dicom": "network.error.report"}) from None
    if not dicom or hashlib.sha256(dicom).hexdigest() != str(body.get("sha256") or ""):
        raise ValidationFailed({"dicom": "network.error.report"})
    try:
        pdf = extract_pdf(dicom)
    except DicomEncapsulationError:
        raise ValidationFailed({"dicom": "network.error.report"}) from None
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(dicom))
    if str(ds.get("StudyInstanceUID", "")) != transfer.study_instance_uid:
        raise ValidationFailed({"study_instance_uid": "network.error.uid"})
    report_key = f"{ref}:{ds.SOPInstanceUID}"
    row = _existing(session, site, "report", report_key)
    if row is not None:
        return {"received": row.id, "signature": row.signature_status}
    status, signer = _verify(pdf, signing_config)
    if status == "invalid":
        audit.record(session, site_actor(site, client_ip), "network.report.receive", outcome="failure",
                     patient_id=transfer.patient_id, object_type="network_transfer", object_id=transfer.id,
                     details={"site": site.name, "reason": "signature invalid"})
        session.commit()
        raise ValidationFailed({"dicom": "network.error.signature"})
    order = session.get(ImagingOrder, transfer.order_id) if transfer.order_id else None
    if order is None:
        raise NotFoundError("order", transfer.order_id)
    # Our identity on our copy (Orthanc keys a study by PatientID + Study UID); the PDF is untouched.
    for key, value in (order_identity(session, order) or {}).items():
        setattr(ds, key, value)
    ds.AccessionNumber = order.accession_number
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    if store is not None:
        store.upload(out.getvalue())  # StorageError → 503 at the edge: the sender retries
    row = _row(site, "report", report_key, transfer.study_instance_uid, None, body)
    row.patient_id, row.order_id, row.match_method = order.patient_id, order.id, "request"
    row.dicom, row.pdf_sha256, row.signature_status, row.signer = dicom, hashlib.sha256(pdf).hexdigest(), status, signer
    row.requested_by = str(body.get("reader") or "")[:200] or None
    session.add(row)
    transfer.report_received_at = utcnow()
    if order.status != OrderStatus.CANCELLED:
        order.status = OrderStatus.REPORTED.value
        order.result_at = order.result_at or utcnow()
    session.flush()
    audit.record(session, site_actor(site, client_ip), "network.report.receive", patient_id=order.patient_id,
                 object_type="network_received", object_id=row.id,
                 details={"site": site.name, "order_id": order.id, "signature": status, "signer": signer,
                          "reader": row.requested_by, "pdf_sha256": row.pdf_sha256})
    row = _commit_once(session, row, site, "report", report_key)
    return {"received": row.id, "signature": status}


def attach_received_studies(session: Session) -> int:
    """Studies another site sent (no order here) whose patient was matched: link them to that
    patient so the chart and the viewer show them. Run by the study linker after each pass."""
    rows = session.execute(
        select(Study, NetworkReceived)
        .join(NetworkReceived, NetworkReceived.study_instance_uid == Study.study_instance_uid)
        .where(
            Study.state == StudyState.UNMATCHED,
            NetworkReceived.kind == "study",
            NetworkReceived.patient_id.is_not(None),
        )
        .limit(200)
    ).all()
    done = 0
    for study, received in rows:
        site = session.get(NetworkSite, received.site_id)
        study.patient_id = received.patient_id
        study.state = StudyState.LINKED
        study.link_method = "site"
        study.linked_at = utcnow()
        audit.record(session, site_actor(site) if site else audit.SYSTEM, "study.link",
                     patient_id=received.patient_id, object_type="study", object_id=study.study_instance_uid,
                     details={"method": "site", "site": site.name if site else None, "received": received.id})
        done += 1
    if done:
        session.commit()
    return done


def read_requests_for(session: Session, order_ids: list[int]) -> dict[int, str]:
    """Order id → the name of the site that asked for the read, for the reading worklist."""
    if not order_ids:
        return {}
    rows = session.execute(
        select(NetworkReceived.order_id, NetworkSite.name)
        .join(NetworkSite, NetworkSite.id == NetworkReceived.site_id)
        .where(NetworkReceived.kind == "read_request", NetworkReceived.order_id.in_(order_ids))
    ).all()
    return {order_id: name for order_id, name in rows if order_id is not None}


def sender_name(session: Session, study_instance_uid: str) -> str | None:
    """The facility a study came from (sent, pushed by its PACS, or sent for a read), or None
    for a study made here: the reading page and the viewer page name it (issue 15 §1)."""
    return session.scalar(
        select(NetworkSite.name)
        .join(NetworkReceived, NetworkReceived.site_id == NetworkSite.id)
        .where(NetworkReceived.study_instance_uid == study_instance_uid,
               NetworkReceived.kind.in_(("study", "read_request")))
        .order_by(NetworkReceived.id)
        .limit(1)
    )


@dataclass(frozen=True)
class ReceivedRow:
    item: NetworkReceived
    site: NetworkSite
    patient: Patient | None
    linked: bool  # images here and readable in the viewer


RECEIVED_LIMIT = 200


def received_list(session: Session, actor: Actor, limit: int = RECEIVED_LIMIT) -> list[ReceivedRow]:
    """What other facilities sent, newest first, as ``actor`` may see it: a care-scoped reader sees only
    patients in their care, and no row not matched to a patient yet (those go to roles that are not
    care-scoped: the records desk). The care scope is in the query, before its LIMIT
    (:func:`emr.access.care.in_care_clause`), so rows the user may not see never push out one they may.
    Audited like the other lists of patients: one row per listing, saying how many rows it showed."""
    q = select(NetworkReceived).options(defer(NetworkReceived.dicom))  # a returned report's PDF: not listed
    scope = in_care_clause(session, actor, NetworkReceived.patient_id)
    if scope is not None:
        q = q.where(NetworkReceived.patient_id.is_not(None), scope)
    items = list(session.scalars(q.order_by(NetworkReceived.id.desc()).limit(limit)))
    # Their sites (a handful), patients and which studies are here: one query each, not one per row.
    sites = {site.id: site for site in session.scalars(select(NetworkSite))}
    patient_ids = {i.patient_id for i in items if i.patient_id is not None}
    patients = {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))}
    linked = set(session.scalars(select(Study.study_instance_uid).where(
        Study.study_instance_uid.in_({i.study_instance_uid for i in items}), Study.state == StudyState.LINKED)))
    out = [
        ReceivedRow(
            i,
            sites[i.site_id],
            patients.get(i.patient_id) if i.patient_id is not None else None,
            i.study_instance_uid in linked,
        )
        for i in items
    ]
    audit.record(
        session,
        actor,
        "network.received.list",
        object_type="network_received",
        details={"list": "received", "results": len(out)},
    )
    session.commit()
    return out
