"""The signing workflow: who signs which document version in what order, with which key.

The cryptography is :mod:`emr.signing` (a plain library); this module decides
and records. A version is rendered to PDF once, at its first signature; each
signer in turn adds an incremental PAdES signature to the same PDF and a
detached CMS over the version's canonical JSON. The first signature locks
the version (:func:`emr.documents.service.mark_signed`); it is *signed* only
when every slot of :func:`slots_for` is filled — until then it and a first
version's document are ``signing`` (:func:`emr.documents.service.complete_signing`
marks the last step). Nothing is written unless the whole signing step
succeeded, so a wrong PIN, a revoked certificate or an unreachable TSA leave
the document exactly as it was.

Signing order per form type (:func:`slots_for`): a radiology report is
signed by a radiologist; a discharge summary by the treating physician
(the encounter's attending) and then the head of that department — or, in
the head's place, a deputy ("KT. Trưởng khoa") or acting head ("Q. Trưởng
khoa") the hospital designated for that day (:mod:`emr.access.substitutes`);
the capacity is recorded with the signature, stamped in its box on the PDF
and shown wherever the signer is named. Every other record is signed by the
physician who wrote the version.

A discharge paper (giấy ra viện) states when the patient left: it is signed only once its visit is
closed with a discharge time (:func:`discharge_pending`), so no signed paper says "not discharged" and
the paper is in the record export as soon as it is signed. The visit is closed first (the "Kết thúc lượt
khám" form, with its discharge diagnosis); signing never closes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from emr.access import audit, substitutes
from emr.access.audit import Actor
from emr.core.clock import local_day, local_today, to_local
from emr.core.dicom_dates import display_da
from emr.core.exceptions import EmrError, InvalidState, ValidationFailed
from emr.core.settings import EmrSettings
from emr.documents import service as documents
from emr.documents.content import content_lines
from emr.models.lookup import get_or_404
from emr.ops.instruments import timed_signing
from emr.patients.demographics import demographic_lines, parent_lines
from emr.signing.trust import crl_paths, load_crls, trust_anchors_dir

from ..i18n import t
from ..models import (
    SUBSTITUTE_CAPACITIES,
    Department,
    Document,
    DocumentVersion,
    Encounter,
    EncounterDiagnosis,
    Icd10Code,
    ImagingOrder,
    Patient,
    Study,
    User,
    utcnow,
)
from ..models.signing import DocumentSignature, SignedArtifact, SigningKey
from ..signing import (
    RenderInput,
    SignerSlot,
    SigningContext,
    SigningError,
    encapsulate_pdf,
    load_pkcs12_signer,
    load_trust_anchors,
    open_token_signer,
    render_document_pdf,
    retention_until,
    sign_json,
    sign_pdf,
    verify_json_signature,
    verify_pdf,
)

__all__ = [
    "DbArtifacts",
    "Slot",
    "SigningConfig",
    "NotYourTurn",
    "ContentChanged",
    "artifact_for",
    "capacity_label",
    "discharge_pending",
    "head_refusal",
    "next_slot",
    "signed_already",
    "past_retention",
    "register_pkcs12",
    "register_token_key",
    "render_input",
    "sign_document",
    "store_in_pacs",
    "signing_config",
    "signing_overview",
    "slots_for",
    "verify_code",
    "verify_uploaded_pdf",
]

log = logging.getLogger(__name__)


class ContentChanged(EmrError):
    """The version's content is not what the signer was shown (edited since the form was opened)."""

    code = "conflict"
    http_status = 409


class NotYourTurn(EmrError):
    """The user may not fill the next signature of this version (order or role)."""

    http_status = 403


@dataclass(frozen=True)
class Slot:
    field_name: str  # the PDF signature field
    who: str  # radiologist | treating | head | author


def slots_for(form_type: str) -> list[Slot]:
    if form_type == "radiology_report":
        return [Slot("radiologist", "radiologist")]
    if form_type == "discharge_summary":
        return [Slot("physician", "treating"), Slot("head", "head")]
    if form_type == "diagnosis":
        return [Slot("physician", "treating")]  # the treating physician answers for the diagnosis
    return [Slot("author", "author")]


@dataclass(frozen=True)
class SigningConfig:
    """What the workflow needs from the settings (and the image store for radiology reports)."""

    trust_anchors_dir: Path
    crl_paths: Sequence[Path] = ()
    tsa_url: str | None = None
    pkcs11_library: str = "/usr/lib/softhsm/libsofthsm2.so"
    softhsm2_conf: Path | None = None
    public_url: str = "http://127.0.0.1:8080"
    hospital_name: str = ""
    allow_fetching: bool = True
    store: Any = None
    # Called in the signing transaction when a radiology report gets its last signature
    # (session, actor, document, artifact): e.g. the HL7 ORU^R01 to the HIS (emr.hl7.oru), via the outbox.
    on_report_signed: tuple[Callable[[Session, Actor, Document, SignedArtifact], None], ...] = ()

    def anchors(self) -> list[x509.Certificate]:
        return load_trust_anchors(self.trust_anchors_dir)

    def crls(self) -> list[x509.CertificateRevocationList]:
        return load_crls(self.crl_paths)

    def context(self) -> SigningContext:
        return SigningContext(
            trust_anchors=self.anchors(),
            tsa_url=self.tsa_url,
            crls=self.crls(),
            allow_fetching=self.allow_fetching,
        )


