"""Linking studies that arrive in Orthanc to their imaging orders.

The linker follows Orthanc's changes feed from the last sequence number it
stored, so it is idempotent across restarts and loses nothing while Orthanc
or the EMR is down: unprocessed changes stay in the feed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import SYSTEM, Actor
from emr.core.dicom_dates import normalise_da
from emr.core.exceptions import InvalidState, ValidationFailed
from emr.core.states import OrderStatus, StudyState, after_images_linked
from emr.imaging.order_lookup import find_order
from emr.models.lookup import get_or_404
from storage import NotFound, StorageError, StudySummary

from ..models import ImagingOrder, LinkerState, Study, utcnow

__all__ = [
    "LinkResult",
    "apply_emr_identity",
    "link_new_studies",
    "link_study_manually",
    "list_unmatched",
    "STUDY_CHANGES",
]

log = logging.getLogger(__name__)

STUDY_CHANGES = ("NewStudy", "StableStudy")


@dataclass
class LinkResult:
    processed: int = 0
    linked: int = 0
    unmatched: int = 0
    last_seq: int = 0
    error: str | None = None
    unmatched_ids: list[int] = field(default_factory=list)  # Study ids left unmatched by this pass


def _state(session: Session) -> LinkerState:
    state = session.get(LinkerState, 1)
    if state is None:
        state = LinkerState(id=1, last_seq=0)
        session.add(state)
        session.flush()
    return state


def reset_position(session: Session) -> None:
    """Read Orthanc's changes feed from the start again (after a restore)."""
    state = _state(session)
    state.last_seq = 0
    state.updated_at = utcnow()


def _find_order(session: Session, summary: StudySummary) -> tuple[ImagingOrder | None, str | None]:
    return find_order(session, summary.accession_number, summary.study_instance_uid)


def _attach(
    session: Session, actor: Actor, study: Study, order: ImagingOrder, method: str, reason: str | None = None
) -> None:
    study.order_id = order.id
    study.patient_id = order.patient_id
    study.state = StudyState.LINKED
    study.link_method = method
    study.linked_by = actor.user_id
    study.linked_at = utcnow()
    order.status = after_images_linked(order.status)
    if order.performed_at is None:
        order.performed_at = utcnow()
    audit.record(
        session,
        actor,
        "study.link",
        patient_id=order.patient_id,
        object_type="study",
        object_id=study.study_instance_uid,
        details={
            "order_id": order.id,
            "method": method,
            "orthanc_id": study.orthanc_id,
            **({"reason": reason} if reason else {}),
        },
    )


def _tag_in_orthanc(store: Any, study: Study) -> None:
    """Best effort: the link lives in the EMR; Orthanc metadata is a convenience for other tools."""
    try:
        store.set_study_metadata(study.orthanc_id, "FilmlessOrderId", str(study.order_id or ""))
        store.set_study_metadata(study.orthanc_id, "FilmlessPatientRef", str(study.patient_id or ""))
        store.set_study_metadata(study.orthanc_id, "FilmlessLinkState", study.state)
    except StorageError as exc:
        log.warning("could not tag study %s in Orthanc: %s", study.orthanc_id, exc)


def _replaced_copy_of(session: Session, summary: StudySummary) -> Study | None:
    """The manually linked study whose PACS copy Orthanc has just rewritten with the EMR identity.

    :func:`apply_emr_identity` gives the study a new Orthanc id; when the changes feed
    shows the new copy before that id is saved, this keeps it from becoming a second study.
    """
    if not summary.study_instance_uid or not summary.patient_id:
        return None
    for study in session.scalars(
        select(Study).where(
            Study.study_instance_uid == summary.study_instance_uid,
            Study.state == StudyState.LINKED,
            Study.link_method == "manual",
        )
    ):
        order = session.get(ImagingOrder, study.order_id) if study.order_id is not None else None
        if order is not None and summary.accession_number == order.accession_number:
            study.orthanc_id = summary.orthanc_id
            return study
    return None


def _upsert(session: Session, summary: StudySummary) -> Study:
    study = session.scalar(select(Study).where(Study.orthanc_id == summary.orthanc_id))
    if study is None:
        study = _replaced_copy_of(session, summary)
    if study is None:
        study = Study(
            orthanc_id=summary.orthanc_id, study_instance_uid=summary.study_instance_uid, state=StudyState.UNMATCHED
        )
        session.add(study)
    study.accession_number = summary.accession_number[:16] or None
    study.dicom_patient_id = summary.patient_id[:64] or None
    study.dicom_patient_name = summary.patient_name[:200] or None
    study.study_date = normalise_da(summary.study_date)
    study.modalities = "\\".join(summary.modalities)[:64] or None
    study.description = summary.study_description[:200] or None
    return study


