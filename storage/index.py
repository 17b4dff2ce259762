"""Reading Orthanc's index for DICOM query/retrieve (the gateway's C-FIND, C-MOVE, C-GET).

Why through Orthanc's REST index rather than its own DICOM C-FIND: filmless
turns Orthanc's DICOM server off (the gateway is the only DICOM edge), and the
REST answers let the gateway apply its own access rules, auditing and the
diacritic-insensitive name matching Orthanc lacks.

Only Orthanc's *main DICOM tags* are indexed (``StorageAccessOnFind`` is
``Never``): :data:`INDEXED_TAGS` lists them per level, and callers must not
send other keys to :meth:`IndexQueries.find_resources` (Orthanc would have to
open every file, or ignore them).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import requests

from .exceptions import NotFound, StorageUnavailable
from .models import IndexEntry, StoredInstance

__all__ = ["INDEXED_TAGS", "IndexQueries", "Level"]

Level = Literal["Patient", "Study", "Series", "Instance"]

# Orthanc 1.10's main DICOM tags, by the level that owns them.
INDEXED_TAGS: dict[str, frozenset[str]] = {
    "Patient": frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"}),
    "Study": frozenset({
        "StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber", "StudyInstanceUID",
        "RequestedProcedureDescription", "InstitutionName", "RequestingPhysician", "ReferringPhysicianName",
    }),
    "Series": frozenset({
        "SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName", "SeriesDescription",
        "BodyPartExamined", "SequenceName", "ProtocolName", "SeriesNumber", "CardiacNumberOfImages",
        "ImagesInAcquisition", "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
        "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
        "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent",
    }),
    "Instance": frozenset({
        "InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex", "InstanceNumber",
        "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID", "ImagePositionPatient", "ImageComments",
    }),
}
_PLURAL = {"Patient": "patients", "Study": "studies", "Series": "series", "Instance": "instances"}
_PARENT_KEY = {"Study": "ParentPatient", "Series": "ParentStudy", "Instance": "ParentSeries"}
_CHILDREN_KEY = {"Patient": "Studies", "Study": "Series", "Series": "Instances"}


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _entry(level: str, item: Mapping[str, Any]) -> IndexEntry:
    tags = {k: _text(v) for k, v in (item.get("MainDicomTags") or {}).items()}
    patient = {k: _text(v) for k, v in (item.get("PatientMainDicomTags") or {}).items()}
    return IndexEntry(
        level=level,
        orthanc_id=str(item["ID"]),
        parent_id=str(item.get(_PARENT_KEY.get(level, ""), "") or ""),
        tags={**patient, **tags},
        children=tuple(str(c) for c in item.get(_CHILDREN_KEY.get(level, ""), []) or ()),
    )


class IndexQueries:
    """Mixed into :class:`storage.OrthancStore`: typed reads of Orthanc's index."""

    # Provided by OrthancStore.
    def _get_json(self, endpoint: str, **params: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _post_json(self, endpoint: str, body: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def open_stream(self, path: str, *, headers: Mapping[str, str] | None = None,
                    timeout: float | None = None) -> requests.Response:  # pragma: no cover - overridden
        raise NotImplementedError

    def last_change(self) -> int:
        """Sequence number of Orthanc's newest change (where a new follower of the feed starts)."""
        return int(self._get_json("/changes", last="").get("Last", 0))

    def read_instance(self, instance_id: str) -> bytes:
        """The stored Part-10 file of one instance, as Orthanc keeps it.

        Unlike ``instance_file`` it asks Orthanc not to gzip the answer:
        compressing half a megabyte per image on localhost halves retrieve speed.
        """
        endpoint = f"/instances/{instance_id}/file"
        with self.open_stream(endpoint, headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code == 404:
                raise NotFound("Orthanc has no such instance", response.url)
            if response.status_code != 200:
                raise StorageUnavailable(f"Orthanc answered HTTP {response.status_code}", response.url)
            return response.content

    def read_instance_into(self, instance_id: str, buffer: bytearray | None) -> memoryview:
        """:meth:`read_instance` as a view; a store that can reads into ``buffer`` instead (OrthancStore)."""
        return memoryview(self.read_instance(instance_id))

    def _read_json(self, endpoint: str, query: Any = None, *, command: bool = False) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _save_to(self, endpoint: str, target: Path, chunk: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def save_instance(self, instance_id: str, target: Path, chunk: int = 1 << 20) -> int:
        """Stream the stored file of one instance into ``target`` (RAM stays flat); returns its size.

        Orthanc is asked not to gzip it (compressing half a megabyte per image
        on localhost halves retrieve speed).
        """
        return self._save_to(f"/instances/{instance_id}/file", target, chunk)

    def find_resources(self, level: Level, query: Mapping[str, str], *, limit: int = 0,
                       case_sensitive: bool = False) -> list[IndexEntry]:
        """Resources of ``level`` matching DICOM C-FIND style ``query`` (keyword → value).

        Values use DICOM matching (``*``/``?`` wildcards, ``A-B`` date ranges,
        ``\\``-separated UID lists). Keys must be in :data:`INDEXED_TAGS` at
        this level or above, or ``ModalitiesInStudy`` (Study level).
        ``case_sensitive`` applies to person names only (as in Orthanc).
        """
        allowed: set[str] = {"ModalitiesInStudy"} if level == "Study" else set()
        for owner in ("Patient", "Study", "Series", "Instance"):
            allowed |= INDEXED_TAGS[owner]
            if owner == level:
                break
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise ValueError(f"not indexed at {level} level: {', '.join(unknown)}")
        body: dict[str, Any] = {"Level": level, "Query": dict(query), "Expand": True, "CaseSensitive": case_sensitive}
        if limit:
            body["Limit"] = limit
        return [_entry(level, item) for item in self._read_json("/tools/find", body)]

    def get_resource(self, level: Level, orthanc_id: str) -> IndexEntry:
        """One resource with its main tags (a study also carries its patient's)."""
        return _entry(level, self._read_json(f"/{_PLURAL[level]}/{orthanc_id}"))

    def count_below(self, level: Level, orthanc_id: str) -> tuple[int, int, int, tuple[str, ...]]:
        """(studies, series, instances, modalities) under one patient, study or series.

        For C-FIND's Number of ... Related ... keys and ModalitiesInStudy.
        """
        if level == "Instance":
            return 0, 0, 0, ()
        if level == "Series":
            one = self._get_json(f"/series/{orthanc_id}")
            modality = _text((one.get("MainDicomTags") or {}).get("Modality"))
            return 1, 1, len(one.get("Instances", [])), (modality,) if modality else ()
        series = self._get_json(f"/{_PLURAL[level]}/{orthanc_id}/series")
        studies = {str(s.get("ParentStudy", "")) for s in series}
        modalities: dict[str, None] = {}
        for s in series:
            modality = _text((s.get("MainDicomTags") or {}).get("Modality"))
            if modality:
                modalities.setdefault(modality, None)
        instances = sum(len(s.get("Instances", [])) for s in series)
        return len(studies), len(series), instances, tuple(modalities)

    def instance_metadata(self, instance_id: str) -> dict[str, str]:
        """Orthanc's metadata of an instance (``SopClassUid``, ``TransferSyntax``, ...)."""
        return {str(k): str(v) for k, v in self._read_json(f"/instances/{instance_id}/metadata?expand").items()}

    def stored_instances(self, level: Level, orthanc_ids: list[str], *, workers: int = 4) -> list[StoredInstance]:
        """Every instance under the given resources, with SOP class and transfer syntax.

        In series and instance-number order, so a workstation receives a
        series in the order it will display it. The metadata look-ups run
        ``workers`` at a time (one small request each).
        """
        return self.describe_instances(self.list_instances(level, orthanc_ids), workers=workers)

    def list_instances(self, level: Level, orthanc_ids: list[str]) -> list[StoredInstance]:
        """:meth:`stored_instances` without the per-instance metadata look-ups (one request per resource).

        Same order; ``sop_class_uid`` and ``transfer_syntax`` are empty. A
        retrieve starts copying files with this while
        :meth:`describe_instances` asks for the rest.
        """
        listed: list[dict[str, Any]] = []
        for orthanc_id in orthanc_ids:
            if level == "Instance":
                listed.append(self._read_json(f"/instances/{orthanc_id}"))
            else:
                listed.extend(self._read_json(f"/{_PLURAL[level]}/{orthanc_id}/instances"))
        found = [
            StoredInstance(
                orthanc_id=str(item["ID"]),
                series_id=str(item.get("ParentSeries", "")),
                sop_instance_uid=_text((item.get("MainDicomTags") or {}).get("SOPInstanceUID")),
                sop_class_uid="",
                transfer_syntax="",
                instance_number=_number((item.get("MainDicomTags") or {}).get("InstanceNumber")),
                size=int(item.get("FileSize", 0) or 0),
            )
            for item in listed
        ]
        series_order = {sid: n for n, sid in enumerate(dict.fromkeys(f.series_id for f in found))}
        return sorted(found, key=lambda f: (series_order[f.series_id], f.instance_number))

    def describe_instances(self, instances: list[StoredInstance], *, workers: int = 4) -> list[StoredInstance]:
        """``instances`` with SOP class and transfer syntax from Orthanc's metadata, in the same order.

        An instance deleted meanwhile is left out. The look-ups run
        ``workers`` at a time (one small request each).
        """

        def describe(item: StoredInstance) -> StoredInstance | None:
            try:
                meta = self.instance_metadata(item.orthanc_id)
            except NotFound:
                return None  # deleted meanwhile
            return replace(item, sop_class_uid=meta.get("SopClassUid", ""),
                           transfer_syntax=meta.get("TransferSyntax", ""))

        if workers <= 1 or len(instances) <= 1:
            return [d for d in map(describe, instances) if d is not None]  # no thread to start
        with ThreadPoolExecutor(max_workers=min(workers, len(instances)), thread_name_prefix="index") as pool:
            return [d for d in pool.map(describe, instances) if d is not None]


def _number(value: Any) -> int:
    try:
        return int(float(_text(value)))
    except ValueError:
        return 0
