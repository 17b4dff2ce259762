"""Query/Retrieve C-FIND SCP (PS3.4 Annex C, IHE RAD-14), answered from Orthanc's index.

Study Root and Patient Root information models, PATIENT / STUDY / SERIES /
IMAGE levels. Matching is split in two: the keys Orthanc indexes go to
``storage`` (``find_resources``); person names go there widened
(:func:`~pacs_gateway.names.index_pattern`) and are then matched here
without case or diacritics, as the worklist does (``pham*`` finds
``Phạm^Văn Bình``). Keys Orthanc does not index are return keys only (PS3.4
C.2.2.1: an SCP need not match optional keys).

Every answer is audited (who asked, what, which patients it showed) BEFORE
anything is sent; if the audit cannot be written the query fails (0xC001).

C-FIND statuses (PS3.4 C.4.1.1.4): ``0xFF00`` pending, ``0x0000`` success,
``0xFE00`` cancelled, ``0xA900`` identifier does not match SOP class,
``0xC001`` unable to process (storage or audit unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated module
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from storage import INDEXED_TAGS

from .dimse_status import Status
from .names import index_pattern, name_matches
from .normalise import decode_identifier

__all__ = [
    "AuditProvider",
    "IndexStore",
    "LEVELS",
    "PATIENT_ROOT",
    "QueryFailed",
    "STUDY_ROOT",
    "find_matches",
    "find_responses",
    "model_of",
    "read_identifier",
]

log = logging.getLogger(__name__)

# What the gateway tells the EMR's audit log about each query and retrieve:
# {"action": "dicom.query" | "dicom.retrieve", "outcome": "success" | "refused",
#  "calling_aet", "peer", "model", "level", "query" (keyword → value),
#  "patients" [{"PatientID", "PatientName"}], "results", "destination",
#  "instances", "reason"}. Raising means "not recorded": nothing is shown.
AuditProvider = Callable[[dict[str, object]], None]

PATIENT_ROOT = "PATIENT"
STUDY_ROOT = "STUDY"
_MODELS: dict[str, str] = {
    str(PatientRootQueryRetrieveInformationModelFind): PATIENT_ROOT,
    str(PatientRootQueryRetrieveInformationModelMove): PATIENT_ROOT,
    str(PatientRootQueryRetrieveInformationModelGet): PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelFind): STUDY_ROOT,
    str(StudyRootQueryRetrieveInformationModelMove): STUDY_ROOT,
    str(StudyRootQueryRetrieveInformationModelGet): STUDY_ROOT,
}
# DICOM Query/Retrieve Level → Orthanc level.
LEVELS: dict[str, str] = {"PATIENT": "Patient", "STUDY": "Study", "SERIES": "Series", "IMAGE": "Instance"}
_ORDER = ("Patient", "Study", "Series", "Instance")
UNIQUE_KEYS: dict[str, str] = {
    "Patient": "PatientID", "Study": "StudyInstanceUID", "Series": "SeriesInstanceUID", "Instance": "SOPInstanceUID",
}
# Most matches one C-FIND answers: a "list everything" query cannot tie up
# the gateway or Orthanc; the workstation is told with a warning in the log.
MAX_MATCHES = 1000
STATUS_PENDING = int(Status.PENDING)
STATUS_CANCELLED = int(Status.CANCEL)
STATUS_SUCCESS = int(Status.SUCCESS)
# C-FIND/C-MOVE/C-GET "Identifier does not match SOP Class" shares 0xA900 with C-STORE's mismatch.
STATUS_IDENTIFIER_MISMATCH = int(Status.SOP_CLASS_MISMATCH)
STATUS_UNABLE = int(Status.UNABLE_TO_PROCESS)


class IndexStore(Protocol):
    """What query/retrieve needs from storage (``storage.OrthancStore`` has it)."""

    def find_resources(self, level: Any, query: Mapping[str, str], *, limit: int = 0,
                       case_sensitive: bool = False) -> list[Any]: ...

    def get_resource(self, level: Any, orthanc_id: str) -> Any: ...

    def count_below(self, level: Any, orthanc_id: str) -> tuple[int, int, int, tuple[str, ...]]: ...

    def instance_metadata(self, instance_id: str) -> dict[str, str]: ...

    def stored_instances(self, level: Any, orthanc_ids: list[str], *, workers: int = 4) -> list[Any]: ...

    def list_instances(self, level: Any, orthanc_ids: list[str]) -> list[Any]: ...

    def describe_instances(self, instances: list[Any], *, workers: int = 4) -> list[Any]: ...

    def save_instance(self, instance_id: str, target: Any) -> int: ...


class QueryFailed(Exception):
    """A C-FIND/C-MOVE/C-GET identifier the gateway cannot answer; ``status`` for the peer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def model_of(abstract_syntax: str) -> str:
    """``PATIENT`` or ``STUDY`` root for a Q/R SOP class UID."""
    return _MODELS[str(abstract_syntax)]


