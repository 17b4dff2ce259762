"""Digital signatures of document versions (issue 5): keys, signed PDFs, signature steps.

Why the signed PDF lives in the database (``LargeBinary``) and not in a file:
it is written in the same transaction that locks the version and records the
signature step, so a crash can never leave a locked version without its PDF
or a PDF without its row; it is backed up with the records it proves; and it
is small (≈100–200 kB). Its SHA-256 is stored next to it so an edited row is
caught by ``/verify`` even before the cryptographic check. Each signature is
an incremental update, so the PDF after signature *n* is a byte prefix of
the PDF after signature *n+1*: one column holds every revision, and
``DocumentSignature.pdf_length`` says where each one ends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from emr.core.exceptions import InvalidState

from .base import Base, utcnow

__all__ = ["DocumentSignature", "SignedArtifact", "SigningKey"]


class SigningKey(Base):
    """How a user signs: an uploaded PKCS#12 (kept as uploaded, encrypted by its own
    password, which is never stored) or a key on a PKCS#11 token (labels only)."""

    __tablename__ = "signing_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # pkcs12 | pkcs11
    p12_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_label: Mapped[str | None] = mapped_column(String(64))
    key_label: Mapped[str | None] = mapped_column(String(64))
    cert_subject: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignedArtifact(Base):
    """The signed PDF of one document version and its public verification code."""

    __tablename__ = "signed_artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("document_versions.id"), unique=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    # 192 random bits, URL-safe: the QR target /verify/<code>; unguessable.
    verification_code: Mapped[str] = mapped_column(String(64), unique=True)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))  # the version's, when signed
    signatures_required: Mapped[int] = mapped_column(default=1)
    signatures_done: Mapped[int] = mapped_column(default=0)
    complete: Mapped[bool] = mapped_column(default=False)
    # DICOM Encapsulated PDF in the study (radiology reports).
    pacs_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    pacs_instance_id: Mapped[str | None] = mapped_column(String(64))
    pacs_stored_at: Mapped[datetime | None]
    pacs_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    signatures: Mapped[list[DocumentSignature]] = relationship(
        order_by="DocumentSignature.order_index", back_populates="artifact"
    )


class DocumentSignature(Base):
    """One signing step: who signed which field, when, with what certificate; the CMS over
    the version's canonical JSON."""

    __tablename__ = "document_signatures"
    id: Mapped[int] = mapped_column(primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("signed_artifacts.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("document_versions.id"), index=True)
    order_index: Mapped[int]
    field_name: Mapped[str] = mapped_column(String(64))
    signer_role: Mapped[str] = mapped_column(String(30))  # the slot: radiologist | physician | head | author
    signer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The head's slot: in which capacity it was given — head | deputy ("KT.") | acting ("Q."); None for other
    # slots and for signatures made before migration 0024 (all by the head).
    capacity: Mapped[str | None] = mapped_column(String(10))
    method: Mapped[str] = mapped_column(String(10))  # pkcs12 | pkcs11
    cert_subject: Mapped[str] = mapped_column(String(500))
    cert_serial: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    timestamp_at: Mapped[datetime | None]
    pdf_length: Mapped[int]  # the PDF after this signature = artifact.pdf[:pdf_length]
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    cms: Mapped[bytes] = mapped_column(LargeBinary)  # detached CMS over the RFC 8785 JSON

    artifact: Mapped[SignedArtifact] = relationship(back_populates="signatures")

    __table_args__ = (UniqueConstraint("version_id", "order_index", name="uq_document_signatures_order"),)


@event.listens_for(DocumentSignature, "before_update")
def _signatures_are_immutable(mapper: object, connection: object, target: DocumentSignature) -> None:
    raise InvalidState(f"signature {target.id} cannot change", key="documents.error.locked")


@event.listens_for(SignedArtifact, "before_update")
def _pdf_only_grows(mapper: object, connection: object, target: SignedArtifact) -> None:
    """A signed PDF only gets later incremental updates appended; earlier bytes never change."""
    from sqlalchemy import inspect

    state = inspect(target)
    for name in ("verification_code", "version_id", "document_id", "content_sha256"):
        if state.attrs[name].history.deleted:
            raise InvalidState(f"signed artifact {target.id}: {name} cannot change", key="documents.error.locked")
    old = state.attrs.pdf.history.deleted
    if old and not bytes(target.pdf).startswith(bytes(old[0])):
        raise InvalidState(
            f"signed artifact {target.id}: earlier revisions cannot change", key="documents.error.locked"
        )
