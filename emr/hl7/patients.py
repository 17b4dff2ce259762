"""ADT A01/A04/A08/A40: the HIS registers, updates and merges patients through the patient services.

Identifiers (PID-3, HL7 v2.5 §3.4.2.3, data type CX): the HIS's own patient
number is the repetition typed PI/MR/PT/PN (or untyped), scoped by its assigning
authority (CX.4, else the sending facility MSH-4); the CCCD is the repetition typed
NI or NNVNM (table 0203: "NI" national unique individual identifier; "NNxxx"
national person identifier with the ISO 3166 alpha-3 country, VNM); a BHYT card
is typed HC (health card number). A patient is found by a known HIS number, then
by CCCD; what is found is linked (``hl7_patient_links``) so updates and merges
reach it again. A08 and A40 never create a patient: an unknown one is an error
(table 0357 code 204, unknown key identifier) the HIS can resend after an A04.
"""

from __future__ import annotations

import re
from typing import Any

import hl7
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.exceptions import EmrError, ValidationFailed
from emr.models import Hl7PatientLink, Patient
from emr.patients.service import create_patient, merge_patients, update_patient
from emr.schemas import PatientIn

from .fields import NULL, Hl7Error, component, field, get, parse_date, repetitions, unescape

__all__ = [
    "apply_adt",
    "as_hl7_error",
    "cccd_of",
    "find_patient",
    "his_identifiers",
    "link_identifiers",
    "merged_values",
    "patient_from_pid",
]

_HIS_TYPES = {"", "PI", "MR", "PT", "PN"}
_CCCD_TYPES = {"NI", "NNVNM"}
_SEX = {"M": "M", "F": "F", "O": "O", "U": "O", "A": "O", "N": "O"}  # table 0001
_PATIENT_FIELDS = tuple(PatientIn.model_fields)


def his_identifiers(msg: hl7.Message, facility: str, seg: str = "PID", num: int = 3) -> list[tuple[str, str]]:
    """(authority, number) of every HIS patient number in SEG-num (PID-3, MRG-1)."""
    out = []
    for rep in repetitions(field(msg, seg, num)):
        number = unescape(msg, component(rep, 1)).strip()
        kind = component(rep, 5).strip().upper()
        if number and kind in _HIS_TYPES:
            out.append(((unescape(msg, component(rep, 4)).strip() or facility)[:180], number[:80]))
    return out


def cccd_of(msg: hl7.Message) -> str | None:
    for rep in repetitions(field(msg, "PID", 3)):
        if component(rep, 5).strip().upper() in _CCCD_TYPES:
            return component(rep, 1).strip() or None
    ssn = get(msg, "PID", 19)  # PID-19 (SSN, kept for backward compatibility) when a HIS puts the CCCD there
    return ssn if re.fullmatch(r"\d{12}", ssn) else None


def _bhyt(msg: hl7.Message) -> str | None:
    for rep in repetitions(field(msg, "PID", 3)):
        if component(rep, 5).strip().upper() == "HC":
            return component(rep, 1).strip() or None
    return None


def _current(session: Session, patient: Patient | None) -> Patient | None:
    """Follow merges: an identifier of a merged record now means the record it was merged into."""
    for _ in range(20):
        if patient is None or patient.status != "merged" or not patient.merged_into_id:
            break
        patient = session.get(Patient, patient.merged_into_id)
    return patient


def find_patient(session: Session, ids: list[tuple[str, str]], cccd: str | None) -> Patient | None:
    for authority, number in ids:
        link = session.scalar(
            select(Hl7PatientLink).where(Hl7PatientLink.authority == authority, Hl7PatientLink.identifier == number)
        )
        if link is not None:
            return _current(session, session.get(Patient, link.patient_id))
    if cccd:
        return _current(session, session.scalar(select(Patient).where(Patient.cccd == cccd)))
    return None


def link_identifiers(session: Session, ids: list[tuple[str, str]], patient_id: int) -> None:
    for authority, number in ids:
        link = session.scalar(
            select(Hl7PatientLink).where(Hl7PatientLink.authority == authority, Hl7PatientLink.identifier == number)
        )
        if link is None:
            session.add(Hl7PatientLink(authority=authority, identifier=number, patient_id=patient_id))
        else:
            link.patient_id = patient_id
    session.flush()  # committed with the message's log row: one transaction, one fsync


def _name(msg: hl7.Message) -> str | None:
    """PID-5 XPN: family ^ given ^ further given names; a Vietnamese name reads family, middle, given."""
    family, given, middle = get(msg, "PID", 5, 1), get(msg, "PID", 5, 2), get(msg, "PID", 5, 3)
    if family == NULL:
        return None
    return " ".join(p for p in (family, middle, given) if p) or None


def _address(msg: hl7.Message) -> str | None:
    parts = [get(msg, "PID", 11, n) for n in (1, 2, 3, 4)]
    return ", ".join(p for p in parts if p and p != NULL) or None


def _phone(msg: hl7.Message) -> str | None:
    raw = get(msg, "PID", 13, 12) or get(msg, "PID", 13, 1)  # XTN.12 unformatted number, else XTN.1
    digits = re.sub(r"[^\d+]", "", raw)
    return digits or None


