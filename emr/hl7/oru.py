"""ORU^R01 with the signed radiology report, sent to the HIS through the durable outbox.

Built when the last signature of a radiology report is placed, in the signing
transaction (what was signed is what is sent; nothing is lost if the HIS is down:
the outbox retries with back-off). Structure (HL7 v2.5 §7.3.1 ORU^R01):
MSH (MSH-18 "UNICODE UTF-8", table 0211) · PID (the HIS's own patient number first)
· ORC (RE: observations to follow, §4.5.1.1 table 0119; ORC-2 placer, ORC-3 filler)
· OBR (OBR-2 placer order number, OBR-3 filler = accession number, OBR-4 service,
OBR-7 observation time, OBR-22 results time, OBR-25 result status F final, table 0123,
OBR-32 principal result interpreter) · OBX per report section, type FT (formatted
text, line breaks as \\.br\\, §2.7.6) · OBX type RP (reference pointer, §2A.65:
pointer ^ application ID ^ type of data AP ^ subtype PDF, tables 0191/0291) to the
signed PDF, and the PDF's SHA-256 and verification link so the HIS can check it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import hl7
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import SYSTEM, Actor
from emr.core.exceptions import NotFoundError
from emr.core.settings import EmrSettings
from emr.i18n import t
from emr.models import (
    Document,
    DocumentVersion,
    Hl7Message,
    Hl7OrderLink,
    Hl7PatientLink,
    ImagingOrder,
    Patient,
    User,
    utcnow,
)
from emr.models.signing import DocumentSignature, SignedArtifact

from .charsets import msh18_for
from .fields import escape, get
from .mllp import MllpError, send_mllp

__all__ = ["KIND", "build_oru", "deliver_oru", "enqueue_oru", "report_signed_hook", "resend"]

KIND = "hl7.oru"
# Report sections sent as OBX, in this order; their names are hl7.oru.section.<key> in vi.json.
_SECTIONS = ("technique", "findings", "conclusion", "recommendation")


def _ts(value: datetime | None) -> str:
    return (value or utcnow()).replace(tzinfo=UTC).strftime("%Y%m%d%H%M%S+0000")


def _name(full_name: str) -> str:
    """XPN from a Vietnamese full name: family ^ given ^ middle names."""
    parts = full_name.split()
    if len(parts) < 2:
        return escape(full_name)
    return f"{escape(parts[0])}^{escape(parts[-1])}^{escape(' '.join(parts[1:-1]))}"


def build_oru(session: Session, settings: EmrSettings, doc: Document, artifact: SignedArtifact,
              control_id: str) -> str:
    """The ORU^R01 text for a fully signed report (UTF-8, default delimiters)."""
    patient = session.get(Patient, doc.patient_id)
    order = session.get(ImagingOrder, doc.order_id) if doc.order_id else None
    version = session.get(DocumentVersion, artifact.version_id)
    assert patient is not None and version is not None
    content: dict[str, Any] = json.loads(version.content_json)
    first = session.scalar(select(DocumentSignature).where(DocumentSignature.artifact_id == artifact.id)
                           .order_by(DocumentSignature.order_index).limit(1))  # the reporting radiologist
    signer = session.get(User, first.signer_id) if first else None
    link = session.scalar(select(Hl7PatientLink).where(Hl7PatientLink.patient_id == patient.id).limit(1))
    olink = session.scalar(select(Hl7OrderLink).where(Hl7OrderLink.order_id == order.id)) if order else None
    cfg = settings.hl7
    ids = []
    if link is not None:
        ids.append(f"{escape(link.identifier)}^^^{escape(link.authority)}^PI")
    ids.append(f"{escape(patient.code)}^^^{escape(cfg.application)}^PI")
    if patient.cccd:
        ids.append(f"{escape(patient.cccd)}^^^^NNVNM")
    sex = patient.sex if patient.sex in ("M", "F", "O") else "U"
    placer = f"{escape(olink.placer_number)}^{escape(olink.authority)}" if olink else ""
    filler = f"{escape(order.accession_number)}^{escape(cfg.application)}" if order else ""
    service = f"{escape(order.procedure_code or '')}^{escape(order.procedure_name)}" if order else ""
    signed_at = _ts(artifact.updated_at)
    # An amendment of a signed report is a corrected result: OBR-25 table 0123 / OBX-11 table 0085 "C", else "F".
    status = "C" if version.amends_version_id else "F"
    receiving = escape(olink.authority if olink else (link.authority if link else ""))
    interpreter = escape(signer.full_name) if signer else ""
    segments = [
        f"MSH|^~\\&|{escape(cfg.application)}|{escape(settings.facility_code)}||{receiving}|{_ts(None)}||"
        f"ORU^R01^ORU_R01|{escape(control_id)}|P|2.5||||||{msh18_for('utf-8')}",
        f"PID|1||{'~'.join(ids)}||{_name(patient.full_name)}||{patient.birth_date:%Y%m%d}|{sex}",
        f"ORC|RE|{placer}|{filler}||CM",
        f"OBR|1|{placer}|{filler}|{service}|||{_ts(order.ordered_at if order else None)}|||||||||||||||"
        f"{signed_at}|||{status}|||||||{interpreter}",
    ]
    n = 0
    for key in _SECTIONS:
        label = t(f"hl7.oru.section.{key}")
        text = str(content.get(key) or "").strip()
        if text:
            n += 1
            segments.append(f"OBX|{n}|FT|{key.upper()}^{escape(label)}^L||{escape(text, breaks=True)}||||||{status}|||"
                            f"{signed_at}")
    url = f"{settings.public_url.rstrip('/')}/signing/documents/{doc.id}/versions/{version.number}/pdf"
    verify = f"{settings.public_url.rstrip('/')}/verify/{artifact.verification_code}"
    pdf, sha, check = (escape(t(f"hl7.oru.{name}")) for name in ("pdf", "pdf_sha256", "verify"))
    n += 1
    segments.append(f"OBX|{n}|RP|PDF^{pdf}^L||{escape(url)}^{escape(cfg.application)}^AP^PDF||||||{status}")
    n += 1
    segments.append(f"OBX|{n}|ST|PDF-SHA256^{sha}^L||{artifact.pdf_sha256}||||||{status}")
    n += 1
    segments.append(f"OBX|{n}|RP|VERIFY^{check}^L||{escape(verify)}^{escape(cfg.application)}^AP^HTML||||||"
                    f"{status}")
    return "\r".join(segments)


def enqueue_oru(session: Session, settings: EmrSettings, doc: Document, artifact: SignedArtifact, *,
                key: str | None = None) -> Hl7Message:
    """Log the ORU (status queued) and put it in the outbox, in the caller's transaction."""
    from emr.outbox import enqueue

    control_id = f"ORU{artifact.id}V{artifact.signatures_done}"
    key = key or f"{artifact.id}:{artifact.pdf_sha256}"
    text = build_oru(session, settings, doc, artifact, control_id)
    row = Hl7Message(direction="out", peer=settings.hl7.receiver[:80], sending_application=settings.hl7.application,
                     sending_facility=settings.facility_code, message_type="ORU^R01", control_id=control_id,
                     charset="utf-8", raw=text.encode("utf-8"), status="queued", patient_id=doc.patient_id,
                     order_id=doc.order_id)
    session.add(row)
    session.flush()
    enqueue(session, KIND, key, {"log_id": row.id, "document_id": doc.id}, target=settings.hl7.receiver,
            patient_id=doc.patient_id, subject=f"ORU^R01 {control_id}")
    return row