@dataclass
class Match:
    """One matching resource with the tags of it and every level above it."""

    level: str
    orthanc_id: str
    tags: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)  # level → Orthanc ID, up to the patient's study

    @property
    def patient(self) -> dict[str, str]:
        return {"PatientID": self.tags.get("PatientID", ""), "PatientName": self.tags.get("PatientName", "")}


def _value(elem: DataElement) -> str:
    value = elem.value
    if value is None or elem.VR == "SQ":
        return ""
    if isinstance(value, bytes):
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def read_identifier(event: Any, service: str, calling_aet: str) -> Dataset:
    """The request's identifier, its text decoded as :func:`~pacs_gateway.normalise.decode_identifier` decides.

    One INFO line when the label was not believed (e.g. UTF-8 sent without a
    Specific Character Set, as DCMTK on a UTF-8 terminal does). Answers are
    always ``ISO_IR 192``. Raises whatever decoding the identifier raises.
    """
    identifier: Dataset = event.identifier
    why = decode_identifier(identifier)
    if why is not None:
        log.info("%s from %s: %s; its text is matched as decoded and answered in ISO_IR 192", service,
                 calling_aet or "?", why)
    return identifier


def query_level(identifier: Dataset, model: str) -> str:
    """The Orthanc level asked for; :class:`QueryFailed` (0xA900) if absent or not in the model."""
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    level = LEVELS.get(raw)
    if level is None:
        raise QueryFailed(STATUS_IDENTIFIER_MISMATCH, f"Query/Retrieve Level {raw or 'missing'!r} is not valid")
    if model == STUDY_ROOT and level == "Patient":
        raise QueryFailed(STATUS_IDENTIFIER_MISMATCH, "PATIENT level is not in the Study Root model")
    return level


def matching_keys(identifier: Dataset, level: str) -> dict[str, str]:
    """Keys with a value to match on, at ``level`` or above (keyword → DICOM value)."""
    keys: dict[str, str] = {}
    allowed = _ORDER[: _ORDER.index(level) + 1]
    indexed = {k for lvl in allowed for k in INDEXED_TAGS[lvl]}
    if level == "Study":
        indexed.add("ModalitiesInStudy")
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = _value(elem)
        if not value or value.strip("*") == "" or keyword not in indexed:
            continue
        keys[keyword] = value
    return keys


def find_matches(store: IndexStore, level: str, keys: Mapping[str, str], limit: int = MAX_MATCHES) -> list[Match]:
    """Resources at ``level`` matching ``keys``, with the tags of every level above them."""
    name_keys = {k: v for k, v in keys.items() if k in _PN_KEYS}
    orthanc_query: dict[str, str] = {}
    for key, value in keys.items():
        if key in name_keys:
            widened = index_pattern(value)
            if widened.strip("*"):
                orthanc_query[key] = widened
        else:
            orthanc_query[key] = value
    # Widened names may match more than the limit before they are narrowed here.
    fetch = 0 if name_keys else limit + 1
    entries = store.find_resources(level, orthanc_query, limit=fetch)  # type: ignore[arg-type]
    cache: dict[tuple[str, str], Any] = {}

    def resource(lvl: str, orthanc_id: str) -> Any:
        key = (lvl, orthanc_id)
        if key not in cache:
            cache[key] = store.get_resource(lvl, orthanc_id)
        return cache[key]

    matches: list[Match] = []
    for entry in entries:
        tags = dict(entry.tags)
        ids = {level: entry.orthanc_id}
        if level in ("Series", "Instance"):
            series = entry if level == "Series" else resource("Series", entry.parent_id)
            study = resource("Study", series.parent_id)
            ids.update(Series=series.orthanc_id, Study=study.orthanc_id)
            tags = {**study.tags, **series.tags, **tags}
        if level == "Study":
            ids["Patient"] = entry.parent_id
        if any(not name_matches(pattern, tags.get(key, "")) for key, pattern in name_keys.items()):
            continue
        matches.append(Match(level, entry.orthanc_id, tags, ids))
        if len(matches) > limit:
            break
    return matches


