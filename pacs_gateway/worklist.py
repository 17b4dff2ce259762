"""Modality Worklist (C-FIND) answered live from an injected provider.

The provider (the EMR's order list) does the matching, including the
diacritic-insensitive name search it alone knows how to do; this module
translates the DICOM query into a flat dict, applies the standard's exact
and range matching again for the keys where that is unambiguous (a safety
net against a provider returning too much: Modality, station, patient ID,
accession number, Requested Procedure ID, start date and start time), and
builds responses that carry only the attributes the modality asked for, in
UTF-8. Scheduled Station AE Title is Type 1: a step without a station is
answered with the asking station's AE title.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

__all__ = ["WorklistProvider", "QUERY_KEYS", "build_query", "build_responses"]

log = logging.getLogger(__name__)

WorklistProvider = Callable[[dict[str, str]], Iterable[Mapping[str, object]]]

_TOP_KEYS = (
    "AccessionNumber", "StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "RequestedProcedureID", "RequestedProcedureDescription", "ReferringPhysicianName", "RequestingPhysician",
    "RequestedProcedurePriority",
)
_SPS_KEYS = (
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepID", "ScheduledProcedureStepDescription", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepStatus",
)
QUERY_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "PatientID",
              "AccessionNumber", "PatientName", "RequestedProcedureID", "ScheduledProcedureStepStartTime")
_SPS_QUERY = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
              "ScheduledProcedureStepStartTime")
_EXACT = ("Modality", "ScheduledStationAETitle", "PatientID", "AccessionNumber", "RequestedProcedureID")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def build_query(identifier: Dataset) -> dict[str, str]:
    """The provider's query: only keys the modality sent with a non-empty value."""
    query: dict[str, str] = {}
    sps = identifier.get("ScheduledProcedureStepSequence")
    step = sps[0] if sps else Dataset()
    for key in QUERY_KEYS:
        source = step if key in _SPS_QUERY else identifier
        value = _text(source.get(key))
        if value and value != "*":
            query[key] = value
    return query


def _wildcard(pattern: str, value: str, fold: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def _date_matches(query: str, value: str) -> bool:
    if "-" not in query:
        return value == query
    lo, _, hi = query.partition("-")
    return bool(value) and (not lo or value >= lo) and (not hi or value <= hi)


def _time_matches(query: str, value: str) -> bool:
    """TM range matching on HHMMSS prefixes ('0800-1200' holds 08:00:00 to 12:00:59)."""
    value = value.replace(":", "")
    if "-" not in query:
        return value[: len(query)] == query
    lo, _, hi = query.replace(":", "").partition("-")
    return bool(value) and (not lo or value.ljust(6, "0") >= lo.ljust(6, "0")) and (
        not hi or value[: len(hi)] <= hi)


def _matches(query: dict[str, str], item: Mapping[str, object]) -> bool:
    for key in _EXACT:
        if key == "ScheduledStationAETitle" and not _text(item.get(key)):
            continue  # a step for any station (filled in below)
        if key in query and not _wildcard(query[key], _text(item.get(key)), fold=False):
            return False
    date = query.get("ScheduledProcedureStepStartDate")
    if date and not _date_matches(date, _text(item.get("ScheduledProcedureStepStartDate"))):
        return False
    time = query.get("ScheduledProcedureStepStartTime")
    return not time or _time_matches(time, _text(item.get("ScheduledProcedureStepStartTime")))


def _fill(target: Dataset, requested: Dataset, item: Mapping[str, object], keys: tuple[str, ...]) -> None:
    for elem in requested:
        keyword = elem.keyword
        if not keyword or keyword in ("SpecificCharacterSet", "ScheduledProcedureStepSequence"):
            continue
        value = _text(item.get(keyword)) if keyword in keys else ""
        setattr(target, keyword, value)


def build_responses(
    identifier: Dataset, provider: WorklistProvider, calling_aet: str = ""
) -> Iterator[Dataset]:
    """One response data set per matching scheduled step."""
    query = build_query(identifier)
    count = 0
    asked_station = query.get("ScheduledStationAETitle", "")
    for item in provider(query):
        if not _matches(query, item):
            continue
        if not _text(item.get("ScheduledStationAETitle")):
            # Type 1 (PS3.4 K.6.1.2.2): a step any station may perform is
            # answered as the asking station's, never empty.
            station = asked_station if asked_station and not any(c in asked_station for c in "*?") else calling_aet
            item = {**item, "ScheduledStationAETitle": station}
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        _fill(ds, identifier, item, _TOP_KEYS)
        if "ScheduledProcedureStepSequence" in identifier:
            requested_seq = identifier.ScheduledProcedureStepSequence
            requested = requested_seq[0] if requested_seq else None
            step = Dataset()
            if requested is None or len(requested) == 0:
                # Universal sequence matching: an empty sequence asks for everything.
                for key in _SPS_KEYS:
                    setattr(step, key, _text(item.get(key)))
            else:
                _fill(step, requested, item, _SPS_KEYS)
            ds.ScheduledProcedureStepSequence = Sequence([step])
        count += 1
        yield ds
    log.info("worklist: %s asked %s -> %d item(s)", calling_aet or "?", query, count)
