"""The identity reconciliation queue: a person decides what to do with each mismatch.

Three decisions, each audited with who, when and why:

* ``accept_national`` — the patient takes the national name, birth date and sex,
  through :func:`emr.patients.service.update_patient` (the same validation and
  ``patient.update`` audit row with the values before, so the earlier version
  stays in the record's history); the values come from the stored answer of
  the gateway, never from the form.
* ``keep_local`` — the local record stands (e.g. the national record is known to be wrong).
* ``escalated`` — handed to an administrator; the item stays open, and only an
  administrator may close it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.exceptions import InvalidState, NotFoundError, PermissionDenied, ValidationFailed
from emr.core.identity_match import parse_birth
from emr.patients import service as patients

from ..models import DECISIONS, IdentityCheck, Patient, User, utcnow
from .adapter import configured
from .checks import check_now, open_item, recent_match

__all__ = ["QueueItem", "queue", "decide", "export_problems", "DECISIONS_BY_ROLE"]

# Which decision each role may take; escalated items are closed by an administrator only.
DECISIONS_BY_ROLE: dict[str, frozenset[str]] = {
    "records_clerk": frozenset({"accept_national", "keep_local", "escalated"}),
    "admin": frozenset({"accept_national", "keep_local"}),
}
_OPEN = ("mismatch", "not_found")


@dataclass
class QueueItem:
    check: IdentityCheck
    patient: Patient
    decided_by: str | None


def queue(session: Session, actor: Actor, *, escalated_only: bool = False, limit: int = 200) -> list[QueueItem]:
    """Open items, oldest first (audited: the list shows names and CCCDs)."""
    stmt = (
        select(IdentityCheck, Patient, User.username)
        .join(Patient, Patient.id == IdentityCheck.patient_id)
        .outerjoin(User, User.id == IdentityCheck.decided_by_id)
        .where(IdentityCheck.resolved.is_(False), IdentityCheck.status.in_(_OPEN))
        .order_by(IdentityCheck.checked_at, IdentityCheck.id)
        .limit(limit)
    )
    if escalated_only:
        stmt = stmt.where(IdentityCheck.decision == "escalated")
    items = [QueueItem(c, p, u) for c, p, u in session.execute(stmt)]
    audit.record(
        session, actor, "identity.queue", object_type="identity_check", details={"shown": [i.check.id for i in items]}
    )
    session.commit()
    return items


def _national_values(patient: Patient, check: IdentityCheck) -> dict[str, Any]:
    """The patient's current fields with name, birth date and sex from the stored national answer."""
    assert check.national_name and check.national_birth and check.national_sex
    born, year = parse_birth(check.national_birth)
    data: dict[str, Any] = {
        name: getattr(patient, name)
        for name in (
            "cccd", "bhyt_number", "bhyt_valid_from", "bhyt_valid_to", "bhyt_registered_facility", "address",
            "province_code", "district_code", "ward_code", "phone", "ethnicity_code", "nationality_code",
            "occupation_code", "blood_type", "religion_code", "health_id", "father_name", "mother_name",
            "guardian_name",
        )
    }
    data.update(
        full_name=check.national_name,
        birth_date=born or date(year, 1, 1),
        birth_year_only=born is None,
        sex=check.national_sex,
    )
    return data


def _refuse(session: Session, actor: Actor, check_id: int, decision: str, patient_id: int | None = None) -> None:
    """Audit a decision the actor may not take, then refuse it."""
    session.rollback()
    audit.record(
        session,
        actor,
        "identity.decide",
        outcome="failure",
        patient_id=patient_id,
        object_type="identity_check",
        object_id=check_id,
        details={"decision": decision, "refused": "role"},
    )
    session.commit()
    raise PermissionDenied(f"identity.decide:{decision}")


def decide(session: Session, actor: Actor, check_id: int, decision: str, reason: str) -> IdentityCheck:
    """Record a decision on an open item (the reason is required); raises on a closed or foreign item."""
    reason = reason.strip()
    if decision not in DECISIONS:
        raise ValidationFailed({"decision": "identity.error.decision"})
    if decision not in DECISIONS_BY_ROLE.get(actor.role or "", frozenset()):
        _refuse(session, actor, check_id, decision)
    if not reason:
        raise ValidationFailed({"reason": "errors.field_required"})
    check = session.get(IdentityCheck, check_id)
    if check is None or check.status not in _OPEN:
        raise NotFoundError("identity_check", check_id)
    if check.resolved:
        raise InvalidState("already decided", key="identity.error.decided")
    if check.decision == "escalated" and actor.role != "admin":
        _refuse(session, actor, check_id, decision, patient_id=check.patient_id)
    if decision == "accept_national" and check.status == "not_found":
        raise ValidationFailed({"decision": "identity.error.nothing_to_accept"})
    patient = session.get(Patient, check.patient_id)
    assert patient is not None
    before = {"full_name": patient.full_name, "birth": check.local_birth, "sex": patient.sex}
    details: dict[str, Any] = {"decision": decision, "reason": reason[:1000], "differences": check.differences}
    if decision == "accept_national":
        # update_patient validates and audits patient.update with the values before (one transaction).
        patients.update_patient(
            session, actor, patient.id, _national_values(patient, check), recheck_identity=False, commit=False
        )
        details["before"] = before
        details["after"] = {"full_name": check.national_name, "birth": check.national_birth, "sex": check.national_sex}
    check.decision = decision
    check.decided_by_id = actor.user_id
    check.decided_at = utcnow()
    check.decision_reason = reason[:1000]
    check.resolved = decision != "escalated"
    audit.record(
        session,
        actor,
        f"identity.{decision}",
        patient_id=patient.id,
        object_type="identity_check",
        object_id=check.id,
        details=details,
    )
    session.commit()
    return check


def export_problems(session: Session, actor: Actor, patient_id: int, recheck: timedelta) -> list[str]:
    """Catalogue keys of what stops an export on identity grounds (empty: go ahead).

    An open reconciliation item stops it. Otherwise, when the last match is older than
    ``recheck``, the gateway is asked now with the short timeout: a mismatch stops the
    export (and joins the queue); a gateway that cannot answer does not — the check stays
    queued and the export goes on, as registration does.
    """
    patient = session.get(Patient, patient_id)
    if patient is None:
        return []
    if open_item(session, patient_id) is not None:
        return ["identity.problem.open"]
    if configured() is None or recent_match(session, patient_id, recheck):
        return []
    check = check_now(session, actor, patient, "export")
    session.commit()
    if check is not None and check.status in _OPEN:
        return ["identity.problem.mismatch" if check.status == "mismatch" else "identity.problem.not_found"]
    return []
