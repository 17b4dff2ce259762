"""The DICOMweb queries the proxy sends upstream, built here from an allow-list, and the answers pinned to one study.

Why build queries instead of forwarding them: Orthanc reads every query key
it knows (tag numbers as well as keywords, repeated keys, ``includefield``,
fuzzy matching), and some of them replace the study the path names. A key
that slipped through once listed the whole PACS to a patient's share link.
So the caller's query string is never forwarded: each level accepts a few
matching keys with strictly formatted values (no wildcards, no ranges), the
proxy writes the upstream query itself with the study (and series) pinned,
and every answer is filtered again so that only the pinned study's objects
come back — defence in depth should Orthanc ever widen a query by itself.

Report objects (encapsulated PDF/CDA, structured reports: the signed report
stored in the PACS) can be hidden from a caller whose role may not read
reports; the filter drops them from QIDO answers and metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "QueryRefused",
    "REPORT_MODALITIES",
    "build_query",
    "is_report",
    "pin_items",
]

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_INCLUDE = re.compile(r"^([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]{0,63})$")
_DIGITS = re.compile(r"^[0-9]{1,9}$")
_MODALITY = re.compile(r"^[A-Z]{2,16}$")

STUDY_UID_TAG = "0020000D"
SERIES_UID_TAG = "0020000E"
SOP_CLASS_TAG = "00080016"
MODALITY_TAG = "00080060"

# Series that carry report content rather than images.
REPORT_MODALITIES = frozenset({"DOC", "SR"})
_REPORT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA / STL …
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
)

# level -> matching key -> value check. Nothing else is accepted.
_MATCHING: dict[str, dict[str, re.Pattern[str]]] = {
    "study": {"StudyInstanceUID": UID},
    "series": {"SeriesInstanceUID": UID, "Modality": _MODALITY, "SeriesNumber": _DIGITS},
    "instance": {"SOPInstanceUID": UID, "SOPClassUID": UID, "InstanceNumber": _DIGITS},
}
# Tags the filter needs in every answer, whatever the caller asked for.
_ALWAYS_INCLUDE = {
    "study": (STUDY_UID_TAG,),
    "series": (STUDY_UID_TAG, MODALITY_TAG),
    "instance": (STUDY_UID_TAG, SERIES_UID_TAG, SOP_CLASS_TAG, MODALITY_TAG),
}
_MAX_INCLUDE = 32
_IGNORED = frozenset({"token"})  # the viewer's share token rides in the query string on some requests


class QueryRefused(ValueError):
    """The caller's query has a key or value the proxy does not accept."""


def build_query(level: str, args: Iterable[tuple[str, str]], *, pinned: Mapping[str, str]) -> list[tuple[str, str]]:
    """The upstream query for a QIDO search at ``level`` (``study``, ``series``, ``instance``).

    ``args`` is the caller's query as (key, value) pairs; ``pinned`` holds the
    keys the server fixes (``StudyInstanceUID`` for a study search). Keys are
    compared exactly: a tag-number alias, another case, a second value or an
    empty value of any key is refused, never passed on.
    """
    matching = _MATCHING[level]
    seen: dict[str, str] = {}
    include: list[str] = []
    for key, value in args:
        if key in _IGNORED:
            continue
        if key == "includefield":
            for part in value.split(","):
                if not _INCLUDE.match(part) or part.lower() == "all":
                    raise QueryRefused(f"includefield {part!r}")
                include.append(part)
            if len(include) > _MAX_INCLUDE:
                raise QueryRefused("too many includefield values")
            continue
        if key in ("limit", "offset"):
            if not _DIGITS.match(value) or key in seen:
                raise QueryRefused(key)
            seen[key] = value
            continue
        check = matching.get(key)
        if check is None or key in seen or not check.match(value) or len(value) > 64:
            raise QueryRefused(f"query key {key!r}")
        seen[key] = value
    for key, value in pinned.items():
        if key in seen and seen[key] != value:
            raise QueryRefused(f"{key} differs from the study asked for")
        seen[key] = value
    query = list(seen.items())
    for tag in (*_ALWAYS_INCLUDE[level], *include):
        if ("includefield", tag) not in query:
            query.append(("includefield", tag))
    return query


def _value(item: Mapping[str, Any], tag: str) -> str | None:
    element = item.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        return None
    return values[0]


def is_report(item: Mapping[str, Any]) -> bool:
    """The DICOM JSON object (series or instance) carries report content."""
    modality = _value(item, MODALITY_TAG)
    sop_class = _value(item, SOP_CLASS_TAG) or ""
    return modality in REPORT_MODALITIES or sop_class.startswith(_REPORT_SOP_PREFIXES)


def pin_items(
    items: Any, *, study_uid: str, series_uid: str | None = None, hide_reports: bool = False
) -> list[dict[str, Any]]:
    """Only the objects of the pinned study (and series); reports dropped when ``hide_reports``.

    An object that does not name its study is dropped too: the answer must
    prove where each object belongs.
    """
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ValueError("a DICOM JSON answer is a list")
    kept: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or _value(item, STUDY_UID_TAG) != study_uid:
            continue
        if series_uid is not None and _value(item, SERIES_UID_TAG) != series_uid:
            continue
        if hide_reports and is_report(item):
            continue
        kept.append(item)
    return kept


def item_value(item: Mapping[str, Any], tag: str) -> str | None:
    """A single string value of a DICOM JSON element (None when absent or multi-valued)."""
    return _value(item, tag)
