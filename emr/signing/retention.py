"""Retention periods of medical records (Circular 33/2025).

Ordinary records: 10 years; psychiatric, occupational accident/disease and
traffic accident records: 20 years; death records: 30 years; medical
incidents: permanent. Counted from the end of the year the record was
closed. Nothing is ever deleted automatically: these dates only feed a
report of records past retention.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["RETENTION_YEARS", "retention_class", "retention_until"]

# record type → years (None = keep permanently). Types not listed are ordinary (10).
RETENTION_YEARS: dict[str, int | None] = {
    "ordinary": 10,
    "psychiatric": 20,
    "occupational_accident": 20,
    "occupational_disease": 20,
    "traffic_accident": 20,
    "death": 30,
    "medical_incident": None,
}
_DEFAULT_YEARS = 10


def retention_class(record_type: str) -> int | None:
    """Years to keep a record of ``record_type``; ``None`` means permanently."""
    key = record_type.strip().lower().replace("-", "_").replace(" ", "_")
    return RETENTION_YEARS.get(key, _DEFAULT_YEARS)


def retention_until(record_type: str, closed_at: dt.date) -> dt.date | None:
    """Last day of retention: 31 December of (closing year + years); ``None`` if permanent.

    A record closed on 2025-03-10 with 10 years is kept through 2035-12-31.
    """
    years = retention_class(record_type)
    if years is None:
        return None
    return dt.date(closed_at.year + years, 12, 31)
