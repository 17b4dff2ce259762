"""The audit log for the admin page and its CSV export (both audited).

A year of a hospital's use is about a million rows, so nothing here reads the
whole log: pages are keyset pages by id (newest first), every filter walks an
index that ends in ``id`` (user name, action, patient), and a date range is
turned into an id range through the index on ``at`` (rows are appended in
time order). Dates typed by the admin are facility-local days.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import local_day_bounds, local_isoformat, to_local
from emr.core.exceptions import ValidationFailed

from ..i18n import catalogue, t
from ..models import AuditEntry, Patient

__all__ = [
    "AuditFilter",
    "AuditPage",
    "PAGE_SIZE",
    "action_label",
    "object_label",
    "known_actions",
    "parse_filter",
    "audit_page",
    "audit_csv",
    "local_time",
]

PAGE_SIZE = 50
_CSV_CHUNK = 2000
_OUTCOMES = ("success", "denied", "failure")


@dataclass(frozen=True)
class AuditFilter:
    """What the admin asked for; ``patient`` is a patient id or record code (BN…)."""

    user: str = ""
    patient: str = ""
    action: str = ""
    outcome: str = ""
    date_from: date | None = None
    date_to: date | None = None
    # What was typed in a date field that is not a date (shown again as typed), and the Vietnamese errors:
    # ``date_from``/``date_to`` (not a date), ``range`` (from after to). A filter with errors lists nothing.
    typed: dict[str, str] = field(default_factory=dict, hash=False)
    errors: dict[str, str] = field(default_factory=dict, hash=False)

    def as_args(self) -> dict[str, str]:
        """The filter as query-string values (for page links and the CSV link); a bad date as typed."""
        return {
            "user": self.user,
            "patient": self.patient,
            "action": self.action,
            "outcome": self.outcome,
            "date_from": self.date_from.isoformat() if self.date_from else self.typed.get("date_from", ""),
            "date_to": self.date_to.isoformat() if self.date_to else self.typed.get("date_to", ""),
        }


@dataclass
class AuditPage:
    rows: list[AuditEntry]
    newer: int | None = None  # pass as ``after`` for the newer page
    older: int | None = None  # pass as ``before`` for the older page
    patient_codes: dict[int, str] = field(default_factory=dict)
    unknown_patient: bool = False


def _day(value: str) -> date | None:
    """A typed day: ``yyyy-mm-dd`` (what a date field sends) or ``dd/mm/yyyy`` (typed by hand)."""
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            continue
    return None


def parse_filter(args: Any) -> AuditFilter:
    """An :class:`AuditFilter` from request arguments.

    An unknown outcome is dropped; a date that is not a date, or a range whose
    start is after its end, is an error (``AuditFilter.errors``), never dropped:
    dropping it listed or exported the whole log as if no date had been asked for.
    """

    def get(name: str, limit: int = 64) -> str:
        # Control characters (a NUL breaks PostgreSQL text) are never part of a name or code.
        text = "".join(c for c in str(args.get(name, "") or "")[: limit * 4] if c.isprintable())
        return text.strip()[:limit]

    outcome = get("outcome")
    typed: dict[str, str] = {}
    errors: dict[str, str] = {}
    days: dict[str, date | None] = {}
    for name in ("date_from", "date_to"):
        text = get(name, 40)
        day = days[name] = _day(text) if text else None
        if text and day is None:
            typed[name] = text
            errors[name] = t("audit.error.date", field=t(f"audit.{name}"), value=text)
    lo, hi = days["date_from"], days["date_to"]
    if lo is not None and hi is not None and lo > hi:
        errors["range"] = t(
            "audit.error.date_order", date_from=lo.strftime("%d/%m/%Y"), date_to=hi.strftime("%d/%m/%Y")
        )
    return AuditFilter(
        user=get("user"),
        patient=get("patient"),
        action=get("action", 40),
        outcome=outcome if outcome in _OUTCOMES else "",
        date_from=lo,
        date_to=hi,
        typed=typed,
        errors=errors,
    )


def known_actions() -> list[str]:
    """Every action the catalogue names, for the action filter (no scan of the log)."""
    prefix = "audit.action."
    return sorted(k[len(prefix) :] for k in catalogue() if k.startswith(prefix))


def action_label(action: str) -> str:
    """The Vietnamese name of an audited action; an action the catalogue does not know shows as its code."""
    key = f"audit.action.{action}"
    return t(key) if key in catalogue() else action


def object_label(object_type: str | None) -> str:
    """The Vietnamese name of what an audit row is about (``audit.object.<type>``: a patient, a document,
    a FHIR resource type ...); a type the catalogue does not know shows as its code, none as ''."""
    if not object_type:
        return ""
    key = f"audit.object.{object_type}"
    return t(key) if key in catalogue() else object_type


def _stored(at: str) -> datetime | None:
    try:
        return datetime.strptime(at[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def local_time(at: str) -> str:
    """A stored ISO UTC time (``…Z``) as facility-local ``dd/mm/yyyy HH:MM:SS``."""
    when = _stored(at)
    return to_local(when).strftime("%d/%m/%Y %H:%M:%S") if when else at


def _local_iso(at: str) -> str:
    when = _stored(at)
    return local_isoformat(when) if when else at


def _utc_bound(day: date) -> str:
    """The stored ``at`` text of the first instant of a facility-local day."""
    return local_day_bounds(day)[0].strftime("%Y-%m-%dT%H:%M:%S")


def _patient_id(session: Session, text: str) -> int | None:
    if not text:
        return None
    if text.isdigit() and int(text) < 2**31:
        return int(text)
    found = session.scalar(select(Patient.id).where(Patient.code == text.upper()))
    return found if found is not None else -1  # no such record: an empty result, not "all patients"


def _id_bounds(session: Session, flt: AuditFilter) -> tuple[int | None, int | None]:
    """The id range of the date range, found through the index on ``at``."""
    lo = hi = None
    if flt.date_from is not None:
        first = session.scalar(
            select(AuditEntry.id).where(AuditEntry.at >= _utc_bound(flt.date_from)).order_by(AuditEntry.at).limit(1)
        )
        lo = first if first is not None else 2**62
    if flt.date_to is not None:
        last = session.scalar(
            select(AuditEntry.id)
            .where(AuditEntry.at < _utc_bound(flt.date_to + timedelta(days=1)))
            .order_by(AuditEntry.at.desc())
            .limit(1)
        )
        hi = last if last is not None else -1
    return lo, hi


def _filtered(session: Session, flt: AuditFilter) -> Select[Any]:
    stmt = select(AuditEntry)
    if flt.user:
        stmt = stmt.where(AuditEntry.username == flt.user)
    if flt.action:
        stmt = stmt.where(AuditEntry.action == flt.action)
    if flt.outcome:
        stmt = stmt.where(AuditEntry.outcome == flt.outcome)
    pid = _patient_id(session, flt.patient)
    if pid is not None:
        stmt = stmt.where(AuditEntry.patient_id == pid)
    lo, hi = _id_bounds(session, flt)
    if lo is not None:
        stmt = stmt.where(AuditEntry.id >= lo)
    if hi is not None:
        stmt = stmt.where(AuditEntry.id <= hi)
    return stmt


def _codes(session: Session, rows: list[AuditEntry]) -> dict[int, str]:
    ids = {r.patient_id for r in rows if r.patient_id is not None}
    if not ids:
        return {}
    return {pid: code for pid, code in session.execute(select(Patient.id, Patient.code).where(Patient.id.in_(ids)))}


def _usable(flt: AuditFilter) -> None:
    """A filter with a bad date lists and exports nothing (the caller shows ``flt.errors``)."""
    if flt.errors:
        raise ValidationFailed({name: "audit.error.not_filtered" for name in flt.errors})


def audit_page(
    session: Session,
    actor: Actor,
    flt: AuditFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> AuditPage:
    """One page of matching rows, newest first; ``before``/``after`` are the ids the page links carry."""
    _usable(flt)
    stmt = _filtered(session, flt)
    if after is not None:
        rows = list(session.scalars(stmt.where(AuditEntry.id > after).order_by(AuditEntry.id).limit(size + 1)))
        has_more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        page = AuditPage(rows, newer=rows[0].id if rows and has_more_newer else None)
        page.older = rows[-1].id if rows else None
    else:
        if before is not None:
            stmt = stmt.where(AuditEntry.id < before)
        rows = list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(size + 1)))
        has_more_older = len(rows) > size
        rows = rows[:size]
        page = AuditPage(rows, older=rows[-1].id if rows and has_more_older else None)
        page.newer = rows[0].id if rows and before is not None else None
    page.patient_codes = _codes(session, rows)
    page.unknown_patient = _patient_id(session, flt.patient) == -1
    audit.record(session, actor, "audit.view", object_type="audit", details={**flt.as_args(), "page": before or after})
    session.commit()
    return page


_CSV_COLUMNS = (
    "id",
    "time_local",
    "username",
    "role",
    "action",
    "action_name",
    "outcome",
    "patient_id",
    "patient_code",
    "object_type",
    "object_id",
    "client_ip",
    "details",
    "object_name",  # appended (not next to object_type) so existing column positions stay as they were
)


def _cell(value: object) -> str:
    """Text for a CSV cell; a leading = + - @ is neutralised so a spreadsheet never runs it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def audit_csv(session: Session, actor: Actor, flt: AuditFilter) -> Iterator[str]:
    """The matching rows as CSV (UTF-8 with BOM for spreadsheet programs), newest first, in chunks.

    The export itself is audited before the first byte is sent.
    """
    _usable(flt)
    audit.record(session, actor, "audit.export", object_type="audit", details=flt.as_args())
    session.commit()
    stmt = _filtered(session, flt)

    def chunks() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(_CSV_COLUMNS)
        yield "\ufeff" + buf.getvalue()
        before: int | None = None
        while True:
            q = stmt if before is None else stmt.where(AuditEntry.id < before)
            rows = list(session.scalars(q.order_by(AuditEntry.id.desc()).limit(_CSV_CHUNK)))
            if not rows:
                session.commit()
                return
            codes = _codes(session, rows)
            buf = io.StringIO()
            writer = csv.writer(buf)
            for r in rows:
                writer.writerow(
                    [
                        _cell(v)
                        for v in (
                            r.id,
                            _local_iso(r.at),
                            r.username,
                            r.role,
                            r.action,
                            action_label(r.action),
                            r.outcome,
                            r.patient_id,
                            codes.get(r.patient_id) if r.patient_id is not None else "",
                            r.object_type,
                            r.object_id,
                            r.client_ip,
                            json.dumps(json.loads(r.details or "{}"), ensure_ascii=False),
                            object_label(r.object_type),
                        )
                    ]
                )
            before = rows[-1].id
            # End the read before the chunk goes out: a slow download must not hold a transaction
            # (on SQLite every transaction takes the write lock other users' audit rows need).
            session.commit()
            session.expunge_all()
            yield buf.getvalue()

    return chunks()
