"""The visit (encounter) an imaging order belongs to.

A report is a record document and every record document lives in a visit
(Circular 13/2025: the visit is MA_LK, the unit of the record and of the
insurance claim). An order placed from the chart without choosing a visit is
therefore attached when it is placed: to the patient's open visit, or to a new
outpatient visit in the ordering physician's department. So the radiologist
can always report what was ordered, without a step the order form never showed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.exceptions import ValidationFailed
from emr.models import Department, Encounter, ImagingOrder, Patient, User
from emr.patients.encounters import ATTENDING_ROLES

__all__ = ["visit_for_new_order", "visit_for_report"]



def _open_visit(session: Session, patient_id: int) -> Encounter | None:
    """The patient's most recent open visit (the one the order is most likely part of)."""
    return session.scalar(
        select(Encounter)
        .where(Encounter.patient_id == patient_id, Encounter.status == "open")
        .order_by(Encounter.admitted_at.desc(), Encounter.id.desc())
        .limit(1)
    )


def _new_visit(session: Session, actor: Actor, patient: Patient, user: User | None) -> Encounter | None:
    """A new outpatient visit in ``user``'s department with ``user`` attending (None when that
    user is no physician or has no department). Audited by the encounter service."""
    from emr.patients.encounters import create_encounter  # the encounter service owns visit creation and its audit

    if user is None or not user.active or user.role not in ATTENDING_ROLES or user.department_id is None:
        return None
    department = session.get(Department, user.department_id)
    if department is None:
        return None
    return create_encounter(
        session,
        actor,
        {
            "patient_id": patient.id,
            "kind": "outpatient",
            "department_code": department.code,
            "attending_username": user.username,
        },
    )


def visit_for_new_order(session: Session, actor: Actor, patient: Patient) -> Encounter | None:
    """The visit an order placed without choosing one joins: the patient's open visit, else a new
    outpatient visit in the ordering physician's department. None only when the ordering account
    belongs to no department (the report then opens the visit, see :func:`visit_for_report`)."""
    existing = _open_visit(session, patient.id)
    if existing is not None:
        return existing
    user = session.get(User, actor.user_id) if actor.user_id else None
    return _new_visit(session, actor, patient, user)


def visit_for_report(session: Session, actor: Actor, order: ImagingOrder) -> Encounter:
    """The visit a report on ``order`` is written in; the order is attached to it.

    The order's own visit; for an order that has none (placed before orders were
    attached to visits, or by an account without a department): the patient's open
    visit, else their latest visit, else a new outpatient visit in the ordering
    physician's or the reporting radiologist's department.
    """
    enc = session.get(Encounter, order.encounter_id) if order.encounter_id is not None else None
    if enc is None or enc.status == "cancelled":
        enc = _open_visit(session, order.patient_id) or session.scalar(
            select(Encounter)
            .where(Encounter.patient_id == order.patient_id, Encounter.status != "cancelled")
            .order_by(Encounter.admitted_at.desc(), Encounter.id.desc())
            .limit(1)
        )
    if enc is None:
        patient = session.get(Patient, order.patient_id)
        if patient is not None:
            for user_id in (order.ordered_by, actor.user_id):
                enc = _new_visit(session, actor, patient, session.get(User, user_id) if user_id else None)
                if enc is not None:
                    break
    if enc is None:
        raise ValidationFailed({"encounter_id": "orders.error.visit_needed"})
    if order.encounter_id != enc.id:
        order.encounter_id = enc.id
        if order.department_id is None:
            order.department_id = enc.department_id
        session.flush()
    return enc
