"""Studies a registered facility's PACS sent us over C-STORE, with no announcement from a filmless EMR.

Any PACS can push a study to our gateway. The gateway notes the calling AE
title in Orthanc (study metadata ``FilmlessSenderAet``, written by
``pacs_gateway``'s forwarder); when the study linker leaves such a study
unmatched (no local order) and the AE title is an active site of the registry,
the study becomes a "received from other facilities" row: the patient is
matched from the DICOM header by CCCD (PatientID, or one of OtherPatientIDs
/ OtherPatientIDsSequence holding a 12-digit CCCD), then by name + birth date
when exactly one patient has them (:func:`.matching.match_patient`; never a
guess). :func:`.incoming.attach_received_studies` then links a matched study
to its patient, as for studies a filmless site announced.

A study some filmless site announced (a ``study`` row with the same Study
Instance UID) is left to that row. A local modality's AE title is not a site:
its studies stay in reconciliation as before.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.core.dicom_dates import normalise_da
from emr.core.states import StudyState
from emr.models import NetworkReceived, NetworkSite, Study

from .incoming import site_actor
from .matching import match_patient

__all__ = ["SENDER_KEY", "dicom_identity", "receive_pacs_studies"]

log = logging.getLogger(__name__)

SENDER_KEY = "FilmlessSenderAet"  # storage.METADATA_KEYS; written by pacs_gateway's forwarder
_SEX = {"M": "M", "F": "F", "O": "O"}


def _cccd(value: Any) -> str | None:
    text = str(value or "").strip()
    return text if len(text) == 12 and text.isdigit() else None


def _person_name(value: Any) -> str | None:
    """DICOM PN (PS3.5 6.2: family^given^middle^prefix^suffix, alphabetic group first) in the
    Vietnamese order family, middle, given; matching folds case and diacritics."""
    if isinstance(value, dict):  # Orthanc may give a PN as {"Alphabetic": ...}
        value = value.get("Alphabetic", "")
    groups = str(value or "").split("=")[0].split("^")
    parts = [groups[i].strip() for i in (0, 2, 1) if i < len(groups) and groups[i].strip()]
    return " ".join(parts)[:200] or None


def dicom_identity(tags: dict[str, Any]) -> tuple[str | None, str | None, date | None, str | None]:
    """(CCCD, full name, birth date, sex) from an instance's tags (Orthanc's simplified keywords)."""
    cccd = _cccd(tags.get("PatientID"))
    if cccd is None:
        others = tags.get("OtherPatientIDs") or ""
        values = others if isinstance(others, list) else str(others).split("\\")
        for item in tags.get("OtherPatientIDsSequence") or []:
            if isinstance(item, dict):
                values = [*values, item.get("PatientID")]
        cccd = next((c for c in map(_cccd, values) if c), None)
    born_da = normalise_da(str(tags.get("PatientBirthDate") or ""))
    try:
        born = date(int(born_da[:4]), int(born_da[4:6]), int(born_da[6:8])) if born_da else None
    except ValueError:
        born = None
    sex = _SEX.get(str(tags.get("PatientSex") or "").strip().upper())
    return cccd, _person_name(tags.get("PatientName")), born, sex


def _first_instance_tags(store: Any, orthanc_id: str) -> dict[str, Any] | None:
    for series in store.study_series(orthanc_id):
        for instance_id in series.get("Instances", [])[:1]:
            return store.instance_tags(str(instance_id))
    return None


def _receive_one(session: Session, store: Any, study: Study, sites: dict[str, NetworkSite]) -> bool:
    sender = (store.get_study_metadata(study.orthanc_id, SENDER_KEY) or "").strip()
    site = sites.get(sender)
    if site is None:
        return False  # a local modality, or nobody said
    announced = session.scalar(
        select(NetworkReceived.id).where(
            NetworkReceived.kind == "study", NetworkReceived.study_instance_uid == study.study_instance_uid
        ).limit(1)
    )
    if announced is not None:
        return False
    tags = _first_instance_tags(store, study.orthanc_id)
    if tags is None:
        return False
    cccd, name, born, sex = dicom_identity(tags)
    patient, method = match_patient(session, cccd, name, born)
    row = NetworkReceived(
        kind="study",
        site_id=site.id,
        remote_ref=f"c-store:{study.orthanc_id}"[:64],
        study_instance_uid=study.study_instance_uid[:64],
        patient_cccd=cccd,
        patient_name=name,
        patient_birth_date=born.isoformat() if born else None,
        patient_sex=sex,
        patient_id=patient.id if patient else None,
        match_method=method,
        modality=(study.modalities or "").split("\\")[0][:4] or None,
        procedure_name=study.description,
    )
    session.add(row)
    session.flush()
    audit.record(session, site_actor(site), "network.study.receive", patient_id=row.patient_id,
                 object_type="network_received", object_id=row.id,
                 details={"site": site.name, "ae_title": sender, "study": study.study_instance_uid,
                          "match": method, "via": "c-store"})
    return True


def receive_pacs_studies(session: Session, store: Any, study_ids: list[int]) -> int:
    """Turn unmatched studies a registered site's AE sent into received rows; run by the linker
    after each pass with the studies it left unmatched. Returns how many rows were added."""
    if not study_ids:
        return 0
    sites = {s.ae_title: s for s in session.scalars(select(NetworkSite).where(NetworkSite.active.is_(True)))}
    if not sites:
        return 0
    done = 0
    studies = session.scalars(
        select(Study).where(Study.id.in_(study_ids[:500]), Study.state == StudyState.UNMATCHED)
    )
    for study in studies:
        ref = f"c-store:{study.orthanc_id}"[:64]
        if session.scalar(select(NetworkReceived.id).where(NetworkReceived.remote_ref == ref).limit(1)):
            continue
        try:
            done += _receive_one(session, store, study, sites)
        except Exception as exc:  # noqa: BLE001 - Orthanc away: the study stays in reconciliation, logged
            log.warning("network: cannot check the sender of study %s: %s", study.study_instance_uid, exc)
    if done:
        session.commit()
    return done
