"""Applying the care scope (rule in emr/access/permissions.py) wherever a patient's data is shown.

Why a service and not a decorator: the patient is known only once the
object (chart, encounter, document, order, study) is loaded, and the same
check must hold for the web UI, the JSON API and the DICOMweb proxy. Every
refusal is audited (``care.denied``) in its own transaction, then raised as
:class:`OutOfCareScope`; the UI answers it with the break-the-glass form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import QueryableAttribute, Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.permissions import CARE_SCOPED_ROLES, care_basis, patients_in_care, patients_in_care_select
from emr.core.exceptions import EmrError
from emr.models import Patient, User

__all__ = [
    "OutOfCareScope",
    "ensure_patient_access",
    "in_care_clause",
    "in_care_filter",
    "openable_patients",
    "user_of",
]


class OutOfCareScope(EmrError):
    """The patient is not in the user's care (no encounter, reading, schedule or break-the-glass)."""

    code = "out_of_care_scope"
    http_status = 403

    def __init__(self, patient_id: int) -> None:
        super().__init__("patient outside the user's care", key="care.error.out_of_scope")
        self.patient_id = patient_id


def user_of(session: Session, actor: Actor) -> User | None:
    """The acting user, when the actor is a person whose role is scoped (else None: nothing to check)."""
    if actor.user_id is None or actor.role not in CARE_SCOPED_ROLES:
        return None
    user = session.get(User, actor.user_id)
    return user if user is not None and user.role in CARE_SCOPED_ROLES else None


def ensure_patient_access(session: Session, actor: Actor, patient_id: int | None) -> str:
    """The basis on which ``actor`` may open ``patient_id``; audits and raises :class:`OutOfCareScope` if none."""
    if patient_id is None:
        return "none"
    user = user_of(session, actor)
    if user is None:
        return "role"
    basis = care_basis(session, user, patient_id)
    if basis is not None:
        return basis
    session.rollback()
    audit.record(
        session,
        actor,
        "care.denied",
        outcome="denied",
        patient_id=patient_id,
        object_type="patient",
        object_id=patient_id,
    )
    session.commit()
    raise OutOfCareScope(patient_id)


def in_care_filter(session: Session, actor: Actor) -> Callable[[int], bool]:
    """A predicate on patient ids for lists (worklists): True for every id when the role is not scoped."""
    user = user_of(session, actor)
    if user is None:
        return lambda _pid: True
    ids = patients_in_care(session, user) or set()
    return lambda pid: pid in ids


def in_care_clause(
    session: Session, actor: Actor, patient_id: ColumnElement[Any] | QueryableAttribute[Any]
) -> ColumnElement[bool] | None:
    """A WHERE condition on a list query's patient id column: only patients in the user's care, decided
    by the database, so a LIMIT never cuts lines the user may see to make room for ones they may not.
    None when the role is not scoped (every patient)."""
    user = user_of(session, actor)
    if user is None:
        return None
    scope = patients_in_care_select(user)
    return None if scope is None else patient_id.in_(scope)


def openable_patients(session: Session, actor: Actor, patient_ids: Iterable[int]) -> set[int]:
    """Which of ``patient_ids`` ``actor`` may open now (every one when the role is not scoped), in one query and
    without auditing: for a page that only decides whether to link a name to the chart (the chart itself
    still calls :func:`ensure_patient_access`)."""
    wanted = {int(pid) for pid in patient_ids}
    clause = in_care_clause(session, actor, Patient.id) if wanted else None
    if clause is None:
        return wanted
    return set(session.scalars(select(Patient.id).where(Patient.id.in_(wanted), clause)))
