"""Modality Worklist (C-FIND) answered live from an injected provider.

The provider (the EMR's order list) is authoritative for what matches: the
worklist rules (orders without a station are offered to every station, the
diacritic-insensitive name search, wildcard and date-range matching of
PS3.4 C.2.2.2) live in the EMR alone. This module translates the DICOM query
into a flat dict and builds one response per item the provider returns,
carrying only the attributes the modality asked for, in UTF-8. It does not
filter again: a second copy of the rules drifted once and dropped
station-less orders.
"""

from __future__ import annotations

import logging
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
)
_SPS_KEYS = (
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepID", "ScheduledProcedureStepDescription", "ScheduledPerformingPhysicianName",
)
QUERY_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "PatientID",
              "AccessionNumber", "PatientName")
_SPS_QUERY = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate")


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
    """One response data set per scheduled step the provider returns (it has done the matching)."""
    query = build_query(identifier)
    count = 0
    for item in provider(query):
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
