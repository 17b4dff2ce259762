"""ORM^O01 and OMI^O23: imaging orders from the HIS become filmless orders on the modality worklist.

filmless is the order filler (IHE Scheduled Workflow: the department system
assigns the accession number and Study Instance UID), so the HIS's placer order
number (ORC-2, EI) is kept in ``hl7_order_links`` and the order gets its own
accession number, which ORU^R01 returns as the filler order number (OBR-3).
ORC-1 order control (table 0119): NW new order; CA/DC cancel / discontinue.
Fields read (HL7 v2.5 §4.5.1 ORC, §4.5.3 OBR, §4.5.4 TQ1, §4.5.6 IPC):
OBR-4 universal service ID (procedure code ^ name), OBR-24 diagnostic service
section (table 0074) or IPC-5 modality, priority TQ1-9 / ORC-7.6 / OBR-5
(table 0027: S stat, A ASAP, R routine...), start TQ1-7 / ORC-7.4 / OBR-36,
clinical information OBR-13, reason OBR-31, scheduled station IPC-9 (Scheduled AE
Title, ST).

A new order is held to the rules of the order form (emr.imaging.orders.check_entry):
its start within the scheduling window (from the start of the facility's today to
the same day next year, facility time; a DTM without offset is facility time) and
IPC-9, when sent, a DICOM AE title of a modality the gateway admits. Otherwise it
is answered AE with the limits in the ERR segment (nothing placed, no patient
registered), and logged and audited as every refused message is (emr.hl7.inbound).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import hl7
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.clock import facility_zone
from emr.core.exceptions import EmrError, ValidationFailed
from emr.core.states import OrderStatus
from emr.imaging.orders import cancel_order, check_entry, create_order, scheduled_utc
from emr.models import MODALITIES, Hl7OrderLink, ImagingOrder, User, utcnow
from emr.patients.service import create_patient

from .fields import Hl7Error, get, parse_dtm
from .patients import (
    as_hl7_error,
    cccd_of,
    find_patient,
    his_identifiers,
    link_identifiers,
    merged_values,
    patient_from_pid,
)

__all__ = ["apply_order", "interface_user", "INTERFACE_USERNAME"]

INTERFACE_USERNAME = "hl7-interface"
# Table 0074 diagnostic service section and DICOM modality codes → the modalities filmless schedules.
_MODALITY = {"CT": "CT", "CTH": "CT", "MR": "MR", "NMR": "MR", "US": "US", "RAD": "CR", "CR": "CR", "DX": "DX",
             "MG": "MG", "NMS": "NM", "NM": "NM", "XA": "XA", "RF": "RF", "PT": "PT", "VUS": "US"}
_PRIORITY = {"S": "stat", "A": "urgent", "T": "urgent", "C": "urgent", "P": "urgent", "R": "routine"}


def interface_user(session: Session) -> User:
    """The account HIS orders are placed under (orders need an ordering user). It cannot log in:
    inactive, with no usable password hash."""
    user = session.scalar(select(User).where(User.username == INTERFACE_USERNAME))
    if user is None:
        user = User(username=INTERFACE_USERNAME, full_name="HIS (HL7)", role="physician", password_hash="!",
                    active=False)
        session.add(user)
        session.commit()
    return user


def _placer(msg: hl7.Message, facility: str) -> tuple[str, str]:
    number = get(msg, "ORC", 2) or get(msg, "OBR", 2)
    if not number:
        raise Hl7Error("101", "ORC-2 placer order number is required", location="ORC^1^2")
    authority = get(msg, "ORC", 2, 2) or get(msg, "OBR", 2, 2) or facility
    return authority[:180], number[:80]


def _order_fields(msg: hl7.Message) -> tuple[dict[str, Any], str]:
    """The order's values for create_order, and the ERL of the field its start came from."""
    code, name = get(msg, "OBR", 4, 1), get(msg, "OBR", 4, 2)
    if not code and not name:
        raise Hl7Error("101", "OBR-4 universal service ID is required", location="OBR^1^4")
    section = (get(msg, "IPC", 5) or get(msg, "OBR", 24)).upper()
    if section not in _MODALITY or _MODALITY[section] not in MODALITIES:
        raise Hl7Error("103", f"modality {section!r} (OBR-24 / IPC-5) is not one filmless schedules",
                       location="OBR^1^24")
    priority = (get(msg, "TQ1", 9) or get(msg, "ORC", 7, 6) or get(msg, "OBR", 5) or "R").upper()[:1]
    when, when_at = None, "TQ1^1^7"
    for seg, num, comp in (("TQ1", 7, 1), ("ORC", 7, 4), ("OBR", 36, 1)):
        when_at = f"{seg}^1^{num}" if seg != "ORC" else "ORC^1^7^1^4"
        when = parse_dtm(get(msg, seg, num, comp), f"{seg}^1^{num}")
        if when is not None:
            break
    info = "; ".join(p for p in (get(msg, "OBR", 13), get(msg, "OBR", 31, 2) or get(msg, "OBR", 31)) if p)
    data: dict[str, Any] = {
        "modality": _MODALITY[section],
        "procedure_name": (name or code)[:200],
        "procedure_code": code[:20] or None,
        "urgency": _PRIORITY.get(priority, "routine"),
        "clinical_info": info or None,
    }
    if when is not None:
        data["scheduled_at"] = when
    station = get(msg, "IPC", 9)
    if station:
        data["station_ae_title"] = station
    return data, when_at


