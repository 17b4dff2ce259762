"""Queue and run identity checks: registration never waits for the national gateway.

Registration (and any change of name, birth date, sex or CCCD) adds a
``queued`` :class:`IdentityCheck` in the same transaction as the patient, and
hands it to the durable outbox; the outbox worker calls :func:`run_check`
later, retrying with back-off while the gateway is down or slow. A check runs
at most once to a result: a check that is no longer ``queued`` is left alone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import SYSTEM, Actor
from emr.core.identity_match import NationalRecord, differences
from emr.outbox import DeliveryError, HandlerContext, OutboxMessage, enqueue

from ..models import IdentityCheck, Patient, utcnow
from .adapter import GatewayError, PopulationGateway, configured, valid_cccd

__all__ = [
    "OUTBOX_KIND", "queue_check", "deliver", "run_check", "check_now", "latest_check", "open_item", "recent_match"
]

OUTBOX_KIND = "identity.check"


def _birth(patient: Patient) -> str:
    return str(patient.birth_date.year) if patient.birth_year_only else patient.birth_date.isoformat()


def _national_birth(record: NationalRecord) -> str:
    return record.birth_date.isoformat() if record.birth_date else str(record.birth_year)


def open_item(session: Session, patient_id: int) -> IdentityCheck | None:
    """The patient's undecided (or escalated) reconciliation item, if any."""
    stmt = (
        select(IdentityCheck)
        .where(
            IdentityCheck.patient_id == patient_id,
            IdentityCheck.resolved.is_(False),
            IdentityCheck.status.in_(("mismatch", "not_found")),
        )
        .order_by(IdentityCheck.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def latest_check(session: Session, patient_id: int) -> IdentityCheck | None:
    stmt = select(IdentityCheck).where(IdentityCheck.patient_id == patient_id).order_by(IdentityCheck.id.desc())
    return session.scalar(stmt.limit(1))


def queue_check(session: Session, patient: Patient, trigger: str) -> IdentityCheck | None:
    """Queue a check of ``patient`` (the caller commits); None when checks are off or there is no valid CCCD.

    One queued check per patient at a time: a second registration-time change reuses it.
    """
    if configured() is None or not valid_cccd(patient.cccd):
        return None
    session.flush()
    waiting = session.scalar(
        select(IdentityCheck).where(IdentityCheck.patient_id == patient.id, IdentityCheck.status == "queued")
    )
    if waiting is not None:
        waiting.cccd = patient.cccd or waiting.cccd
        return waiting
    check = IdentityCheck(patient_id=patient.id, cccd=patient.cccd, trigger=trigger, status="queued", attempts=0)
    session.add(check)
    session.flush()
    _deliver_later(session, check)
    return check


def _deliver_later(session: Session, check: IdentityCheck) -> None:
    """Hand the check to the durable outbox (same transaction): it survives restarts and outages."""
    gateway = configured()
    enqueue(
        session,
        OUTBOX_KIND,
        f"identity-check:{check.id}",
        {"check_id": check.id},
        target=gateway.url if gateway else "population-database",
        patient_id=check.patient_id,
        subject=f"CCCD {check.cccd[:3]}…{check.cccd[-3:]}",
    )


def deliver(message: OutboxMessage, context: HandlerContext) -> str:
    """The outbox handler of :data:`OUTBOX_KIND`: run the check; a gateway that cannot answer now
    is a transient failure (the outbox retries with back-off), an unusable answer a permanent one."""
    with context.session_factory() as session:
        try:
            return run_check(session, int(message.payload["check_id"]))
        except GatewayError as exc:
            raise DeliveryError(exc.reason, permanent=not exc.transient) from None


def _record_result(
    session: Session, check: IdentityCheck, patient: Patient, national: NationalRecord | None, actor: Actor
) -> None:
    check.checked_at = utcnow()
    check.local_name, check.local_birth, check.local_sex = patient.full_name, _birth(patient), patient.sex
    if national is None:
        check.status, check.differences = "not_found", None
    else:
        check.national_name = national.full_name
        check.national_birth = _national_birth(national)
        check.national_sex = national.sex
        diff = differences(
            full_name=patient.full_name,
            birth_date=patient.birth_date,
            birth_year_only=patient.birth_year_only,
            sex=patient.sex,
            national=national,
        )
        check.differences = ",".join(diff) or None
        check.status = "mismatch" if diff else "matched"
    check.resolved = check.status == "matched"
    audit.record(
        session,
        actor,
        "identity.check",
        outcome="success" if check.status == "matched" else "failure",
        patient_id=patient.id,
        object_type="identity_check",
        object_id=check.id,
        details={"status": check.status, "differences": check.differences, "trigger": check.trigger},
    )


def run_check(session: Session, check_id: int, gateway: PopulationGateway | None = None) -> str:
    """Ask the gateway about one queued check and store the result; returns the check's status.

    Raises :class:`GatewayError` (``transient``) when the gateway cannot answer now, after
    counting the attempt, so the outbox retries. A check no longer queued is not asked again.
    """
    check = session.get(IdentityCheck, check_id)
    if check is None or check.status != "queued":
        return check.status if check else "gone"
    gateway = gateway or configured()
    if gateway is None:
        raise GatewayError("identity checks are off", transient=True)
    patient = session.get(Patient, check.patient_id)
    if patient is None or patient.cccd != check.cccd or patient.status != "active":
        check.status, check.last_error, check.resolved = "failed", "patient changed or merged", True
        session.commit()
        return check.status
    check.attempts += 1
    try:
        national = gateway.lookup(check.cccd)
    except GatewayError as exc:
        check.last_error = exc.reason[:300]
        if not exc.transient:
            check.status, check.resolved = "failed", True
            audit.record(
                session,
                SYSTEM,
                "identity.check",
                outcome="failure",
                patient_id=patient.id,
                object_type="identity_check",
                object_id=check.id,
                details={"status": "failed", "error": check.last_error},
            )
        session.commit()
        raise
    _record_result(session, check, patient, national, SYSTEM)
    session.commit()
    return check.status


def check_now(session: Session, actor: Actor, patient: Patient, trigger: str) -> IdentityCheck | None:
    """Check at once with the short timeout (before an export); when the gateway cannot answer, the
    check stays queued for the outbox and None is returned. The queued check is committed before the
    call, so no database lock is held while the gateway is slow; the caller commits the result."""
    gateway = configured()
    if gateway is None or not valid_cccd(patient.cccd):
        return None
    check = queue_check(session, patient, trigger)
    if check is None:
        return None
    session.commit()
    check.attempts += 1
    try:
        national = gateway.lookup(check.cccd)
    except GatewayError as exc:
        check.last_error = exc.reason[:300]
        return None
    _record_result(session, check, patient, national, actor)
    return check


def recent_match(session: Session, patient_id: int, max_age: timedelta, now: datetime | None = None) -> bool:
    """True when the patient's last result is a match (or a decision) younger than ``max_age``."""
    check = session.scalar(
        select(IdentityCheck)
        .where(IdentityCheck.patient_id == patient_id, IdentityCheck.status != "queued")
        .order_by(IdentityCheck.id.desc())
        .limit(1)
    )
    if check is None or not check.resolved or check.status == "failed":
        return False
    when = check.decided_at or check.checked_at
    return when is not None and when >= (now or utcnow()) - max_age
