"""The provincial network (issue 15 §1): other facilities, what we send them, what they send us.

Why a table and not a settings file: a hospital admin adds a facility on an
admin page (audited) without restarting anything; the gateway reads the
active sites' AE titles every few seconds to admit them. Only the SHA-256 of
the token a site presents to us is stored (a leaked database does not let
anyone impersonate that site); the token we present to them has to be kept
usable, like the Orthanc password, and is never shown again after entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["NetworkSite", "NetworkTransfer", "NetworkReceived", "TRANSFER_STATES", "TRANSFER_KINDS"]

# Chart status of an outgoing transfer (issue 15: waiting, sent, failed with reason).
TRANSFER_STATES = ("waiting", "sent", "failed")
# study: images + signed report to another facility's archive; read_request: tele-radiology
# request with the images; report: a signed report going back to the facility that asked.
TRANSFER_KINDS = ("study", "read_request", "report")


class NetworkSite(Base):
    __tablename__ = "network_sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    # Its EMR (inter-site HTTP API) and DICOMweb root; both optional for a plain PACS.
    emr_url: Mapped[str | None] = mapped_column(String(500))
    dicomweb_url: Mapped[str | None] = mapped_column(String(500))
    # How studies and reports go to its archive: "dicom" (C-STORE to host:port) or "stow"
    # (STOW-RS to dicomweb_url, HTTP Basic with these credentials when set; migration 0016).
    send_by: Mapped[str] = mapped_column(String(8), default="dicom", server_default="dicom")
    dicomweb_username: Mapped[str | None] = mapped_column(String(64))
    dicomweb_password: Mapped[str | None] = mapped_column(String(200))
    # PEM CA/certificate its DICOM TLS server presents; set → C-STORE goes over TLS.
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    # SHA-256 (hex, space-separated for a chain) of the CA certificate(s) its clinicians' signing
    # certificates chain to, imported into OUR trust store when the admin attached them (migration 0025).
    signing_ca_sha256: Mapped[str | None] = mapped_column(Text)
    inbound_token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    outbound_token: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NetworkTransfer(Base):
    """Something this site sends to another: its chart status, the tele-read answer when one comes back."""

    __tablename__ = "network_transfers"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # TRANSFER_KINDS
    site_id: Mapped[int] = mapped_column(ForeignKey("network_sites.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_orders.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    # Tele-radiology request: the clinical question and urgency the reading site sees.
    question: Mapped[str | None] = mapped_column(Text)
    urgency: Mapped[str | None] = mapped_column(String(8))
    # The reply's key at the other end (its accession for a read request, its received row).
    remote_ref: Mapped[str | None] = mapped_column(String(64))
    # A report going back answers the request the other site numbered this way.
    reply_to: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="waiting")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    instances_sent: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # The signed report that came back for a read request (kept as received: it is the evidence).
    report_received_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_network_transfers_status", "status"),)


class NetworkReceived(Base):
    """Something another site sent us: a study (with its report), a read request, a signed report."""

    __tablename__ = "network_received"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # TRANSFER_KINDS, seen from the receiving end
    site_id: Mapped[int] = mapped_column(ForeignKey("network_sites.id"), index=True)
    remote_ref: Mapped[str] = mapped_column(String(64))  # the sender's transfer id
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    # Who the sender says the patient is (matched here by CCCD, then name + birth date).
    patient_cccd: Mapped[str | None] = mapped_column(String(12))
    patient_name: Mapped[str | None] = mapped_column(String(200))
    patient_birth_date: Mapped[str | None] = mapped_column(String(10))
    patient_sex: Mapped[str | None] = mapped_column(String(1))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    match_method: Mapped[str | None] = mapped_column(String(20))  # cccd | name_birth | created | None
    order_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_orders.id"))
    question: Mapped[str | None] = mapped_column(Text)
    urgency: Mapped[str | None] = mapped_column(String(8))
    modality: Mapped[str | None] = mapped_column(String(4))
    procedure_name: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(200))  # the person at the other site
    # A returned report: the Encapsulated PDF instance exactly as received, its PDF's hash and check.
    dicom: Mapped[bytes | None] = mapped_column(LargeBinary)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64))
    signature_status: Mapped[str | None] = mapped_column(String(200))
    signer: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("site_id", "kind", "remote_ref", name="uq_network_received_ref"),)