# Person-name attributes Orthanc indexes (matched without case or diacritics).
_PN_KEYS = frozenset({"PatientName", "ReferringPhysicianName", "RequestingPhysician", "OperatorsName"})


def _computed(store: IndexStore, match: Match, keyword: str, ae_title: str,
              counts: dict[str, tuple[int, int, int, tuple[str, ...]]]) -> str | None:
    """Return keys Orthanc does not keep as tags; ``None`` when ``keyword`` is not one."""
    level = match.level
    if keyword == "RetrieveAETitle":
        return ae_title
    if keyword == "InstanceAvailability":
        return "ONLINE"
    if keyword == "QueryRetrieveLevel":
        return {v: k for k, v in LEVELS.items()}[level]
    if keyword == "SOPClassUID" and level == "Instance":
        return store.instance_metadata(match.orthanc_id).get("SopClassUid", "")
    wanted = {
        "NumberOfPatientRelatedStudies": ("Patient", 0),
        "NumberOfPatientRelatedSeries": ("Patient", 1),
        "NumberOfPatientRelatedInstances": ("Patient", 2),
        "NumberOfStudyRelatedSeries": ("Study", 1),
        "NumberOfStudyRelatedInstances": ("Study", 2),
        "ModalitiesInStudy": ("Study", 3),
        "NumberOfSeriesRelatedInstances": ("Series", 2),
    }.get(keyword)
    if wanted is None:
        return None
    owner, index = wanted
    orthanc_id = match.ids.get(owner)
    if orthanc_id is None or _ORDER.index(owner) > _ORDER.index(level):
        return ""
    if owner not in counts:
        counts[owner] = store.count_below(owner, orthanc_id)  # type: ignore[arg-type]
    value = counts[owner][index]
    return "\\".join(value) if isinstance(value, tuple) else str(value)


def _response(store: IndexStore, identifier: Dataset, match: Match, ae_title: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    counts: dict[str, tuple[int, int, int, tuple[str, ...]]] = {}
    for elem in identifier:
        keyword = elem.keyword
        if elem.tag.is_private or keyword in ("SpecificCharacterSet", ""):
            continue
        if elem.VR == "SQ":
            ds.add_new(elem.tag, "SQ", [])
            continue
        value = _computed(store, match, keyword, ae_title, counts)
        if value is None:
            value = match.tags.get(keyword, "")
        ds.add_new(elem.tag, elem.VR, value if value != "" else None)
    if "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = {v: k for k, v in LEVELS.items()}[match.level]
    return ds


def find_responses(
    store: IndexStore,
    identifier: Dataset,
    model: str,
    *,
    ae_title: str,
    audit: Callable[[list[Match], str, dict[str, str]], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """(status, identifier) pairs for pynetdicom's C-FIND handler.

    ``audit(matches, level, keys)`` runs before the first response; if it
    raises, the query fails and nothing is shown.
    """
    try:
        level = query_level(identifier, model)
        keys = matching_keys(identifier, level)
        matches = find_matches(store, level, keys)
    except QueryFailed as exc:
        log.warning("query refused: %s", exc.reason)
        yield _failure(exc.status, exc.reason), None
        return
    if len(matches) > MAX_MATCHES:
        log.warning("query %s at %s level matched more than %d; answering the first %d", keys, level,
                    MAX_MATCHES, MAX_MATCHES)
        matches = matches[:MAX_MATCHES]
    audit(matches, level, keys)
    for match in matches:
        if cancelled():
            yield STATUS_CANCELLED, None
            return
        yield STATUS_PENDING, _response(store, identifier, match, ae_title)
    yield STATUS_SUCCESS, None


def _failure(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds
