"""DICOM attribute matching for C-FIND keys (PS3.4 C.2.2.2): wildcards and date ranges.

The one implementation in the code base: the EMR's worklist answers the
gateway's Modality Worklist queries with it, and the gateway passes the
answers on unchanged (the EMR is authoritative for what matches).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

__all__ = ["date_range", "has_wildcard", "wildcard_match"]

_DATE = re.compile(r"\d{8}")


def has_wildcard(pattern: str) -> bool:
    """Does the key use wildcard matching (``*`` any run, ``?`` one character; C.2.2.2.4)?"""
    return "*" in pattern or "?" in pattern


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = True) -> bool:
    """``value`` matches ``pattern`` with ``*``/``?`` wildcards; all other characters literally."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags) is not None


def date_range(value: str) -> tuple[datetime | None, datetime | None] | None:
    """DA range matching (C.2.2.2.5): 'YYYYMMDD', 'YYYYMMDD-', '-YYYYMMDD', 'A-B' → [lo, hi) days.

    ``(None, None)`` for an empty key (matches everything); None when unparseable.
    """
    value = value.strip()
    if not value:
        return None, None
    lo_s, sep, hi_s = value.partition("-")
    if not sep:
        hi_s = lo_s
    if (lo_s and not _DATE.fullmatch(lo_s)) or (hi_s and not _DATE.fullmatch(hi_s)):
        return None
    try:
        lo = datetime.strptime(lo_s, "%Y%m%d") if lo_s else None
        hi = datetime.strptime(hi_s, "%Y%m%d") if hi_s else None
    except ValueError:
        return None
    if hi is not None:  # the day after; after 31/12/9999 there is none (a query for that day crashed)
        hi = hi + timedelta(days=1) if hi.date() < date.max else None
    return lo, hi