def signing_config(settings: EmrSettings, store: Any = None) -> SigningConfig:
    return SigningConfig(
        trust_anchors_dir=trust_anchors_dir(settings),
        crl_paths=crl_paths(settings),
        tsa_url=settings.tsa_url,
        pkcs11_library=settings.pkcs11_library,
        softhsm2_conf=settings.softhsm2_conf,
        public_url=settings.public_url,
        hospital_name=settings.hospital_name,
        store=store,
    )


# -- keys ----------------------------------------------------------------------


def _active_key(session: Session, user_id: int, kind: str) -> SigningKey | None:
    return session.scalars(
        select(SigningKey)
        .where(SigningKey.user_id == user_id, SigningKey.kind == kind, SigningKey.active.is_(True))
        .order_by(SigningKey.id.desc())
    ).first()


def _replace_key(session: Session, actor: Actor, user_id: int, key: SigningKey) -> SigningKey:
    for old in session.scalars(
        select(SigningKey).where(
            SigningKey.user_id == user_id, SigningKey.kind == key.kind, SigningKey.active.is_(True)
        )
    ):
        old.active = False
    session.add(key)
    session.flush()
    audit.record(
        session,
        actor,
        "signing.key_register",
        object_type="user",
        object_id=user_id,
        details={"kind": key.kind, "subject": key.cert_subject, "key_label": key.key_label},
    )
    session.commit()
    return key


def register_pkcs12(session: Session, actor: Actor, user_id: int, data: bytes, password: str) -> SigningKey:
    """Store a user's .p12 as uploaded (still encrypted by its password, which is checked here
    and then forgotten). Raises :class:`SigningError` (bad password, no key inside)."""
    get_or_404(session, User, user_id, "user")
    signer = load_pkcs12_signer(data, password)
    return _replace_key(
        session,
        actor,
        user_id,
        SigningKey(
            user_id=user_id,
            kind="pkcs12",
            p12_data=data,
            cert_subject=signer.certificate.subject.rfc4514_string(),
            created_by=actor.user_id,
        ),
    )


def register_token_key(session: Session, actor: Actor, user_id: int, token_label: str, key_label: str) -> SigningKey:
    """Record which token and key label a user signs with (the PIN is typed at each signing)."""
    get_or_404(session, User, user_id, "user")
    problems = {}
    for name, value in (("token_label", token_label), ("key_label", key_label)):
        if not value or len(value) > 64 or not value.isprintable():
            problems[name] = "signing.error.label"
    if problems:
        raise ValidationFailed(problems)
    return _replace_key(
        session,
        actor,
        user_id,
        SigningKey(
            user_id=user_id,
            kind="pkcs11",
            token_label=token_label.strip(),
            key_label=key_label.strip(),
            created_by=actor.user_id,
        ),
    )


# -- order ---------------------------------------------------------------------


def artifact_for(session: Session, version_id: int) -> SignedArtifact | None:
    return session.scalar(select(SignedArtifact).where(SignedArtifact.version_id == version_id))


def _current(doc: Document) -> DocumentVersion:
    return next(v for v in doc.versions if v.number == doc.current_version)


def next_slot(session: Session, doc: Document) -> tuple[DocumentVersion, SignedArtifact | None, Slot | None]:
    """The current version, its signed PDF so far, and the signature it waits for (None: complete)."""
    version = _current(doc)
    artifact = artifact_for(session, version.id)
    slots = slots_for(doc.form_type)
    done = artifact.signatures_done if artifact else 0
    if version.locked and artifact is None:
        return version, None, None  # signed outside this workflow (e.g. earlier OTP confirmation)
    return version, artifact, slots[done] if done < len(slots) else None


def _may_fill(session: Session, doc: Document, version: DocumentVersion, slot: Slot, user: User) -> bool:
    if slot.who == "radiologist":
        return user.role == "radiologist"
    enc = session.get(Encounter, doc.encounter_id)
    if slot.who == "treating":
        return user.role == "physician" and enc is not None and user.id == enc.attending_id
    if slot.who == "head":
        return enc is not None and substitutes.head_capacity(session, user, enc.department_id) is not None
    return user.role in ("physician", "radiologist") and user.id == version.created_by


def discharge_pending(session: Session, doc: Document) -> Encounter | None:
    """The visit of a discharge paper when it is not yet closed with a discharge time (the paper cannot be
    signed until it is: it prints the discharge time, QĐ 4750 Bảng 7 NGAY_RA); None otherwise."""
    if doc.form_type != "discharge_summary" or doc.encounter_id is None:
        return None
    enc = session.get(Encounter, doc.encounter_id)
    if enc is None or (enc.status == "closed" and enc.discharged_at is not None):
        return None
    return enc


def signed_already(session: Session, version: DocumentVersion, user_id: int) -> DocumentSignature | None:
    """The user's signature already on ``version`` (another slot), if any: one person gives one signature of a
    paper — a treating physician later designated "KT. Trưởng khoa" may not also give the head's (the head's
    signature is a second person's check of the treating physician's paper)."""
    return session.scalar(
        select(DocumentSignature)
        .where(DocumentSignature.version_id == version.id, DocumentSignature.signer_id == user_id)
        .order_by(DocumentSignature.order_index)
        .limit(1)
    )


def can_sign_now(session: Session, doc: Document, user: User | None) -> bool:
    if user is None or doc.status == "cancelled":
        return False
    version, _artifact, slot = next_slot(session, doc)
    return (
        slot is not None
        and _may_fill(session, doc, version, slot, user)
        and signed_already(session, version, user.id) is None
    )


