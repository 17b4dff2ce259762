"""Identity coercion for the gateway: the patient tags of the order an arriving study belongs to.

The gateway rewrites PatientID/PatientName/… of incoming images to the EMR's
values (IHE SWF "patient information reconciliation"); the EMR is the
authority on who the patient is.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.imaging.order_lookup import find_order
from emr.imaging.worklist import dicom_name
from emr.models import ImagingOrder, Patient

__all__ = ["identity_provider", "order_identity"]


def identity_provider(settings: EmrSettings) -> Callable[[str, str], dict[str, str] | None]:
    """Callable for the gateway's identity coercion: (accession, study UID) → the order's patient tags."""
    factory = make_session_factory(make_engine(settings.database_url))

    def identity(accession_number: str, study_instance_uid: str) -> dict[str, str] | None:
        with factory() as session:
            order, _ = find_order(session, accession_number, study_instance_uid)
            return order_identity(session, order) if order is not None else None

    return identity


def order_identity(session: Session, order: ImagingOrder) -> dict[str, str] | None:
    """The patient tags the PACS copy of an order's study carries: the EMR's, not the modality's
    (the gateway applies them on arrival, a manual link applies them to the stored copy)."""
    patient = session.get(Patient, order.patient_id)
    if patient is None:
        return None
    return {
        "PatientID": patient.code,
        "PatientName": dicom_name(patient.family_name, patient.given_name),
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d"),
        "PatientSex": patient.sex,
    }