def _entry_refused(exc: ValidationFailed, data: dict[str, Any], when_at: str) -> Hl7Error | None:
    """The order form's refusal (emr.imaging.orders.check_entry, OrderIn's AE title) as an HL7 error that
    names the field and the limits; None for any other refusal. Table 0357 has no "out of range": a start
    outside the window is 207 (application rule), an unknown station 103 (table value not found), an AE
    title that is none 102 (data type error)."""
    if "scheduled_at" in exc.fields:
        limits = exc.field_params.get("scheduled_at", {})
        sent = data.get("scheduled_at")
        shown = "?"
        if isinstance(sent, datetime):  # as sent: facility time, or with the offset it carried
            shown = f"{sent:%H:%M %d/%m/%Y}" + (f" UTC{sent:%z}" if sent.tzinfo is not None else "")
        return Hl7Error(
            "207",
            f"scheduled start {shown} is outside the scheduling window {limits.get('start')} to "
            f"{limits.get('end')} (facility time, {facility_zone().key}): an order starts from today "
            "to one year ahead",
            location=when_at,
        )
    station = str(data.get("station_ae_title", ""))[:40]
    if exc.fields.get("station_ae_title") == "orders.error.station_unknown":
        known = exc.field_params.get("station_ae_title", {}).get("stations", "")
        return Hl7Error("103", f"IPC-9 scheduled AE title {station!r} is not a modality the DICOM gateway admits "
                               f"({known})", location="IPC^1^9")
    if "station_ae_title" in exc.fields:
        return Hl7Error("102", f"IPC-9 scheduled AE title {station!r} is not a DICOM AE title (1-16 printable "
                               "ASCII characters, no backslash)", location="IPC^1^9")
    return None


def _patient(session: Session, actor: Actor, msg: hl7.Message, facility: str) -> int:
    """The order's patient: known by HIS number or CCCD, else registered from the PID (a missed A04)."""
    ids = his_identifiers(msg, facility)
    patient = find_patient(session, ids, cccd_of(msg))
    if patient is None:
        sent = patient_from_pid(msg)
        if not ids or not {"full_name", "birth_date", "sex"} <= set(sent):
            raise Hl7Error("204", "unknown patient and the PID cannot register one", location="PID^1^3")
        try:
            patient = create_patient(session, actor, merged_values(None, sent), check_namesakes=False)
        except EmrError as exc:
            session.rollback()
            raise as_hl7_error(exc) from exc
    link_identifiers(session, ids, patient.id)
    return patient.id


def apply_order(
    session: Session, actor: Actor, msg: hl7.Message, facility: str, *, stations: Collection[str] = ()
) -> ImagingOrder:
    """Apply ORC-1 NW / CA / DC. ``stations``: ``EmrSettings.modality_stations`` (empty: any AE title)."""
    control = get(msg, "ORC", 1).upper()
    if not control:
        raise Hl7Error("101", "ORC-1 order control is required", location="ORC^1^1")
    authority, placer = _placer(msg, facility)
    link = session.scalar(
        select(Hl7OrderLink).where(Hl7OrderLink.authority == authority, Hl7OrderLink.placer_number == placer)
    )
    if control == "NW":
        if link is not None:  # a resent new order: the one already placed stands
            return session.get(ImagingOrder, link.order_id)  # type: ignore[return-value]
        data, when_at = _order_fields(msg)
        now = utcnow()
        try:
            scheduled = scheduled_utc(data.get("scheduled_at"), now)
        except OverflowError:  # year 1 or 9999 with an offset: no UTC instant Python can hold
            raise Hl7Error("102", "the scheduled start is not a date/time filmless can schedule",
                           location=when_at) from None
        try:  # the start and station before the PID registers anyone: such a refusal leaves nothing behind
            check_entry(scheduled, data.get("station_ae_title"), stations, now)
        except ValidationFailed as exc:
            raise (_entry_refused(exc, data, when_at) or Hl7Error("207", f"order refused: {exc}",
                                                                   location="OBR")) from exc
        patient_id = _patient(session, actor, msg, facility)
        orderer = interface_user(session)
        # The HIS's order, placed under its account; no role of a person: the care scope of
        # physicians (emr.access.care) governs what people do, and the HIS decided this order.
        ordering = Actor(orderer.id, actor.username, None, actor.client_ip)
        try:
            order = create_order(session, ordering, {**data, "patient_id": patient_id}, typed=True,
                                 stations=stations)
        except EmrError as exc:
            session.rollback()
            refused = _entry_refused(exc, data, when_at) if isinstance(exc, ValidationFailed) else None
            raise (refused or Hl7Error("207", f"order refused: {exc}", location="OBR")) from exc
        session.add(Hl7OrderLink(authority=authority, placer_number=placer, order_id=order.id))
        session.commit()
        return order
    if control in ("CA", "DC"):
        if link is None:
            raise Hl7Error("204", f"unknown placer order {placer}", location="ORC^1^2")
        existing = session.get(ImagingOrder, link.order_id)
        assert existing is not None
        if existing.status == OrderStatus.CANCELLED:
            return existing
        order = existing
        try:
            return cancel_order(session, actor, order.id, f"HIS ORC-1 {control} {placer}")
        except EmrError as exc:
            session.rollback()
            raise Hl7Error("207", f"cannot cancel order {order.accession_number}: {exc}", location="ORC^1^1") from exc
    raise Hl7Error("103", f"ORC-1 {control!r} is not supported (NW, CA, DC are)", location="ORC^1^1")