def head_refusal(session: Session, doc: Document, exclude: int | None = None) -> str:
    """Why the head's signature is not the user's to give, for the sign page: who may give it today (the
    head, or a deputy or acting head designated for today), or that nobody may until an admin names one.
    ``exclude``: a user not to name (who already signed another slot of the version)."""
    enc = session.get(Encounter, doc.encounter_id)
    dep = session.get(Department, enc.department_id) if enc is not None else None
    if enc is None or dep is None:
        return t("signing.error.turn.head")
    found = [c for c in substitutes.candidates(session, dep.id) if exclude is None or c.user_id != exclude]
    if not found:
        if exclude is not None:
            return t("signing.sign.head_nobody_else", department=dep.name)
        return t("signing.sign.head_nobody", department=dep.name)
    names = []
    for c in found:
        until = t("signing.sign.head_until", date=c.valid_to.strftime("%d/%m/%Y")) if c.valid_to else ""
        names.append(f"{c.name} ({capacity_label(c.capacity)}{until})")
    return t("signing.sign.head_who", department=dep.name, names="; ".join(names))


def capacity_label(capacity: str | None, who: str = "head") -> str:
    """How a signature's capacity reads where the signer is named: "Trưởng khoa", "KT. Trưởng khoa",
    "Q. Trưởng khoa" (Decree 30/2020/NĐ-CP, Annex I); another slot's own label when there is none."""
    if capacity in ("head", *SUBSTITUTE_CAPACITIES):
        return t(f"signing.capacity.{capacity}")
    return _slot_label(who)


# -- signing -------------------------------------------------------------------


def _slot_label(who: str) -> str:
    return t(f"signing.slot.{who}")


def _signer_name(session: Session, doc: Document, version: DocumentVersion, slot: Slot) -> str:
    enc = session.get(Encounter, doc.encounter_id)
    user: User | None = None
    if slot.who == "treating" and enc is not None:
        user = session.get(User, enc.attending_id)
    elif slot.who == "author":
        user = session.get(User, version.created_by)
    # The head's slot: nothing printed under the box. The paper is rendered at its first signature, when who
    # will give the head's (the head, a deputy, an acting head, on whichever day) is not known; the signature's
    # stamp carries the capacity and the signer's full name (:func:`_stamp_heading`, ``stamp_name``).
    return user.full_name if user else ""


def _exam_lines(session: Session, doc: Document) -> list[tuple[str, str]]:
    """What identifies the exam a report is about: accession, procedure, modality, study date,
    ordering physician and ordering department (the order's, not the visit's)."""
    order = session.get(ImagingOrder, doc.order_id) if doc.order_id is not None else None
    if order is None:
        return []
    study = session.scalars(select(Study).where(Study.order_id == order.id).order_by(Study.id)).first()
    by = session.get(User, order.ordered_by)
    enc = session.get(Encounter, order.encounter_id) if order.encounter_id is not None else None
    dep_id = order.department_id or (enc.department_id if enc else None)
    ordering_dep = session.get(Department, dep_id) if dep_id is not None else None
    procedure = order.procedure_name + (f" ({order.procedure_code})" if order.procedure_code else "")
    return [
        (t("signing.pdf.exam.accession"), order.accession_number),
        (t("signing.pdf.exam.procedure"), procedure),
        (t("signing.pdf.exam.modality"), order.modality),
        (t("signing.pdf.exam.study_date"), display_da(study.study_date) if study and study.study_date else "—"),
        (t("signing.pdf.exam.ordered_by"), by.full_name if by else "—"),
        (t("signing.pdf.exam.department"), ordering_dep.name if ordering_dep else "—"),
    ]


def _moment(value: dt.datetime | None) -> str:
    """A stored (naive UTC) moment as the paper prints it, in facility time: ``14:05, 12/03/2026``."""
    return to_local(value).strftime("%H:%M, %d/%m/%Y") if value is not None else "—"


def _amendment_notice(session: Session, version: DocumentVersion) -> list[str]:
    """What a printed amendment must state (Circulars 46/2018/TT-BYT and 13/2025/TT-BYT: a change to a signed
    record is a new version and the earlier one is kept): which version it amends, when that one was signed,
    and why. The paper outlives the screen, so it says so itself rather than only on the verification page."""
    if version.amends_version_id is None:
        return []
    old = session.get(DocumentVersion, version.amends_version_id)
    if old is None:
        return [t("signing.pdf.amendment_reason", reason=version.amendment_reason or "")]
    signed = old.signed_at or session.scalar(  # a version still awaiting a signature: its first one
        select(DocumentSignature.signed_at)
        .where(DocumentSignature.version_id == old.id)
        .order_by(DocumentSignature.order_index)
        .limit(1)
    )
    first = (
        t("signing.pdf.amendment", version=version.number, old=old.number, signed=_moment(signed))
        if signed is not None
        else t("signing.pdf.amendment_unsigned", version=version.number, old=old.number)
    )
    return [
        first,
        t("signing.pdf.amendment_reason", reason=version.amendment_reason or ""),
        t("signing.pdf.amendment_replaces", old=old.number),
    ]