def patient_from_pid(msg: hl7.Message) -> dict[str, Any]:
    """What the PID says, as PatientIn fields; only fields the HIS sent (NULL "" clears)."""
    data: dict[str, Any] = {}
    name = _name(msg)
    if name:
        data["full_name"] = name
    born = parse_date(get(msg, "PID", 7), "PID^1^7")
    if born is not None:
        data["birth_date"], data["birth_year_only"] = born
    sex = get(msg, "PID", 8).upper()
    if sex:
        if sex not in _SEX:
            raise Hl7Error("103", f"PID-8 {sex!r} is not in table 0001", location="PID^1^8")
        data["sex"] = _SEX[sex]
    for key, value in (("cccd", cccd_of(msg)), ("bhyt_number", _bhyt(msg)), ("address", _address(msg)),
                       ("phone", _phone(msg))):
        if value:
            data[key] = value
    for key, (seg, num) in {"address": ("PID", 11), "phone": ("PID", 13)}.items():
        if get(msg, seg, num) == NULL:
            data[key] = None
    return data


def merged_values(patient: Patient | None, sent: dict[str, Any]) -> dict[str, Any]:
    """The patient's current values with what the HIS sent on top (fields it did not send are kept)."""
    base: dict[str, Any] = {}
    if patient is not None:
        base = {name: getattr(patient, name) for name in _PATIENT_FIELDS if hasattr(patient, name)}
        base = {k: v for k, v in base.items() if v is not None}
    base.update(sent)
    return base


def as_hl7_error(exc: EmrError) -> Hl7Error:
    """A refusal of the patient service as an ERR: table 0357 101 (required) or 102 (wrong value)."""
    if isinstance(exc, ValidationFailed):
        where = {"full_name": "PID^1^5", "birth_date": "PID^1^7", "sex": "PID^1^8", "cccd": "PID^1^3",
                 "bhyt_number": "PID^1^3", "phone": "PID^1^13", "address": "PID^1^11"}
        first = sorted(exc.fields)[0] if exc.fields else ""
        code = "101" if exc.fields.get(first) == "errors.field_required" else "102"
        return Hl7Error(code, f"patient data refused: {exc}", location=where.get(first, "PID"))
    if exc.code == "conflict":
        return Hl7Error("205", f"duplicate key: {exc}", location="PID^1^3")
    return Hl7Error("207", f"{type(exc).__name__}: {exc}")


def _shown(ids: list[tuple[str, str]], cccd: str | None) -> str:
    return ", ".join([f"{number} ({authority})" for authority, number in ids] + ([f"CCCD {cccd}"] if cccd else []))


def _register_or_update(session: Session, actor: Actor, msg: hl7.Message, facility: str, *,
                        create: bool) -> Patient:
    ids = his_identifiers(msg, facility)
    cccd = cccd_of(msg)
    if not ids and not cccd:
        raise Hl7Error("101", "PID-3 has no patient identifier", location="PID^1^3")
    patient = find_patient(session, ids, cccd)
    sent = patient_from_pid(msg)
    if patient is None and not create:
        raise Hl7Error("204", f"unknown patient {_shown(ids, cccd)}: send A04 first", location="PID^1^3")
    for required, loc in (("full_name", "PID^1^5"), ("birth_date", "PID^1^7"), ("sex", "PID^1^8")):
        if patient is None and required not in sent:
            raise Hl7Error("101", f"{loc.replace('^1^', '-')} is required to register a patient", location=loc)
    try:
        if patient is None:
            patient = create_patient(session, actor, merged_values(None, sent), check_namesakes=False)
        else:
            patient = update_patient(session, actor, patient.id, merged_values(patient, sent))
    except EmrError as exc:
        session.rollback()
        raise as_hl7_error(exc) from exc
    link_identifiers(session, ids, patient.id)
    return patient


def _merge(session: Session, actor: Actor, msg: hl7.Message, facility: str, control_id: str) -> Patient:
    """A40 (HL7 v2.5 §3.3.40): PID names the surviving patient, MRG-1 the one merged into it."""
    survivor_ids = his_identifiers(msg, facility)
    prior_ids = his_identifiers(msg, facility, "MRG", 1)
    if not prior_ids:
        raise Hl7Error("101", "MRG-1 has no prior patient identifier", location="MRG^1^1")
    prior = find_patient(session, prior_ids, None)
    if prior is None:
        raise Hl7Error("204", f"unknown prior patient {_shown(prior_ids, None)}", location="MRG^1^1")
    survivor = find_patient(session, survivor_ids, cccd_of(msg))
    if survivor is None:  # the HIS renamed the identifier: the prior record now carries the new number
        link_identifiers(session, survivor_ids, prior.id)
        return prior
    if survivor.id != prior.id:
        try:
            survivor = merge_patients(session, actor, prior.id, survivor.id, f"HL7 A40 {facility} {control_id}")
        except EmrError as exc:
            session.rollback()
            raise Hl7Error("207", f"merge refused: {exc}", location="MRG^1^1") from exc
    link_identifiers(session, survivor_ids, survivor.id)
    return survivor


def apply_adt(session: Session, actor: Actor, msg: hl7.Message, event: str, facility: str,
              control_id: str) -> Patient:
    if event in ("A01", "A04"):
        return _register_or_update(session, actor, msg, facility, create=True)
    if event == "A08":
        return _register_or_update(session, actor, msg, facility, create=False)
    if event == "A40":
        return _merge(session, actor, msg, facility, control_id)
    raise Hl7Error("201", f"ADT^{event} is not supported (A01, A04, A08, A40 are)", location="MSH^1^9^1^2",
                   ack_code="AR")