def _his_knows(session: Session, doc: Document) -> bool:
    """The HIS placed the order or registered the patient (it sent them over HL7)."""
    if doc.order_id and session.scalar(select(Hl7OrderLink.id).where(Hl7OrderLink.order_id == doc.order_id)):
        return True
    return session.scalar(select(Hl7PatientLink.id).where(Hl7PatientLink.patient_id == doc.patient_id)) is not None


def report_signed_hook(settings: EmrSettings) -> Callable[[Session, Actor, Document, SignedArtifact], None]:
    """What :func:`emr.signing.service.sign_document` calls when a radiology report is fully signed."""

    def hook(session: Session, actor: Actor, doc: Document, artifact: SignedArtifact) -> None:
        if not _his_knows(session, doc):
            return  # a patient and order the HIS never sent: it has nothing to attach the result to
        row = enqueue_oru(session, settings, doc, artifact)
        audit.record(session, actor, "hl7.send", patient_id=doc.patient_id, object_type="hl7_message",
                     object_id=row.id, details={"type": "ORU^R01", "document": doc.id, "to": settings.hl7.receiver})

    return hook


def _ack_code(ack: bytes) -> tuple[str, str]:
    """(MSA-1, error text) of the receiver's acknowledgement."""
    try:
        msg = hl7.parse(ack.decode("utf-8", "replace").replace("\n", "\r").strip("\r"))
        text = get(msg, "ERR", 3, 2) or get(msg, "MSA", 3)
        return get(msg, "MSA", 1).upper(), text
    except Exception:  # noqa: BLE001 - an unreadable answer is a failed delivery
        return "", "unreadable acknowledgement"