def _icd_lines(session: Session, enc: Encounter) -> list[tuple[str, str]]:
    """The stay's ICD-10 diagnoses, code and name (main first, MA_BENH_CHINH; then MA_BENH_KT)."""
    rows = session.execute(
        select(EncounterDiagnosis.icd10_code, Icd10Code.title)
        .outerjoin(Icd10Code, Icd10Code.code == EncounterDiagnosis.icd10_code)
        .where(EncounterDiagnosis.encounter_id == enc.id)
        .order_by(EncounterDiagnosis.position, EncounterDiagnosis.id)
    ).all()
    named = [f"{code} – {title}" if title else code for code, title in rows]
    if not named:
        return [(t("signing.pdf.icd_main"), "—")]
    out = [(t("signing.pdf.icd_main"), named[0])]
    if len(named) > 1:
        out.append((t("signing.pdf.icd_secondary"), "\n".join(named[1:])))
    return out


def _discharge_lines(
    session: Session, enc: Encounter, patient: Patient | None, on: dt.date
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What a discharge paper carries beyond the form (Circular 56/2017/TT-BYT annex, form 01/BV-01; QĐ 4750
    XML7): the patient's ethnicity and occupation, a child's parents (under 16 on ``on``), health ID, insurance
    card and address; the visit code, admission and discharge times (facility time) and the ICD-10 diagnoses."""
    details: list[tuple[str, str]] = []
    if patient is not None:
        details += demographic_lines(session, patient, on, religion=False)
        details += parent_lines(patient, on)
        if patient.health_id:
            details.append((t("signing.pdf.health_id"), patient.health_id))  # MA_YTE
        if patient.bhyt_number:
            card = patient.bhyt_number
            if patient.bhyt_valid_from or patient.bhyt_valid_to:
                start, end = _date_or_dash(patient.bhyt_valid_from), _date_or_dash(patient.bhyt_valid_to)
                card += " · " + t("signing.pdf.bhyt_valid", start=start, end=end)
            details.append((t("signing.pdf.bhyt"), card))
        if patient.address:
            details.append((t("signing.pdf.address"), patient.address))
    visit = [
        (t("signing.pdf.visit_code"), enc.visit_code),  # MA_LK
        (t("signing.pdf.admitted_at"), _moment(enc.admitted_at)),  # NGAY_VAO
        (
            t("signing.pdf.discharged_at"),
            _moment(enc.discharged_at) if enc.discharged_at is not None else t("signing.pdf.not_discharged"),
        ),  # NGAY_RA
        *_icd_lines(session, enc),
    ]
    return details, visit


def _date_or_dash(value: dt.date | None) -> str:
    return value.strftime("%d/%m/%Y") if value is not None else "…"


def render_input(
    session: Session, doc: Document, version: DocumentVersion, code: str, config: SigningConfig
) -> RenderInput:
    """Everything the PDF of ``version`` prints: content in the form's order with choices by their label,
    an amendment's notice, and a discharge paper's stay (:func:`_discharge_lines`)."""
    patient = session.get(Patient, doc.patient_id)
    enc = session.get(Encounter, doc.encounter_id)
    dep = session.get(Department, enc.department_id) if enc else None
    sections = content_lines(doc.form_type, json.loads(version.content_json))
    extra = [t("signing.pdf.content_sha256", sha=version.content_sha256)]
    details: list[tuple[str, str]] = []
    visit: list[tuple[str, str]] = []
    on = local_day(version.created_at)  # the day the paper was written: its catalogue and the child's age
    if enc is not None and doc.form_type == "discharge_summary":
        details, visit = _discharge_lines(session, enc, patient, on)
    elif patient is not None and doc.form_type == "admission_note":  # the medical record's administrative part
        details = demographic_lines(session, patient, on, religion=False)
    elif enc is not None:
        extra.insert(0, t("signing.pdf.visit", code=enc.visit_code))
    title = t(f"documents.form.{doc.form_type}")
    exam = _exam_lines(session, doc)
    if exam:  # a report is issued by the reading department, not the visit's
        author = session.get(User, version.created_by)
        issuing = session.get(Department, author.department_id) if author and author.department_id else None
        dep = issuing or dep
    birth: dt.date | str | None = None
    if patient is not None:
        birth = str(patient.birth_date.year) if patient.birth_year_only else patient.birth_date
    return RenderInput(
        hospital_name=config.hospital_name,
        department=dep.name if dep else "",
        exam=exam,
        patient_name=patient.full_name if patient else "",
        patient_code=patient.code if patient else "",
        patient_birth_date=birth,
        patient_sex=(patient.sex if patient else "U") or "U",
        patient_details=details,
        visit=visit,
        notice=_amendment_notice(session, version),
        title=title,
        document_type=title,
        version=version.number,
        sections=sections,
        extra_lines=extra,
        signers=[
            SignerSlot(s.field_name, _slot_label(s.who), _signer_name(session, doc, version, s))
            for s in slots_for(doc.form_type)
        ],
        verification_code=code,
        public_url=config.public_url,
        created_at=version.created_at.replace(tzinfo=dt.UTC),
    )


def _render(session: Session, doc: Document, version: DocumentVersion, code: str, config: SigningConfig) -> bytes:
    return render_document_pdf(render_input(session, doc, version, code, config))


def _open_signer(key: SigningKey, secret: str, config: SigningConfig, chain: Sequence[x509.Certificate]) -> Any:
    if key.kind == "pkcs12":
        from contextlib import nullcontext

        return nullcontext(load_pkcs12_signer(key.p12_data or b"", secret, extra_chain=chain))
    if config.softhsm2_conf is not None and os.environ.get("SOFTHSM2_CONF") != str(config.softhsm2_conf):
        # SoftHSM reads SOFTHSM2_CONF once, when the PKCS#11 module is first loaded.
        os.environ["SOFTHSM2_CONF"] = str(config.softhsm2_conf)
    return open_token_signer(
        key.token_label or "", secret, key.key_label or "", lib_path=config.pkcs11_library, chain=chain
    )


def _stamp_heading(capacity: str | None) -> str | None:
    """The capacity line(s) stamped over the signature in the head's box, as the signature block of Decree
    30/2020/NĐ-CP Annex I sets them out (its name follows the signature, ``stamp_name``): "TRƯỞNG KHOA",
    "KT. TRƯỞNG KHOA / PHÓ TRƯỞNG KHOA", "Q. TRƯỞNG KHOA"."""
    return t(f"signing.stamp.{capacity}") if capacity in ("head", *SUBSTITUTE_CAPACITIES) else None


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


@timed_signing
def sign_document(
    session: Session,
    actor: Actor,
    document_id: int,
    config: SigningConfig,
    *,
    method: str,
    secret: str,
    expected_sha256: str,
) -> SignedArtifact:
    """Fill the next signature of the document's current version as ``actor``.

    ``expected_sha256`` is the content hash of the version the signer was
    shown (the signing form carries it): when the version's content differs
    now, :class:`ContentChanged` (409) is raised and nothing is signed. The
    version row is locked while signing, so a draft edit cannot slip in.

    Raises :class:`NotYourTurn` (wrong role or order), :class:`ValidationFailed`
    (no key of that kind registered), :class:`SigningError` (wrong PIN or
    password, certificate refused, TSA down) — in every case nothing changes
    except one audit row of the failure.
    """
    doc = get_or_404(session, Document, document_id, "document")
    user = get_or_404(session, User, actor.user_id or 0, "user")
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    version, artifact, slot = next_slot(session, doc)
    if slot is None:
        raise InvalidState("this version is fully signed", key="signing.error.complete")
    session.refresh(version, with_for_update=True)  # held until the signature is committed
    details: dict[str, Any] = {"version": version.number, "field": slot.field_name, "method": method}

    def audit_refusal(outcome: str, **extra: Any) -> None:
        """A refused or failed signature is on record, committed on its own."""
        audit.record(session, actor, "document.sign", outcome=outcome, patient_id=doc.patient_id,
                     object_type="document", object_id=doc.id, details={**details, **extra})
        session.commit()

    if not _may_fill(session, doc, version, slot, user):
        audit_refusal("denied")
        raise NotYourTurn(f"{user.username} may not sign {slot.field_name}", key=f"signing.error.turn.{slot.who}")
    own = signed_already(session, version, user.id)
    if own is not None:  # one person, one signature per paper: never both the treating physician's and the head's
        audit_refusal("denied", error="already_signed", signed_field=own.field_name)
        raise NotYourTurn(f"{user.username} already signed {own.field_name} of version {version.number}",
                          key="signing.error.already_signed")
    capacity: str | None = None
    if slot.who == "head":  # the head, or a deputy / acting head designated for today (emr.access.substitutes)
        enc = session.get(Encounter, doc.encounter_id)
        capacity = substitutes.head_capacity(session, user, enc.department_id if enc else None)
        details["capacity"] = capacity
    open_visit = discharge_pending(session, doc)
    if open_visit is not None:
        visit_id = open_visit.id
        session.rollback()
        audit_refusal("failure", error="visit_not_discharged", encounter_id=visit_id)
        raise InvalidState(f"visit {visit_id} of discharge paper {doc.id} is not closed",
                           key="signing.error.not_discharged")
    if not isinstance(expected_sha256, str) or not hmac.compare_digest(
        expected_sha256.strip().lower().encode(), version.content_sha256.encode()
    ):
        session.rollback()
        audit_refusal("failure", error="content_changed", shown_sha256=str(expected_sha256)[:64],
                      current_sha256=version.content_sha256)
        raise ContentChanged(
            f"document {doc.id} v{version.number} changed since it was shown", key="signing.error.content_changed"
        )
    if method not in ("pkcs11", "pkcs12"):
        raise ValidationFailed({"method": "signing.error.method"})
    key = _active_key(session, user.id, method)
    if key is None:
        raise ValidationFailed({"secret": f"signing.error.no_key.{method}"})
    if not secret:
        raise ValidationFailed({"secret": "signing.error.secret_required"})
    first = artifact is None
    code = artifact.verification_code if artifact else secrets.token_urlsafe(24)
    try:
        context = config.context()
        pdf = bytes(artifact.pdf) if artifact else _render(session, doc, version, code, config)
        with _open_signer(key, secret, config, list(context.trust_anchors)) as signer:
            signed = sign_pdf(pdf, slot.field_name, signer, context, reason=capacity_label(capacity, slot.who),
                              stamp_heading=_stamp_heading(capacity),
                              stamp_name=user.full_name if slot.who == "head" else None)
            cms = sign_json(json.loads(version.content_json), signer, context)
            cert = signer.certificate
    except SigningError as exc:
        session.rollback()
        audit_refusal("failure", error=exc.key)
        raise
    report = verify_pdf(signed, list(context.trust_anchors), crls=list(context.crls))
    mine = next((s for s in report.signatures if s.field_name == slot.field_name), None)
    digest = hashlib.sha256(signed).hexdigest()
    now = utcnow()
    if first:
        artifact = SignedArtifact(
            version_id=version.id,
            document_id=doc.id,
            verification_code=code,
            pdf=signed,
            pdf_sha256=digest,
            content_sha256=version.content_sha256,
            signatures_required=len(slots_for(doc.form_type)),
            signatures_done=0,
            created_at=now,
            updated_at=now,
        )
        session.add(artifact)
    assert artifact is not None
    artifact.pdf = signed
    artifact.pdf_sha256 = digest
    artifact.signatures_done += 1
    artifact.complete = artifact.signatures_done >= artifact.signatures_required
    artifact.updated_at = now
    session.flush()
    session.add(
        DocumentSignature(
            artifact_id=artifact.id,
            version_id=version.id,
            order_index=artifact.signatures_done,
            field_name=slot.field_name,
            signer_role=slot.who,
            signer_id=user.id,
            capacity=capacity,
            method=key.kind,
            cert_subject=cert.subject.rfc4514_string(),
            cert_serial=format(cert.serial_number, "x"),
            signed_at=now,
            timestamp_at=_naive_utc(mine.timestamp_time if mine else None),
            pdf_length=len(signed),
            pdf_sha256=digest,
            cms=cms,
        )
    )
    audit.record(
        session,
        actor,
        "document.sign_step",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={
            **details,
            "pdf_sha256": digest,
            "serial": format(cert.serial_number, "x"),
            "complete": artifact.complete,
        },
    )
    if artifact.complete and doc.form_type == "radiology_report":
        for hook in config.on_report_signed:  # same transaction: nothing signed goes unsent
            hook(session, actor, doc, artifact)
    if first:  # locks the version (signed, or "signing" until the last slot is filled); commits
        documents.mark_signed(session, actor, doc.id, version.number, complete=artifact.complete)
    elif artifact.complete:
        documents.complete_signing(session, actor, doc.id, version.number)  # commits
    else:
        session.commit()
    if artifact.complete and doc.form_type == "radiology_report" and config.store is not None:
        _store_in_pacs(session, actor, doc, artifact, config)
    return artifact


def _study_tags(session: Session, doc: Document) -> dict[str, Any] | None:
    order = session.get(ImagingOrder, doc.order_id) if doc.order_id else None
    if order is None:
        return None
    study = session.scalars(select(Study).where(Study.order_id == order.id)).first()
    patient = session.get(Patient, doc.patient_id)
    tags: dict[str, Any] = {
        "StudyInstanceUID": study.study_instance_uid if study else order.study_instance_uid,
        "AccessionNumber": order.accession_number,
        "PatientID": (study.dicom_patient_id if study and study.dicom_patient_id else None)
        or (patient.code if patient else None),
        "StudyDate": study.study_date if study and study.study_date else "",
        "StudyDescription": order.procedure_name[:64] if order.procedure_name else "",
    }
    if study is not None and study.dicom_patient_name:
        tags["PatientName"] = study.dicom_patient_name
    if patient is not None:
        tags["PatientBirthDate"] = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
        tags["PatientSex"] = patient.sex if patient.sex in ("M", "F", "O") else ""
    return tags


def store_in_pacs(session: Session, actor: Actor, document_id: int, config: SigningConfig) -> bool:
    """(Re)send the current version's fully signed report to the PACS; True when stored."""
    doc = get_or_404(session, Document, document_id, "document")
    artifact = artifact_for(session, _current(doc).id)
    if artifact is None or not artifact.complete or config.store is None:
        return False
    _store_in_pacs(session, actor, doc, artifact, config)
    return artifact.pacs_error is None


def _store_in_pacs(
    session: Session, actor: Actor, doc: Document, artifact: SignedArtifact, config: SigningConfig
) -> None:
    """Send the fully signed report into its study as DICOM Encapsulated PDF; failures are recorded, not raised
    (the signature stands; an admin can resend)."""
    tags = _study_tags(session, doc)
    try:
        if tags is None:
            raise InvalidState("report has no imaging order", key="signing.error.no_study")
        version = session.get(DocumentVersion, artifact.version_id)
        dicom = encapsulate_pdf(
            bytes(artifact.pdf),
            tags,
            title=t("documents.form.radiology_report"),
            instance_number=version.number if version else 1,
        )
        result = config.store.upload(dicom)
    except Exception as exc:  # noqa: BLE001 - any store failure is recorded and shown
        artifact.pacs_error = str(exc)[:500]
        audit.record(
            session,
            actor,
            "document.pacs_store",
            outcome="failure",
            patient_id=doc.patient_id,
            object_type="document",
            object_id=doc.id,
            details={"error": str(exc)[:200]},
        )
        session.commit()
        return
    import io

    from pydicom import dcmread

    artifact.pacs_sop_instance_uid = str(dcmread(io.BytesIO(dicom), stop_before_pixels=True).SOPInstanceUID)
    artifact.pacs_instance_id = result.instance_id
    artifact.pacs_stored_at = utcnow()
    artifact.pacs_error = None
    audit.record(
        session,
        actor,
        "document.pacs_store",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"instance": result.instance_id, "study": tags["StudyInstanceUID"]},
    )
    session.commit()


