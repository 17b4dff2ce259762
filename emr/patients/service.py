"""Patient registration, search and merge."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.care import ensure_patient_access
from emr.catalogues import check_code
from emr.core.clock import local_today
from emr.core.exceptions import ConflictError, InvalidState, PossibleDuplicate, ValidationFailed
from emr.core.identifiers import bhyt_problem, bhyt_ssn, cccd_problem
from emr.core.normalize import fold, name_keys, split_name
from emr.identity.checks import queue_check
from emr.models.lookup import get_or_404, next_number, parse

from ..models import Document, Encounter, ImagingOrder, Patient, PatientNameKey, Study
from ..schemas import PatientIn

__all__ = [
    "create_patient",
    "update_patient",
    "get_patient",
    "search_patients",
    "merge_patients",
    "validate_patient",
    "find_by_code",
    "record_counts",
]

_DIGITS = re.compile(r"\d{9,12}")
_BHYT_LIKE = re.compile(r"[A-Za-z]{2}\d{13}|\d{10}")
_CODE = re.compile(r"BN\d+", re.IGNORECASE)


def validate_patient(data: PatientIn) -> None:
    """Semantic checks beyond the schema; raises ValidationFailed with per-field keys."""
    problems: dict[str, str] = {}
    if data.cccd:
        key = cccd_problem(data.cccd, data.sex, None if data.birth_year_only else data.birth_date)
        if key == "patients.error.cccd_mismatch" and data.birth_year_only:
            key = None
        if key:
            problems["cccd"] = key
    if data.bhyt_number:
        key = bhyt_problem(data.bhyt_number)
        if key:
            problems["bhyt_number"] = key
    if data.bhyt_valid_from and data.bhyt_valid_to and data.bhyt_valid_to < data.bhyt_valid_from:
        problems["bhyt_valid_to"] = "patients.error.bhyt_dates"
    if data.birth_date.year < 1880:
        problems["birth_date"] = "errors.field_date"
    elif data.birth_date > local_today():  # the facility's today, whatever the server's zone
        problems["birth_date"] = "patients.error.birth_future"
    if problems:
        raise ValidationFailed(problems)


def _check_unique(session: Session, data: PatientIn, exclude_id: int | None = None) -> None:
    if data.cccd:
        other = session.scalar(select(Patient.id).where(Patient.cccd == data.cccd))
        if other is not None and other != exclude_id:
            raise ConflictError(
                f"CCCD {data.cccd} belongs to patient {other}", field="cccd", key="patients.error.cccd_duplicate"
            )
    ssn = bhyt_ssn(data.bhyt_number) if data.bhyt_number else None
    if ssn is not None:
        other = session.scalar(select(Patient.id).where(Patient.bhyt_ssn == ssn))
        if other is not None and other != exclude_id:
            raise ConflictError(
                f"BHYT {data.bhyt_number} belongs to patient {other}",
                field="bhyt_number",
                key="patients.error.bhyt_duplicate",
            )


# Coded demographics checked on entry: (catalogue kind, field). Ethnicity and religion against the loaded
# list, or the one shipped with filmless; occupation only once a hospital has loaded a list.
_CODED_DEMOGRAPHICS = (
    ("ethnicity", "ethnicity_code"),
    ("occupation", "occupation_code"),
    ("religion", "religion_code"),
)


def _check_catalogues(session: Session, data: PatientIn, before: Patient | None = None) -> None:
    """Address and registration facility against the catalogues in force today (issue 15 §4):
    a commune code from before 1 July 2025 is refused with a pointer to the new one.

    Ethnicity, occupation and religion are checked when entered or changed: a code already on the
    record (``before``) that no list names (registered before the lists, or by an interface) stays
    as it is, shown "mã 00 (không có trong danh mục)", and does not stop other fields being corrected."""
    today = local_today()
    problems: dict[str, str] = {}
    params: dict[str, dict[str, object]] = {}
    for kind, field in _CODED_DEMOGRAPHICS:
        code = getattr(data, field)
        if not code or (before is not None and getattr(before, field) == code):
            continue
        if check_code(session, kind, code, today) is not None:
            problems[field] = f"catalogues.entry.{kind}"
            params[field] = {"code": code}
    if data.province_code and check_code(session, "admin_unit", data.province_code, today) is not None:
        problems["province_code"] = "catalogues.entry.province"
    if data.ward_code:
        found = check_code(session, "admin_unit", data.ward_code, today, parent=data.province_code or None)
        if found is not None:
            old = found.key == "catalogues.check.old_commune"
            problems["ward_code"] = "catalogues.entry.ward_old" if old else "catalogues.entry.ward"
    if data.bhyt_registered_facility and check_code(
        session, "facility", data.bhyt_registered_facility, today
    ) is not None:
        problems["bhyt_registered_facility"] = "catalogues.entry.facility"
        params["bhyt_registered_facility"] = {"code": data.bhyt_registered_facility}
    if problems:
        raise ValidationFailed(problems, params=params)


def _apply(patient: Patient, data: PatientIn) -> None:
    family, given = split_name(data.full_name)
    patient.full_name = " ".join(data.full_name.split())
    patient.family_name = family
    patient.given_name = given
    patient.search_name = fold(patient.full_name)
    patient.search_given = fold(given)
    keys = set(name_keys(patient.search_name))
    kept = [k for k in patient.name_keys if k.key in keys]  # an unchanged key is not deleted and re-inserted
    patient.name_keys = kept + [PatientNameKey(key=k) for k in sorted(keys - {k.key for k in kept})]
    for name in (
        "birth_date",
        "birth_year_only",
        "sex",
        "cccd",
        "bhyt_number",
        "bhyt_valid_from",
        "bhyt_valid_to",
        "bhyt_registered_facility",
        "address",
        "province_code",
        "district_code",
        "ward_code",
        "phone",
        "ethnicity_code",
        "nationality_code",
        "occupation_code",
        "blood_type",
        "religion_code",
        "health_id",
        "father_name",
        "mother_name",
        "guardian_name",
    ):
        setattr(patient, name, getattr(data, name))
    patient.cccd = data.cccd or None
    patient.bhyt_number = data.bhyt_number or None
    patient.bhyt_ssn = bhyt_ssn(data.bhyt_number) if data.bhyt_number else None


def namesakes(session: Session, data: PatientIn) -> list[Patient]:
    """Active patients with the same name (folded), birth date and sex who may be the same person.

    One whose CCCD or insurance number is on file and differs from the one
    given is another person, and is left out.
    """
    stmt = select(Patient).where(
        Patient.search_name == fold(data.full_name),
        Patient.birth_date == data.birth_date,
        Patient.sex == data.sex,
        Patient.status == "active",
    )
    if data.cccd:
        stmt = stmt.where(or_(Patient.cccd.is_(None), Patient.cccd == data.cccd))
    ssn = bhyt_ssn(data.bhyt_number) if data.bhyt_number else None
    if ssn is not None:
        stmt = stmt.where(or_(Patient.bhyt_ssn.is_(None), Patient.bhyt_ssn == ssn))
    return list(session.scalars(stmt.order_by(Patient.id).limit(10)))


def create_patient(
    session: Session, actor: Actor, data: PatientIn | dict[str, Any], *, check_namesakes: bool = True
) -> Patient:
    """Register a patient. A person registered twice splits their record; a registration that looks
    like one already on file (see :func:`namesakes`) is refused with :class:`PossibleDuplicate` until
    the desk confirms another person (``confirm_new_person``). Interfaces that carry their own
    identifiers (HL7, the provincial network) pass ``check_namesakes=False``."""
    data = parse(PatientIn, data)
    validate_patient(data)
    _check_catalogues(session, data)
    _check_unique(session, data)
    if check_namesakes and not data.confirm_new_person:
        found = namesakes(session, data)
        if found:
            raise PossibleDuplicate([(p.id, p.code) for p in found])
    patient = Patient(code=f"BN{next_number(session, 'patient'):08d}")
    _apply(patient, data)
    session.add(patient)
    session.flush()
    audit.record(session, actor, "patient.create", patient_id=patient.id, object_type="patient", object_id=patient.id)
    queue_check(session, patient, "registration")  # issue 15: checked later, registration never waits
    session.commit()
    return patient


def update_patient(
    session: Session,
    actor: Actor,
    patient_id: int,
    data: PatientIn | dict[str, Any],
    *,
    recheck_identity: bool = True,
    commit: bool = True,
) -> Patient:
    """Change a patient (audited with the values before); a changed name, birth date, sex or CCCD
    is checked against the national population database again (``recheck_identity``)."""
    data = parse(PatientIn, data)
    validate_patient(data)
    patient = get_or_404(session, Patient, patient_id, "patient")
    _check_catalogues(session, data, before=patient)
    if patient.status != "active":
        raise InvalidState("merged patients are read-only", key="patients.error.merged")
    _check_unique(session, data, exclude_id=patient.id)
    before = {
        "full_name": patient.full_name,
        "cccd": patient.cccd,
        "bhyt_number": patient.bhyt_number,
        "birth_date": patient.birth_date.isoformat(),
        "sex": patient.sex,
    }
    _apply(patient, data)
    audit.record(
        session,
        actor,
        "patient.update",
        patient_id=patient.id,
        object_type="patient",
        object_id=patient.id,
        details={"before": before},
    )
    after = (patient.full_name, patient.cccd, patient.birth_date.isoformat(), patient.sex)
    if recheck_identity and after != (before["full_name"], before["cccd"], before["birth_date"], before["sex"]):
        queue_check(session, patient, "update")
    if commit:
        session.commit()
    return patient


def get_patient(session: Session, actor: Actor, patient_id: int, *, audit_view: bool = True) -> Patient:
    patient = get_or_404(session, Patient, patient_id, "patient")
    ensure_patient_access(session, actor, patient.id)  # issue 10: only patients in the user's care
    if audit_view:
        audit.record(session, actor, "patient.view", patient_id=patient.id, object_type="patient", object_id=patient.id)
        session.commit()
    return patient


def patient_for_new_visit(session: Session, patient_id: int) -> Patient:
    """The patient a visit is being opened for, shown on the new-visit form without a care check.

    Opening a visit in one's own department (or as its attending) is how care
    begins, so the form must open for a patient not yet in the physician's
    care; it shows what search already shows (name, code), and
    :func:`emr.patients.encounters.create_encounter` refuses any other visit
    outside care.
    """
    return get_or_404(session, Patient, patient_id, "patient")


def search_patients(
    session: Session, actor: Actor, query: str, limit: int = 20, *, audit_search: bool = True
) -> list[Patient]:
    """Name prefix (with or without diacritics), given-name prefix, CCCD, BHYT or patient code."""
    q = " ".join(query.split())
    if not q:
        return []
    stmt: Select[Patient] | None = select(Patient).where(Patient.status == "active")
    assert stmt is not None
    compact = q.replace(" ", "")
    rows: list[Patient] = []
    if _DIGITS.fullmatch(compact) and len(compact) == 12:
        stmt = stmt.where(Patient.cccd == compact)
    elif _BHYT_LIKE.fullmatch(compact):
        stmt = stmt.where(or_(Patient.bhyt_ssn == compact[-10:], Patient.bhyt_number == compact.upper()))
    elif _CODE.fullmatch(compact):
        stmt = stmt.where(Patient.code == compact.upper())
    else:
        folded = fold(q)
        if not folded:
            return []
        rows = _name_prefix(session, folded, limit)
        stmt = None
    if stmt is not None:
        rows = list(session.scalars(stmt.order_by(Patient.search_name, Patient.id).limit(limit)))
    if audit_search:
        audit.record(
            session, actor, "patient.search", object_type="patient", details={"query": q, "results": len(rows)}
        )
        session.commit()
    return rows


_TOP = "\U0010ffff"


def _name_prefix(session: Session, folded: str, limit: int) -> list[Patient]:
    """A prefix of the full name, or of the name from any later word, each an index range scan with LIMIT,
    merged here ("nhung" and "hong nhung" find Nguyễn Thị Hồng Nhung).

    A range (``>= q`` and ``< q + U+10FFFF``) instead of LIKE: no escaping of
    % and _, and the same index plan on SQLite (BINARY) and PostgreSQL (C).
    """
    found: dict[int, Patient] = {}
    for column in (Patient.search_name, Patient.search_given):
        stmt = (
            select(Patient)
            .where(column >= folded, column < folded + _TOP, Patient.status == "active")
            .order_by(column, Patient.id)
            .limit(limit)
        )
        for p in session.scalars(stmt):
            found.setdefault(p.id, p)
    later_word = (
        select(Patient)
        .join(PatientNameKey, PatientNameKey.patient_id == Patient.id)
        .where(PatientNameKey.key >= folded, PatientNameKey.key < folded + _TOP, Patient.status == "active")
        .order_by(PatientNameKey.key, Patient.id)
        .limit(limit)
    )
    for p in session.scalars(later_word):
        found.setdefault(p.id, p)
    return sorted(found.values(), key=lambda p: (p.search_name, p.id))[:limit]


def merge_patients(session: Session, actor: Actor, source_id: int, target_id: int, reason: str) -> Patient:
    """Move everything of ``source`` to ``target``; ``source`` stays, marked merged (both histories kept)."""
    if source_id == target_id:
        raise ValidationFailed({"source_id": "patients.error.merge_same"})
    if not reason.strip():
        raise ValidationFailed({"reason": "errors.field_required"})
    source = get_or_404(session, Patient, source_id, "patient")
    target = get_or_404(session, Patient, target_id, "patient")
    if source.status != "active" or target.status != "active":
        raise InvalidState("only active patients can be merged", key="patients.error.merged")
    moved: dict[str, list[int]] = {}
    for model in (Encounter, Document, ImagingOrder, Study):
        rows = list(session.scalars(select(model).where(model.patient_id == source.id)))  # type: ignore[attr-defined]
        for row in rows:
            row.patient_id = target.id  # type: ignore[attr-defined]
        moved[model.__tablename__] = [r.id for r in rows]  # type: ignore[attr-defined]
    source.status = "merged"
    source.merged_into_id = target.id
    # Identifiers stay unique: the merged record keeps them only in the audit trail.
    identifiers = {"cccd": source.cccd, "bhyt_number": source.bhyt_number, "code": source.code}
    if source.cccd and not target.cccd:
        cccd, source.cccd = source.cccd, None
        session.flush()
        target.cccd = cccd
    if source.bhyt_ssn and not target.bhyt_ssn:
        number, ssn = source.bhyt_number, source.bhyt_ssn
        source.bhyt_ssn = None
        session.flush()
        target.bhyt_number, target.bhyt_ssn = number, ssn
    details = {"reason": reason, "moved": moved, "source_identifiers": identifiers, "target_id": target.id}
    audit.record(
        session,
        actor,
        "patient.merge",
        patient_id=source.id,
        object_type="patient",
        object_id=source.id,
        details=details,
    )
    audit.record(
        session,
        actor,
        "patient.merge",
        patient_id=target.id,
        object_type="patient",
        object_id=target.id,
        details={**details, "source_id": source.id},
    )
    session.commit()
    return target


def find_by_code(session: Session, code: str, field: str = "code") -> Patient:
    """A patient by the code staff read off the chart (BN00000012); ``field`` names the form field on error."""
    compact = code.strip().upper()
    patient = session.scalar(select(Patient).where(Patient.code == compact)) if _CODE.fullmatch(compact) else None
    if patient is None:
        raise ValidationFailed({field: "patients.error.code_unknown"})
    return patient


def record_counts(session: Session, patient_id: int) -> dict[str, int]:
    """How many encounters, documents, orders and studies a patient has (shown before a merge)."""
    counts = {}
    for model in (Encounter, Document, ImagingOrder, Study):
        stmt = select(func.count()).select_from(model).where(model.patient_id == patient_id)  # type: ignore[attr-defined]
        counts[model.__tablename__] = int(session.scalar(stmt) or 0)  # type: ignore[attr-defined]
    return counts