def link_new_studies(session: Session, store: Any, *, page_size: int = 100, max_pages: int = 20) -> LinkResult:
    """Process Orthanc's changes after the stored sequence number; link or queue each study."""
    result = LinkResult()
    state = _state(session)
    session.commit()
    result.last_seq = state.last_seq
    for _ in range(max_pages):
        try:
            page = store.changes(since=state.last_seq, limit=page_size)
        except StorageError as exc:
            result.error = str(exc)
            return result
        touched: list[Study] = []
        seen: set[str] = set()
        for change in page.changes:
            if change.change_type not in STUDY_CHANGES or change.resource_id in seen:
                continue
            seen.add(change.resource_id)
            try:
                summary = store.get_study(change.resource_id)
            except NotFound:
                continue  # deleted since
            except StorageError as exc:
                session.rollback()
                result.error = str(exc)
                return result
            study = _upsert(session, summary)
            session.flush()
            result.processed += 1
            if study.state == StudyState.LINKED:
                continue
            order, method = _find_order(session, summary)
            if order is not None and method is not None:
                _attach(session, SYSTEM, study, order, method)
                result.linked += 1
                touched.append(study)
            elif study.id is not None and change.change_type == "NewStudy":
                audit.record(
                    session,
                    SYSTEM,
                    "study.unmatched",
                    object_type="study",
                    object_id=study.study_instance_uid,
                    details={"accession": study.accession_number, "orthanc_id": study.orthanc_id},
                )
                result.unmatched += 1
            else:
                result.unmatched += 1
            if study.state != StudyState.LINKED and study.id is not None:
                result.unmatched_ids.append(study.id)
        state.last_seq = page.last
        state.updated_at = utcnow()
        session.commit()
        result.last_seq = page.last
        for study in touched:
            _tag_in_orthanc(store, study)
        if page.done or not page.changes:
            break
    return result


def list_unmatched(session: Session) -> list[Study]:
    return list(session.scalars(select(Study).where(Study.state == StudyState.UNMATCHED).order_by(Study.first_seen_at)))


def link_study_manually(
    session: Session,
    actor: Actor,
    study_id: int,
    order_id: int,
    reason: str = "",
    store: Any = None,
    *,
    acknowledge_mismatch: bool = False,
) -> Study:
    """A records clerk links a queued study to an order (audited).

    A study whose modality or date disagrees with the order is linked only once the clerk
    has seen and confirmed the mismatch. After the link the PACS copy is given the EMR's
    identity and the order's accession number, as the gateway does for studies that
    arrive with a known accession number.
    """
    from .reconcile import link_mismatches

    study = get_or_404(session, Study, study_id, "study")
    order = get_or_404(session, ImagingOrder, order_id, "order")
    if study.state == StudyState.LINKED:
        raise InvalidState("study already linked", key="reconcile.error.already_linked")
    if order.status == OrderStatus.CANCELLED and not reason.strip():
        raise ValidationFailed({"reason": "reconcile.error.reason_cancelled"})
    mismatches = link_mismatches(study, order)
    if mismatches and not acknowledge_mismatch:
        raise ValidationFailed({"acknowledge_mismatch": "reconcile.error.mismatch_unconfirmed"})
    _attach(session, actor, study, order, "manual", reason=reason or None)
    if mismatches:
        audit.record(
            session,
            actor,
            "study.link_mismatch",
            patient_id=order.patient_id,
            object_type="study",
            object_id=study.study_instance_uid,
            details={"order_id": order.id, "mismatches": mismatches},
        )
    session.commit()
    if store is not None:
        apply_emr_identity(session, actor, store, study)
        _tag_in_orthanc(store, study)
    return study


def apply_emr_identity(session: Session, actor: Actor, store: Any, study: Study) -> bool:
    """Give the stored study the EMR patient's identity and the order's accession number (audited).

    Best effort like the Orthanc tags: the link in the EMR is what counts; a failure is
    logged and audited, and the study keeps its Orthanc id until it can be retried.
    """
    from emr.imaging.identity import order_identity

    order = session.get(ImagingOrder, study.order_id) if study.order_id is not None else None
    tags = order_identity(session, order) if order is not None else None
    if order is None or tags is None:
        return False
    tags = {**tags, "AccessionNumber": order.accession_number}
    before = {"orthanc_id": study.orthanc_id, "patient_id": study.dicom_patient_id}
    try:
        new_id = store.replace_identity(study.orthanc_id, tags)
    except StorageError as exc:
        log.warning("could not apply the EMR identity to study %s in Orthanc: %s", study.orthanc_id, exc)
        audit.record(
            session,
            actor,
            "study.identity",
            outcome="failure",
            patient_id=order.patient_id,
            object_type="study",
            object_id=study.study_instance_uid,
            details={**before, "error": str(exc)[:300]},
        )
        session.commit()
        return False
    study.orthanc_id = new_id
    study.dicom_patient_id = tags["PatientID"]
    study.dicom_patient_name = tags["PatientName"]
    study.accession_number = order.accession_number
    audit.record(
        session,
        actor,
        "study.identity",
        patient_id=order.patient_id,
        object_type="study",
        object_id=study.study_instance_uid,
        details={"before": before, "after": {"orthanc_id": new_id, "patient_id": tags["PatientID"]}},
    )
    session.commit()
    return True