# -- overview, verification -------------------------------------------------------


def signing_overview(session: Session, doc: Document) -> dict[int, dict[str, Any]]:
    """Per version number: signatures so far, what is still missing, verification code."""
    out: dict[int, dict[str, Any]] = {}
    slots = slots_for(doc.form_type)
    for v in doc.versions:
        artifact = artifact_for(session, v.id)
        sigs = list(artifact.signatures) if artifact else []
        names = {
            u.id: u.full_name for u in session.scalars(select(User).where(User.id.in_([s.signer_id for s in sigs])))
        }
        out[v.number] = {
            "artifact": artifact,
            "signatures": [
                {
                    "slot": capacity_label(s.capacity, s.signer_role),
                    "name": names.get(s.signer_id, ""),
                    "at": s.signed_at,
                    "timestamp": s.timestamp_at,
                    "method": s.method,
                    "serial": s.cert_serial,
                }
                for s in sigs
            ],
            "missing": [_slot_label(s.who) for s in slots[len(sigs) :]] if v.status != "superseded" or sigs else [],
            "complete": bool(artifact and artifact.complete),
        }
    return out


# The standing of a verified version, apart from its signatures being intact (a printout outlives its version):
# current: the document's signed version in force; superseded: a later version of it is signed;
# cancelled: the document was cancelled; incomplete: required signatures are still missing.
STANDINGS = ("current", "superseded", "cancelled", "incomplete")