def deliver_oru(message: Any, context: Any) -> str:
    """The outbox handler (emr.outbox.HandlerContext): send over MLLP; AA/CA = delivered, AE or no
    answer = retry with back-off, AR/CR = dead at once (the receiver refuses this message as it is)."""
    from emr.outbox import DeliveryError

    settings: EmrSettings = context.settings
    log_id = int(message.payload["log_id"])
    with context.session_factory() as session:
        row = session.get(Hl7Message, log_id)
        if row is None:
            raise DeliveryError(f"HL7 log row {log_id} is gone", permanent=True)
        target = message.target or settings.hl7.receiver
        if not target:
            raise DeliveryError("no HL7 receiver configured (FILMLESS_HL7_RECEIVER)", permanent=True)
        status, error, ack, code = "sent", None, None, ""
        try:
            ack = send_mllp(target, bytes(row.raw), settings.hl7.send_timeout)
            code, text = _ack_code(ack)
            if code not in ("AA", "CA"):
                status, error = "refused" if code in ("AR", "CR") else "failed", f"{code or '?'}: {text}"
        except MllpError as exc:
            status, error = "failed", str(exc)
        row.status, row.ack, row.ack_code, row.error, row.peer = status, ack, code or None, error, target[:80]
        audit.record(session, SYSTEM, "hl7.delivery", outcome="success" if status == "sent" else "failure",
                     patient_id=row.patient_id, object_type="hl7_message", object_id=row.id,
                     details={"to": target, "ack": code, **({"error": error[:200]} if error else {})})
        session.commit()
    if status != "sent":
        raise DeliveryError(error or "not acknowledged", permanent=status == "refused")
    return f"{code} {row.control_id}"


def resend(session: Session, actor: Actor, message_id: int) -> Hl7Message:
    """Send a logged outbound message again (a new outbox entry, a new log row)."""
    from emr.outbox import enqueue

    old = session.get(Hl7Message, message_id)
    if old is None or old.direction != "out":
        raise NotFoundError("outbound HL7 message", message_id)
    row = Hl7Message(direction="out", peer=old.peer, sending_application=old.sending_application,
                     sending_facility=old.sending_facility, message_type=old.message_type, control_id=old.control_id,
                     charset=old.charset, raw=old.raw, status="queued", patient_id=old.patient_id,
                     order_id=old.order_id, replay_of_id=old.id, replayed_by=actor.username)
    session.add(row)
    session.flush()
    subject = t("hl7.resend.subject", type=old.message_type, control_id=old.control_id)
    enqueue(session, KIND, f"resend:{row.id}", {"log_id": row.id}, target=old.peer or "",
            patient_id=old.patient_id, subject=subject)
    audit.record(session, actor, "hl7.replay", patient_id=old.patient_id, object_type="hl7_message",
                 object_id=row.id, details={"replay_of": old.id, "direction": "out"})
    session.commit()
    return row
