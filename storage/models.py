"""Typed references to what Orthanc stores, as the rest of filmless sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["UploadResult", "StudySummary", "Change", "ChangesPage", "SystemInfo", "IndexEntry", "StoredInstance"]


@dataclass(frozen=True)
class UploadResult:
    instance_id: str
    study_id: str
    series_id: str
    patient_id: str
    already_stored: bool


@dataclass(frozen=True)
class StudySummary:
    """A study with its main tags; ``orthanc_id`` is Orthanc's own hash."""

    orthanc_id: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    study_date: str
    study_description: str
    modalities: tuple[str, ...]
    series_count: int
    instance_count: int | None = None
    tags: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str  # e.g. "NewInstance", "StableStudy"
    resource_type: str  # "Instance", "Series", "Study", "Patient"
    resource_id: str
    date: str


@dataclass(frozen=True)
class ChangesPage:
    changes: tuple[Change, ...]
    last: int
    done: bool


@dataclass(frozen=True)
class SystemInfo:
    version: str
    name: str
    dicom_aet: str
    plugins: tuple[str, ...]
    instances: int
    studies: int


@dataclass(frozen=True)
class StorageStatistics:
    """What Orthanc holds and the disk it takes (``/statistics``), for metrics and capacity planning."""

    disk_bytes: int  # compressed, as stored (TotalDiskSize)
    uncompressed_bytes: int  # TotalUncompressedSize
    instances: int
    series: int
    studies: int
    patients: int


@dataclass(frozen=True)
class IndexEntry:
    """A patient, study, series or instance as Orthanc's index knows it.

    ``tags`` are its main DICOM tags by keyword (a study's include its
    patient's); ``parent_id`` and ``children`` are Orthanc IDs.
    """

    level: str
    orthanc_id: str
    parent_id: str
    tags: dict[str, str] = field(compare=False)
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredInstance:
    """What a retrieve needs to know about one stored instance before sending it."""

    orthanc_id: str
    series_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    instance_number: int = 0
    size: int = 0