@dataclass
class CodeVerification:
    valid: bool  # signatures intact AND the version is the document's one in force (standing "current")
    code: str
    document_id: int
    version_number: int
    form_type: str
    stored_sha256: str
    actual_sha256: str
    content_ok: bool
    cms_ok: bool
    complete: bool
    signatures_valid: bool = False  # the file, its signatures and the stored rows check out
    standing: str = "current"
    standing_message: str = ""  # the Vietnamese sentence the page shows (empty for "current")
    cancelled_at: dt.datetime | None = None
    superseded_by: dict[str, Any] | None = None  # {"version": n, "signed_at": ...}
    pending_amendment: int | None = None  # a later version not signed yet (this one stays in force)
    missing: list[str] = field(default_factory=list)  # slots still to sign (standing "incomplete")
    problems: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    patient: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v

        out = {k: value(getattr(self, k)) for k in self.__dataclass_fields__}
        out["signatures"] = [{k: value(v) for k, v in s.items()} for s in self.signatures]
        if self.superseded_by is not None:
            out["superseded_by"] = {k: value(v) for k, v in self.superseded_by.items()}
        if out["patient"] is not None:
            out["patient"] = {k: value(v) for k, v in out["patient"].items()}
        else:
            out.pop("patient")
        return out


def _day(value: dt.datetime | None) -> str:
    return to_local(value).strftime("%d/%m/%Y") if value is not None else "?"


def _standing(
    doc: Document, version: DocumentVersion, artifact: SignedArtifact
) -> tuple[str, str, dict[str, Any] | None, int | None, list[str]]:
    """(standing, its sentence, the signed version that replaced this one, a later unsigned one, missing slots)."""
    later = [v for v in doc.versions if v.number > version.number and v.status != "discarded"]
    replaced = max((v for v in later if v.locked and v.signed_at is not None), key=lambda v: v.number, default=None)
    missing = [] if artifact.complete else [_slot_label(s.who) for s in slots_for(doc.form_type)[
        artifact.signatures_done:]]
    superseded_by = {"version": replaced.number, "signed_at": replaced.signed_at} if replaced else None
    if doc.status == "cancelled":
        return ("cancelled", t("signing.verify.standing.cancelled", date=_day(doc.cancelled_at)), superseded_by,
                None, missing)
    if replaced is not None:
        message = t("signing.verify.standing.superseded", version=replaced.number, date=_day(replaced.signed_at))
        return "superseded", message, superseded_by, None, missing
    if missing:
        return "incomplete", t("signing.verify.standing.incomplete", slots=", ".join(missing)), None, None, missing
    pending = max((v.number for v in later), default=None)
    message = t("signing.verify.standing.pending", version=pending) if pending is not None else ""
    return "current", message, None, pending, []


def verify_code(
    session: Session, code: str, config: SigningConfig, actor: Actor, *, with_patient: bool = False, via: str = "page"
) -> CodeVerification | None:
    """Everything ``/verify/<code>`` shows; ``None`` for an unknown code. Patient data only if asked.

    Whoever holds the code (printed on the paper) learns which patient's document it is, so every
    answer is audited (``document.verify``: the user, or an anonymous actor with its address)."""
    if not code or len(code) > 64:
        return None
    artifact = session.scalar(select(SignedArtifact).where(SignedArtifact.verification_code == code))
    if artifact is None:
        return None
    version = session.get(DocumentVersion, artifact.version_id)
    doc = session.get(Document, artifact.document_id)
    assert version is not None and doc is not None
    result = _verify_artifact(session, code, artifact, doc, version, config, with_patient)
    _audit_verification(session, actor, doc, version, via, result.valid, result.standing,
                        patient_shown=result.patient is not None)
    return result


def _audit_verification(
    session: Session, actor: Actor, doc: Document, version: DocumentVersion, via: str, valid: bool, standing: str,
    **extra: Any,
) -> None:
    """A check of a signed document shows it (and its patient on the page): audited like any view."""
    audit.record(
        session,
        actor,
        "document.verify",
        patient_id=doc.patient_id,
        object_type="document",
        object_id=doc.id,
        details={"version": version.number, "via": via, "valid": valid, "standing": standing, **extra},
    )
    session.commit()


