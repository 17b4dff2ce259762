"""Encounters with department, attending physician and validated ICD-10 diagnoses."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, aliased

from emr import outbox
from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access
from emr.access.permissions import may_close_visit, own_visits
from emr.catalogues import check_code, unknown_icd10
from emr.core.clock import local_today, to_local
from emr.core.exceptions import EmrError, InvalidState, ValidationFailed
from emr.core.states import ON_WORKLIST, OrderStatus
from emr.i18n import t
from emr.models.lookup import get_or_404, next_number, parse

from ..models import (
    BENEFIT_LEVELS,
    Department,
    Document,
    Encounter,
    EncounterDiagnosis,
    Icd10Code,
    ImagingOrder,
    Patient,
    User,
    utcnow,
)
from ..schemas import BenefitLevelIn, EncounterIn

__all__ = [
    "create_encounter",
    "get_encounter",
    "list_encounters",
    "CurrentVisit",
    "current_visits",
    "close_encounter",
    "ClosePrefill",
    "close_form_prefill",
    "may_close",
    "pending_orders",
    "require_closer",
    "NotTreatingPhysician",
    "PENDING_ORDER_CHOICES",
    "set_benefit_level",
    "load_icd10",
    "ensure_department",
    "ATTENDING_ROLES",
    "encounter_dict",
    "attending_choices",
]


# Who may attend a visit (and so be listed as its physician).
ATTENDING_ROLES = ("physician", "radiologist")

def ensure_department(session: Session, code: str, name: str) -> Department:
    dep = session.scalar(select(Department).where(Department.code == code))
    if dep is None:
        if check_code(session, "department", code, local_today()) is not None:
            raise ValidationFailed({"code": "catalogues.entry.department"})  # MA_KHOA from the list in force
        dep = Department(code=code, name=name)
        session.add(dep)
        session.flush()
    return dep


def load_icd10(session: Session, actor: Actor, path: Path) -> int:
    """Load (upsert) the ICD-10 catalogue from a CSV/TSV file ``code,title`` (header optional)."""
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    count = 0
    for row in csv.reader(text.splitlines(), dialect=dialect):
        if len(row) < 2 or not row[0].strip() or row[0].strip().lower() in ("code", "ma", "mã"):
            continue
        code, title = row[0].strip().upper(), row[1].strip()
        existing = session.get(Icd10Code, code)
        if existing is None:
            session.add(Icd10Code(code=code, title=title))
        else:
            existing.title = title
        count += 1
    audit.record(session, actor, "catalog.icd10_load", object_type="icd10", details={"file": path.name, "codes": count})
    session.commit()
    return count


def _benefit_problems(level: int | None, note: str | None) -> dict[str, str]:
    """100/95/80 as on the card; another level (an out-of-route visit is paid a share of the
    card's level, e.g. 80 % × 40 % = 32) only with a note saying why."""
    if level is None or level in BENEFIT_LEVELS or note:
        return {}
    return {"benefit_level": "encounters.error.benefit_level"}


def create_encounter(session: Session, actor: Actor, data: EncounterIn | dict[str, Any]) -> Encounter:
    data = parse(EncounterIn, data)
    patient = get_or_404(session, Patient, data.patient_id, "patient")
    if patient.status != "active":
        raise InvalidState("merged patients are read-only", key="patients.error.merged")
    problems: dict[str, str] = {}
    dep = session.scalar(select(Department).where(Department.code == data.department_code))
    if dep is None:
        problems["department_code"] = "encounters.error.department"
    attending_name = data.attending_username or actor.username
    attending = session.scalar(select(User).where(User.username == attending_name, User.active.is_(True)))
    if attending is None or attending.role not in ATTENDING_ROLES:
        problems["attending_username"] = "encounters.error.attending"
    codes = [c.upper() for c in data.diagnoses]
    today = local_today()
    # the code must be in the ICD-10 list in force today, not only ever loaded (issue 15 §4)
    refused = set(unknown_icd10(session, codes, today))
    unknown = {i: code for i, code in enumerate(codes) if code in refused}
    named: dict[str, object] = {"codes": ", ".join(dict.fromkeys(unknown.values()))}  # every one, in each message
    params: dict[str, dict[str, object]] = {f"diagnoses.{i}": named for i in unknown}
    problems.update({f"diagnoses.{i}": "encounters.error.icd10" for i in unknown})
    if len(set(codes)) != len(codes):
        problems["diagnoses"] = "encounters.error.icd10_duplicate"
    problems.update(_benefit_problems(data.benefit_level, data.benefit_level_note))
    if problems:
        raise ValidationFailed(problems, params=params)
    assert dep is not None and attending is not None
    opener = session.get(User, actor.user_id) if actor.user_id is not None else None
    if opener is None or (attending.id != opener.id and dep.id != opener.department_id):
        # Opening a visit in one's own department, or as its attending, is how care begins
        # (audited below); anyone else needs the patient in their care already (issue 10).
        ensure_patient_access(session, actor, patient.id)
    now = utcnow()
    enc = Encounter(
        patient_id=patient.id,
        visit_code=f"{to_local(now):%y%m%d}{next_number(session, 'visit'):08d}",  # the facility's day
        kind=data.kind,
        department_id=dep.id,
        attending_id=attending.id,
        reason=data.reason,
        admission_diagnosis=data.admission_diagnosis,
        record_type=data.record_type,
        insurance_object=data.insurance_object,
        benefit_level=data.benefit_level,
        benefit_level_note=data.benefit_level_note if data.benefit_level is not None else None,
        admitted_at=now,
        inpatient_at=now if data.kind == "inpatient" else None,
        created_by=actor.user_id or attending.id,
    )
    session.add(enc)
    session.flush()
    enc.record_no = f"HS{enc.id:08d}"
    for pos, code in enumerate(codes):
        session.add(EncounterDiagnosis(encounter_id=enc.id, icd10_code=code, position=pos))
    audit.record(
        session,
        actor,
        "encounter.create",
        patient_id=patient.id,
        object_type="encounter",
        object_id=enc.id,
        details={"kind": data.kind, "diagnoses": codes, "benefit_level": data.benefit_level},
    )
    session.commit()
    return enc


def set_benefit_level(
    session: Session, actor: Actor, encounter_id: int, data: BenefitLevelIn | dict[str, Any]
) -> Encounter:
    """Enter or correct the benefit level (MUC_HUONG) after checking the card, also on a closed
    visit not yet sent (an insured visit cannot be exported without it); audited with the old value."""
    data = parse(BenefitLevelIn, data)
    enc = get_or_404(session, Encounter, encounter_id, "encounter")
    if enc.status == "cancelled":
        raise InvalidState("encounter is cancelled", key="encounters.error.cancelled")
    problems = _benefit_problems(data.benefit_level, data.benefit_level_note)
    if problems:
        raise ValidationFailed(problems)
    before = {"benefit_level": enc.benefit_level, "benefit_level_note": enc.benefit_level_note}
    enc.benefit_level = data.benefit_level
    enc.benefit_level_note = data.benefit_level_note if data.benefit_level is not None else None
    audit.record(
        session,
        actor,
        "encounter.benefit_level",
        patient_id=enc.patient_id,
        object_type="encounter",
        object_id=enc.id,
        details={
            "before": before,
            "after": {"benefit_level": enc.benefit_level, "benefit_level_note": enc.benefit_level_note},
        },
    )
    session.commit()
    return enc


def get_encounter(session: Session, actor: Actor, encounter_id: int) -> Encounter:
    enc = get_or_404(session, Encounter, encounter_id, "encounter")
    ensure_patient_access(session, actor, enc.patient_id)  # issue 10: only patients in the user's care
    audit.record(session, actor, "encounter.view", patient_id=enc.patient_id, object_type="encounter", object_id=enc.id)
    session.commit()
    return enc


def list_encounters(session: Session, patient_id: int) -> list[Encounter]:
    return list(
        session.scalars(
            select(Encounter).where(Encounter.patient_id == patient_id).order_by(Encounter.admitted_at.desc())
        )
    )


@dataclass(frozen=True)
class CurrentVisit:
    """One line of a clinician's list of patients under treatment."""

    encounter_id: int
    visit_code: str
    kind: str
    admitted_at: datetime
    patient_id: int
    patient_code: str
    patient_name: str
    birth_date: date
    birth_year_only: bool
    sex: str
    department_name: str
    attending: str


CURRENT_VISITS_LIMIT = 200


def current_visits(session: Session, actor: Actor, limit: int = CURRENT_VISITS_LIMIT) -> list[CurrentVisit] | None:
    """The open visits of the user's department and those they attend, newest first: the patients
    a physician or ward nurse is treating now, without searching for each. None for a user with
    no department who cannot attend a visit either (a records clerk): nothing of theirs to list.

    These patients are in a care-scoped user's care by the rule of emr.access.permissions (an
    open visit in their department or as attending), so the list shows nobody they may not open.
    The listing is audited (names on a screen are a view of patient data).
    """
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None or (user.department_id is None and user.role not in ATTENDING_ROLES):
        return None
    attending = aliased(User)
    rows = session.execute(
        select(Encounter, Patient, Department.name, attending.full_name)
        .join(Patient, Patient.id == Encounter.patient_id)
        .join(Department, Department.id == Encounter.department_id)
        .join(attending, attending.id == Encounter.attending_id)
        .where(own_visits(user), Encounter.status == "open", Patient.status == "active")
        .order_by(Encounter.admitted_at.desc(), Encounter.id.desc())
        .limit(limit)
    ).all()
    visits = [
        CurrentVisit(
            encounter_id=enc.id, visit_code=enc.visit_code, kind=enc.kind, admitted_at=enc.admitted_at,
            patient_id=p.id, patient_code=p.code, patient_name=p.full_name, birth_date=p.birth_date,
            birth_year_only=bool(p.birth_year_only), sex=p.sex, department_name=department, attending=doctor,
        )
        for enc, p, department, doctor in rows
    ]
    audit.record(session, actor, "patient.list", object_type="patient",
                 details={"list": "current_visits", "results": len(visits)})
    session.commit()
    return visits


class NotTreatingPhysician(EmrError):
    """The user may not end this visit: not a physician attending it or working in its department."""

    code = "forbidden"
    http_status = 403


# What happens to the visit's imaging orders still on the modality worklist when it ends: the physician
# says it on the close form (never decided silently): left for outpatient follow-up, or cancelled.
PENDING_ORDER_CHOICES = ("keep", "cancel")
# A discharge diagnosis is a diagnosis written out, not a mark: at least this many letters ("x" was accepted).
DISCHARGE_DIAGNOSIS_MIN_LETTERS = 3
DISCHARGE_DIAGNOSIS_MAX_LENGTH = 2000
_CODE_SEPARATORS = re.compile(r"[\s,;]+")


def may_close(session: Session, actor: Actor, enc: Encounter) -> bool:
    """For screens: may this user end ``enc`` (emr.access.permissions.may_close_visit)?"""
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    return may_close_visit(user, enc)


def require_closer(session: Session, actor: Actor, enc: Encounter) -> None:
    """Only a physician attending the visit or of its department ends it; a refusal is audited."""
    if may_close(session, actor, enc):
        return
    audit.record(session, actor, "encounter.close", outcome="denied", patient_id=enc.patient_id,
                 object_type="encounter", object_id=enc.id, details={"reason": "not_treating_physician"})
    session.commit()
    raise NotTreatingPhysician(f"user {actor.user_id} may not close encounter {enc.id}",
                               key="encounters.error.close_not_treating")


def pending_orders(session: Session, encounter_id: int) -> list[ImagingOrder]:
    """The visit's imaging orders still waiting for the modality (scheduled or in progress: on the worklist)."""
    return list(session.scalars(
        select(ImagingOrder)
        .where(ImagingOrder.encounter_id == encounter_id, ImagingOrder.status.in_([s.value for s in ON_WORKLIST]))
        .order_by(ImagingOrder.scheduled_at, ImagingOrder.id)
    ))


# An ICD-10 code as a diagnosis writes it ("Viêm phổi (J18.9)"): a letter, two digits, a dot and up to two more.
_ICD10_IN_TEXT = re.compile(r"(?<![A-Z0-9.])([A-Z][0-9]{2}(?:\.[0-9A-Z]{1,2})?)(?![A-Z0-9])")


def _paper_diagnosis(session: Session, encounter_id: int) -> str:
    """The discharge diagnosis written on the visit's discharge paper (its newest one not cancelled, current
    version, signed or not); '' without one."""
    papers = session.scalars(
        select(Document)
        .where(Document.encounter_id == encounter_id, Document.form_type == "discharge_summary",
               Document.status != "cancelled")
        .order_by(Document.id.desc())
    )
    for doc in papers:
        version = next((v for v in doc.versions if v.number == doc.current_version), None)
        if version is not None:
            text = str(json.loads(version.content_json).get("discharge_diagnosis") or "").strip()
            if text:
                return text
    return ""


@dataclass(frozen=True)
class ClosePrefill:
    """What the close form offers and where it came from, for the form's notes.

    ``from_paper``: the discharge diagnosis is the discharge paper's; ``codes_taken``: the ICD-10 codes written
    in it that the form offers (main first); ``codes_unknown``: codes written in it that are not in the
    ICD-10 list in force today, so not offered (the code fields keep the visit's own, which the form says)."""

    values: dict[str, str]
    from_paper: bool = False
    codes_taken: tuple[str, ...] = ()
    codes_unknown: tuple[str, ...] = ()


def close_form_prefill(session: Session, enc: Encounter) -> ClosePrefill:
    """What the close form offers, and what of it the discharge paper supplied.

    By default the visit's discharge diagnosis (else its admission diagnosis) and its ICD-10 codes. When the
    visit has a discharge paper, its discharge diagnosis — the words the paper will print — and the ICD-10
    codes written in it that may be entered today (main first), if any; codes written in it that are not in
    the list in force are named, never silently dropped. The physician still checks them
    (:func:`close_encounter` validates them again)."""
    codes = [d.icd10_code for d in enc.diagnoses]
    values = {
        "discharge_diagnosis": enc.discharge_diagnosis or enc.admission_diagnosis or "",
        "main_code": codes[0] if codes else "",
        "secondary_codes": " ".join(codes[1:]),
    }
    written = "" if enc.discharge_diagnosis else _paper_diagnosis(session, enc.id)
    if not written:
        return ClosePrefill(values)
    values["discharge_diagnosis"] = written
    found = list(dict.fromkeys(m.group(1) for m in _ICD10_IN_TEXT.finditer(written.upper())))
    refused = set(unknown_icd10(session, found, local_today())) if found else set()
    known = [c for c in found if c not in refused]
    if known:
        values["main_code"], values["secondary_codes"] = known[0], " ".join(known[1:])
    return ClosePrefill(values, True, tuple(known), tuple(c for c in found if c in refused))


def _discharge_problems(text: str) -> dict[str, str]:
    letters = sum(ch.isalpha() for ch in text)
    if letters < DISCHARGE_DIAGNOSIS_MIN_LETTERS or len(text) > DISCHARGE_DIAGNOSIS_MAX_LENGTH:
        return {"discharge_diagnosis": "ehr.close.error.diagnosis"}
    return {}


def close_encounter(
    session: Session,
    actor: Actor,
    encounter_id: int,
    discharge_diagnosis: str,
    treatment_result: str = "1",
    discharge_type: str = "1",
    *,
    main_code: str | None = None,
    secondary_codes: list[str] | None = None,
    pending: str | None = None,
) -> Encounter:
    """End the visit: discharge diagnosis, its ICD-10 codes, the discharge time; audited, then published.

    Only a physician attending the visit or of its department (:func:`require_closer`). The discharge
    diagnosis is written out and has a main ICD-10 code in the list in force today (``unknown_icd10``, as on
    the visit form): MA_BENH_CHINH is the main disease at the end of treatment (QĐ 4750 Bảng 1), so
    ``main_code`` becomes the visit's diagnosis at position 0 and ``secondary_codes`` (when given) the
    others (MA_BENH_KT); without ``main_code`` the visit's own main code is kept, and a visit with none
    cannot be closed. Imaging orders of the visit still on the worklist: ``pending`` says what becomes of
    them ("keep": outpatient follow-up; "cancel": cancelled, each audited); without it they refuse the close.
    """
    enc = get_or_404(session, Encounter, encounter_id, "encounter")
    require_closer(session, actor, enc)
    if enc.status != "open":
        raise InvalidState("encounter is not open", key="encounters.error.not_open")
    text = (discharge_diagnosis or "").strip()
    problems = _discharge_problems(text)
    before = [d.icd10_code for d in enc.diagnoses]
    typed = _CODE_SEPARATORS.split((main_code or "").strip().upper()) if main_code and main_code.strip() else []
    main = typed[0][:16] if typed else (before[0] if before else "")
    others = before[1:] if secondary_codes is None else [c.strip().upper()[:16] for c in secondary_codes if c.strip()]
    others = [c for c in dict.fromkeys(others) if c != main]
    params: dict[str, dict[str, object]] = {}
    if not main:
        problems["main_code"] = "ehr.close.error.main_code"
    elif len(typed) > 1:
        problems["main_code"] = "ehr.close.error.main_code_one"
    else:
        refused = unknown_icd10(session, [main, *others], local_today())
        if main in refused:
            problems["main_code"] = "encounters.error.icd10"
            params["main_code"] = {"codes": main}
        if [c for c in refused if c != main]:
            problems["secondary_codes"] = "encounters.error.icd10"
            params["secondary_codes"] = {"codes": ", ".join(c for c in refused if c != main)}
    waiting = pending_orders(session, enc.id)
    if waiting and pending not in PENDING_ORDER_CHOICES:
        problems["pending_orders"] = "ehr.close.error.pending_orders"
    if problems:
        raise ValidationFailed(problems, params=params)
    codes = [main, *others]
    if codes != before:
        session.execute(delete(EncounterDiagnosis).where(EncounterDiagnosis.encounter_id == enc.id))
        session.add_all(EncounterDiagnosis(encounter_id=enc.id, icd10_code=c, position=i) for i, c in enumerate(codes))
        session.expire(enc, ["diagnoses"])
    now = utcnow()
    enc.status = "closed"
    enc.discharged_at = enc.closed_at = now
    enc.discharge_diagnosis = text
    enc.treatment_result = treatment_result
    enc.discharge_type = discharge_type
    cancelled: list[int] = []
    if waiting and pending == "cancel":
        reason = t("ehr.close.order_cancel_reason")
        for order in waiting:
            order.status = OrderStatus.CANCELLED
            order.cancel_reason = reason
            cancelled.append(order.id)
            audit.record(session, actor, "order.cancel", patient_id=order.patient_id, object_type="order",
                         object_id=order.id, details={"reason": reason, "encounter_closed": enc.id})
    audit.record(
        session, actor, "encounter.close", patient_id=enc.patient_id, object_type="encounter", object_id=enc.id,
        details={
            "main_code": main, "diagnoses": codes, "diagnoses_before": before,
            "pending_orders": [o.id for o in waiting], "pending": pending if waiting else None,
        },
    )
    session.flush()
    outbox.publish(session, "encounter.closed", encounter=enc)  # issue 15: e.g. the EHR push, same transaction
    session.commit()
    return enc


def encounter_dict(session: Session, enc: Encounter) -> dict[str, Any]:
    dep = session.get(Department, enc.department_id)
    attending = session.get(User, enc.attending_id)
    return {
        "id": enc.id,
        "patient_id": enc.patient_id,
        "visit_code": enc.visit_code,
        "kind": enc.kind,
        "department_code": dep.code if dep else "",
        "department_name": dep.name if dep else "",
        "attending": attending.full_name if attending else "",
        "status": enc.status,
        "admitted_at": enc.admitted_at,
        "discharged_at": enc.discharged_at,
        "reason": enc.reason,
        "admission_diagnosis": enc.admission_diagnosis,
        "diagnoses": [d.icd10_code for d in enc.diagnoses],
        "record_type": enc.record_type,
        "benefit_level": enc.benefit_level,
        "benefit_level_note": enc.benefit_level_note,
    }


def retention_until(record_type: str, closed: date) -> int | None:
    """Year (inclusive) until which a record closed on ``closed`` must be kept; None = permanent."""
    from ..models import RETENTION_YEARS

    years = RETENTION_YEARS[record_type]
    return None if years is None else closed.year + years


def attending_choices(session: Session) -> list[tuple[str, str]]:
    """(username, "Full name · department") of every active physician and radiologist, by name:
    the visit form offers these instead of a free-text user name."""
    rows = session.execute(
        select(User.username, User.full_name, Department.name)
        .outerjoin(Department, Department.id == User.department_id)
        .where(User.active.is_(True), User.role.in_(ATTENDING_ROLES))
        .order_by(User.full_name, User.username)
    )
    return [(username, f"{name} · {dep}" if dep else name) for username, name, dep in rows]
