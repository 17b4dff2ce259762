"""FHIR R4 search parameter rules the API follows (dates, tokens, references, names, paging).

Kept apart from the resource builders so the rules are read in one place:

* dates (R4 §3.1.1.5.1 ``date``): partial values (``1990``, ``1990-05``, ``1990-05-17``,
  ``…T08:30``, ``…T08:30:15``) are ranges; prefixes ``eq ne gt lt ge le sa eb ap``. Times
  without a zone are the facility's local time (emr.core.clock); stored times are naive UTC.
* tokens (§3.1.1.5.5): ``system|code``, ``|code`` (no system), ``system|`` (any code in the
  system), ``code`` (any system).
* references (§3.1.1.5.6): ``123``, ``Patient/123`` or an absolute URL ending in ``Patient/123``.
* ``name`` (string, §3.1.1.5.3): matches the start of any word of the name (Vietnamese users
  search by the given name), case and diacritics ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, not_, or_

from emr.core.clock import to_local, to_utc, utcnow
from emr.core.normalize import fold
from emr.exports.exceptions import ExportError

__all__ = [
    "SearchParamError",
    "DateRange",
    "parse_date",
    "date_clauses",
    "day_string_clauses",
    "iso_string_clauses",
    "local_date_clauses",
    "parse_token",
    "reference_id",
    "name_clause",
    "PREFIXES",
]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_DATE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class SearchParamError(ExportError):
    """A search parameter value the server cannot read (400, OperationOutcome ``invalid``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="errors.validation")
        self.http_status = 400
        self.issue_code = "invalid"


@dataclass(frozen=True)
class DateRange:
    """A search value as the half-open range [start, end) in the facility's local time (naive)."""

    prefix: str
    start: datetime
    end: datetime


def _add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1)


def parse_date(raw: str) -> DateRange:
    m = _DATE.match(raw.strip())
    if not m:
        raise SearchParamError(f"bad date {raw!r}: use [eq|ne|gt|lt|ge|le|sa|eb|ap]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]")
    g = m.groupdict()
    try:
        start = datetime(
            int(g["year"]),
            int(g["month"] or 1),
            int(g["day"] or 1),
            int(g["hour"] or 0),
            int(g["minute"] or 0),
            int(g["second"] or 0),
        )
    except ValueError as exc:
        raise SearchParamError(f"bad date {raw!r}: {exc}") from None
    if g["second"]:
        end = start + timedelta(seconds=1)
    elif g["minute"]:
        end = start + timedelta(minutes=1)
    elif g["day"]:
        end = start + timedelta(days=1)
    elif g["month"]:
        end = _add_months(start, 1)
    else:
        end = start.replace(year=start.year + 1)
    zone = g["zone"]
    if zone:  # an explicit zone: convert to the facility's local time
        tz = timezone(timedelta(0) if zone == "Z" else _zone(zone))
        start, end = to_local(start.replace(tzinfo=tz)), to_local(end.replace(tzinfo=tz))
    return DateRange(g["prefix"] or "eq", start, end)


def _zone(zone: str) -> timedelta:
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    return sign * timedelta(hours=hours, minutes=minutes)


def _approximate(r: DateRange, now_local: datetime) -> tuple[datetime, datetime]:
    """``ap``: the range widened by 10 % of its distance from now (at least one day)."""
    gap = abs(now_local - r.start)
    margin = max(gap / 10, timedelta(days=1))
    return r.start - margin, r.end + margin


def _clause(column: Any, prefix: str, lo: Any, hi: Any) -> Any:
    return {
        "eq": and_(column >= lo, column < hi),
        "ne": not_(and_(column >= lo, column < hi)),
        "gt": column >= hi,
        "sa": column >= hi,
        "lt": column < lo,
        "eb": column < lo,
        "ge": column >= lo,
        "le": column < hi,
        "ap": and_(column >= lo, column < hi),
    }[prefix]


def _ranges(values: list[str]) -> list[tuple[str, datetime, datetime]]:
    out = []
    now_local = to_local(utcnow())
    for raw in values:
        for part in raw.split(","):  # a comma is OR within one parameter
            r = parse_date(part)
            lo, hi = _approximate(r, now_local) if r.prefix == "ap" else (r.start, r.end)
            out.append((r.prefix, lo, hi))
    return out


def _each(values: list[str], build: Any) -> list[Any]:
    """One AND-ed clause per parameter occurrence, OR over its comma-separated values."""
    clauses = []
    for raw in values:
        parts = [build(p, lo, hi) for p, lo, hi in _ranges([raw])]
        clauses.append(or_(*parts) if len(parts) > 1 else parts[0])
    return clauses


def date_clauses(column: Any, values: list[str]) -> list[Any]:
    """On a naive-UTC timestamp column."""
    return _each(values, lambda p, lo, hi: _clause(column, p, to_utc(lo), to_utc(hi)))


def local_date_clauses(column: Any, values: list[str]) -> list[Any]:
    """On a DATE column holding local calendar dates (birth dates): the range's days."""

    def build(p: str, lo: datetime, hi: datetime) -> Any:
        last = hi - timedelta(microseconds=1)
        first_day, end_day = lo.date(), last.date() + timedelta(days=1)
        return _clause(column, p, first_day, end_day)

    return _each(values, build)


def day_string_clauses(column: Any, values: list[str]) -> list[Any]:
    """On a ``YYYYMMDD`` string column (DICOM StudyDate, local)."""

    def build(p: str, lo: datetime, hi: datetime) -> Any:
        last = hi - timedelta(microseconds=1)
        return _clause(column, p, lo.strftime("%Y%m%d"), (last.date() + timedelta(days=1)).strftime("%Y%m%d"))

    return _each(values, build)


def iso_string_clauses(column: Any, values: list[str]) -> list[Any]:
    """On an ISO-8601 UTC string column (``2026-11-23T01:30:00…Z``, the audit trail)."""
    fmt = "%Y-%m-%dT%H:%M:%S"
    return _each(
        values,
        lambda p, lo, hi: _clause(column, p, to_utc(lo).strftime(fmt), to_utc(hi).strftime(fmt)),
    )


def parse_token(value: str) -> tuple[str | None, str | None]:
    """(system, code): system '' = explicitly none; None = any. Code None = any code in the system."""
    if "|" not in value:
        return None, value
    system, _, code = value.partition("|")
    return system, (code or None)


def reference_id(value: str, kind: str) -> str:
    """The id in ``123``, ``Kind/123`` or ``https://host/fhir/Kind/123`` (400 for another type)."""
    parts = [p for p in value.strip().split("/") if p]
    if not parts:
        raise SearchParamError(f"empty reference for {kind}")
    if len(parts) >= 2:
        if parts[-2] != kind:
            raise SearchParamError(f"reference {value!r} is not a {kind}")
        return parts[-1]
    return parts[0]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def name_clause(column: Any, value: str) -> Any:
    """The start of any word of the (folded) name: 'nhung', 'hong nh', 'Nguyễn' all find 'Nguyễn Thị Hồng Nhung'."""
    q = fold(value)
    if not q:
        raise SearchParamError("name must not be empty")
    esc = _like_escape(q)
    return or_(column.like(f"{esc}%", escape="\\"), column.like(f"% {esc}%", escape="\\"))