def _verify_artifact(
    session: Session,
    code: str,
    artifact: SignedArtifact,
    doc: Document,
    version: DocumentVersion,
    config: SigningConfig,
    with_patient: bool,
) -> CodeVerification:
    pdf = bytes(artifact.pdf)
    actual = hashlib.sha256(pdf).hexdigest()
    anchors, crls = config.anchors(), config.crls()
    report = verify_pdf(pdf, anchors, crls=crls)
    problems = list(report.problems)
    if actual != artifact.pdf_sha256:
        problems.append("signing.verify.stored_hash")
    content_ok = (
        hashlib.sha256(version.content_json.encode()).hexdigest() == version.content_sha256 == artifact.content_sha256
    )
    if not content_ok:
        problems.append("signing.verify.content_changed")
    rows = list(artifact.signatures)
    cms_ok = bool(rows)
    for signed_row in rows:
        r = verify_json_signature(json.loads(version.content_json), bytes(signed_row.cms), anchors, crls=crls)
        cms_ok = cms_ok and r.valid
    if not cms_ok:
        problems.append("signing.verify.cms_invalid")
    if len(report.signatures) != len(rows) or any(
        s.certificate_serial != r.cert_serial for s, r in zip(report.signatures, rows, strict=False)
    ):
        problems.append("signing.verify.rows_mismatch")
    names = {u.id: u.full_name for u in session.scalars(select(User).where(User.id.in_([r.signer_id for r in rows])))}
    sigs = []
    for i, s in enumerate(report.signatures):
        row = rows[i] if i < len(rows) else None
        sigs.append(
            {
                "field": s.field_name,
                "role": capacity_label(row.capacity, row.signer_role) if row else "",
                "signer_name": s.signer_name,
                "signer_user": names.get(row.signer_id, "") if row else "",
                "signing_time": s.signing_time,
                "timestamp_time": s.timestamp_time,
                "chain_status": s.chain_status,
                "valid": s.valid,
                "problems": list(s.problems),
            }
        )
    patient = None
    if with_patient:  # what the paper's face shows, no more
        p = session.get(Patient, doc.patient_id)
        if p is not None:
            patient = {"name": p.full_name, "code": p.code, "birth_date": p.birth_date}
    signatures_valid = report.valid and not problems
    standing, message, superseded_by, pending, missing = _standing(doc, version, artifact)
    return CodeVerification(
        valid=signatures_valid and standing == "current",
        code=code,
        document_id=doc.id,
        version_number=version.number,
        form_type=doc.form_type,
        stored_sha256=artifact.pdf_sha256,
        actual_sha256=actual,
        content_ok=content_ok,
        cms_ok=cms_ok,
        complete=artifact.complete,
        signatures_valid=signatures_valid,
        standing=standing,
        standing_message=message,
        cancelled_at=doc.cancelled_at if standing == "cancelled" else None,
        superseded_by=superseded_by,
        pending_amendment=pending,
        missing=missing,
        problems=problems,
        signatures=sigs,
        patient=patient,
    )


def verify_uploaded_pdf(session: Session, data: bytes, config: SigningConfig, actor: Actor) -> dict[str, Any]:
    """A PDF someone holds: its signatures, and whether it is a file this hospital issued (then audited
    as a verification of that document, like its code)."""
    report = verify_pdf(data, config.anchors(), crls=config.crls())
    digest = report.sha256
    known = session.scalar(select(SignedArtifact).where(SignedArtifact.pdf_sha256 == digest))
    out = report.as_dict()
    out["issued_here"] = known is not None
    if known is not None:
        out["verification_code"] = known.verification_code
        doc = session.get(Document, known.document_id)
        version = session.get(DocumentVersion, known.version_id)
        if doc is not None and version is not None:
            standing, message, _by, _pending, _missing = _standing(doc, version, known)
            out |= {"signatures_valid": report.valid, "valid": report.valid and standing == "current",
                    "standing": standing, "standing_message": message}
            _audit_verification(session, actor, doc, version, "upload", out["valid"], standing)
    return out


# -- exports -----------------------------------------------------------------------


class DbArtifacts:
    """The exports' :class:`emr.exports.ArtifactSource`, reading what this workflow stored."""

    def signed_pdf(self, document: Document, version: DocumentVersion) -> bytes | None:
        session = object_session(version)
        artifact = artifact_for(session, version.id) if session is not None else None
        return bytes(artifact.pdf) if artifact is not None else None

    def version_cms(self, document: Document, version: DocumentVersion) -> bytes | None:
        session = object_session(version)
        if session is None:
            return None
        row = session.scalars(
            select(DocumentSignature)
            .where(DocumentSignature.version_id == version.id)
            .order_by(DocumentSignature.order_index)
        ).first()
        return bytes(row.cms) if row is not None else None


# -- retention ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionRow:
    document_id: int
    patient_id: int
    form_type: str
    record_type: str
    closed_at: dt.date
    keep_until: dt.date


def past_retention(session: Session, today: dt.date | None = None) -> list[RetentionRow]:
    """Documents of closed encounters whose retention period ended before ``today``. Nothing is deleted."""
    today = today or local_today()
    rows = []
    query = (
        select(Document, Encounter)
        .join(Encounter, Encounter.id == Document.encounter_id)
        .where(Encounter.closed_at.is_not(None))
        .order_by(Encounter.closed_at, Document.id)
    )
    for doc, enc in session.execute(query):
        assert enc.closed_at is not None  # the query keeps closed encounters only
        closed = local_day(enc.closed_at)
        until = retention_until(doc.record_type or enc.record_type, closed)
        if until is not None and until < today:
            rows.append(RetentionRow(doc.id, doc.patient_id, doc.form_type, doc.record_type, closed, until))
    return rows
