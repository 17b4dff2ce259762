"""The facility's clock: the one place that turns stored UTC into local time and back.

Times are stored as naive UTC (:func:`utcnow`). Everything a person or a
modality sees or types is in the facility's time zone — ``FILMLESS_TIMEZONE``,
default ``Asia/Ho_Chi_Minh`` (UTC+7, no daylight saving) — whatever the
server's own zone. The zone is an IANA name resolved with :mod:`zoneinfo`,
so a zone with daylight saving gets the right offset for each instant.

The zone is process-wide (one facility per deployment): the entry points
(``create_app``, the gateway providers, the CLI's session) call
:func:`use_timezone` with the setting; until then the default applies.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_TIMEZONE",
    "facility_zone",
    "local_day",
    "local_day_bounds",
    "local_isoformat",
    "local_today",
    "to_local",
    "to_utc",
    "use_timezone",
    "utcnow",
    "valid_timezone",
]

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"

_zone: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE)


def valid_timezone(name: str) -> ZoneInfo:
    """The zone named ``name``; ValueError when it is not an IANA time zone name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a time zone name (for example Asia/Ho_Chi_Minh)") from exc


def use_timezone(name: str) -> None:
    """Make ``name`` the facility's zone for this process."""
    global _zone
    _zone = valid_timezone(name)


def facility_zone() -> ZoneInfo:
    return _zone


def utcnow() -> datetime:
    """Now as naive UTC, the form every timestamp is stored in."""
    return datetime.now(UTC).replace(tzinfo=None)


def _aware_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _clamped(value: datetime) -> datetime:
    """The earliest or latest naive datetime, for a time within a day of year 1 or 9999 that a shift
    of zone would carry outside what Python can hold (a typed "0001-01-01" must be refused or match
    nothing, not end the request with an OverflowError)."""
    return datetime.min if value.year < 5000 else datetime.max


def to_local(value: datetime) -> datetime:
    """A stored (naive UTC, or aware) instant as naive facility-local wall time."""
    try:
        return _aware_utc(value).astimezone(_zone).replace(tzinfo=None)
    except OverflowError:
        return _clamped(value)


def to_utc(value: datetime) -> datetime:
    """Facility-local wall time (naive, as typed or sent by a modality) as naive UTC for storage."""
    aware = value.replace(tzinfo=_zone) if value.tzinfo is None else value
    try:
        return aware.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return _clamped(value)


def local_isoformat(value: datetime) -> str:
    """ISO 8601 with the facility's offset (``2026-11-23T09:30:00+07:00``), as FHIR instants want."""
    return _aware_utc(value).astimezone(_zone).isoformat(timespec="seconds")


def local_day(moment: datetime) -> date:
    """The facility's calendar day of an instant (naive values are UTC)."""
    return to_local(moment).date()


def local_today(now: datetime | None = None) -> date:
    """Today in the facility (``now``: naive UTC, for tests)."""
    return local_day(now or utcnow())


def local_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The facility day ``day`` as a naive-UTC half-open range [start, end) for queries."""
    end = to_utc(datetime.combine(day + timedelta(days=1), time.min)) if day < date.max else datetime.max
    return to_utc(datetime.combine(day, time.min)), end
