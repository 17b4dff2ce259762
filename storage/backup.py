"""Backing up and restoring what Orthanc holds, through its own REST API.

Why not copy Orthanc's files: the SQLite index is opened with
``LOCKING_MODE=EXCLUSIVE`` in WAL mode, so no other process can read a
consistent copy while Orthanc runs, and with the PostgreSQL index several
Orthanc servers share one database. Every DICOM file Orthanc stores can be
read back byte for byte (``/instances/{id}/file``), and storing those files
again rebuilds the same index with the same Orthanc IDs (they are hashes of
the UIDs). So the archive is exported as its DICOM files, which is also what
any other PACS could import.

The export is incremental: instance files go into a pool shared by every
backup in the same destination, named by Orthanc ID; a backup only fetches
the instances the pool does not have yet. Each file is written to a temporary
name, fsynced and renamed, and its SHA-256 recorded in the pool's catalogue,
so an interrupted backup leaves no half file that a later one would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .client import OrthancStore
from .exceptions import StorageError

__all__ = [
    "PoolEntry",
    "ExportSummary",
    "ImportSummary",
    "export_instances",
    "export_study_metadata",
    "import_instances",
    "import_study_metadata",
    "read_catalogue",
]

log = logging.getLogger(__name__)

CATALOGUE = "catalogue.jsonl"


@dataclass(frozen=True)
class PoolEntry:
    """One instance file in the backup pool."""

    instance_id: str
    path: str  # relative to the pool
    size: int
    sha256: str


@dataclass
class ExportSummary:
    instances: list[PoolEntry] = field(default_factory=list)  # every instance Orthanc had
    new: int = 0  # fetched by this run
    reused: int = 0  # already in the pool
    bytes_new: int = 0


@dataclass
class ImportSummary:
    stored: int = 0
    already_stored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (instance id, reason)


def _relpath(instance_id: str) -> str:
    return f"{instance_id[:2]}/{instance_id}.dcm"


def read_catalogue(pool: Path) -> dict[str, PoolEntry]:
    """The pool's catalogue; a torn last line (crash while appending) is ignored."""
    entries: dict[str, PoolEntry] = {}
    path = pool / CATALOGUE
    if not path.exists():
        return entries
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                entry = PoolEntry(str(row["id"]), str(row["path"]), int(row["size"]), str(row["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue
            if (pool / entry.path).is_file() and (pool / entry.path).stat().st_size == entry.size:
                entries[entry.instance_id] = entry
    return entries


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def export_instances(
    store: OrthancStore,
    pool: Path,
    *,
    page_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Bring ``pool`` up to date with every instance ``store`` holds; return them all."""
    pool.mkdir(parents=True, exist_ok=True)
    known = read_catalogue(pool)
    summary = ExportSummary()
    seen: set[str] = set()
    offset = 0
    with (pool / CATALOGUE).open("a", encoding="utf-8") as catalogue:
        while True:
            page = store.instance_ids(since=offset, limit=page_size)
            if not page:
                break
            offset += len(page)
            for instance_id in page:
                if instance_id in seen:
                    continue
                seen.add(instance_id)
                entry = known.get(instance_id)
                if entry is None:
                    data = store.instance_file(instance_id)
                    entry = PoolEntry(instance_id, _relpath(instance_id), len(data), hashlib.sha256(data).hexdigest())
                    _write_durably(pool / entry.path, data)
                    catalogue.write(json.dumps(entry.__dict__ | {"id": entry.instance_id}) + "\n")
                    catalogue.flush()
                    summary.new += 1
                    summary.bytes_new += entry.size
                else:
                    summary.reused += 1
                summary.instances.append(entry)
                if progress is not None:
                    progress(len(summary.instances))
        os.fsync(catalogue.fileno())
    return summary


def export_study_metadata(store: OrthancStore) -> dict[str, dict[str, str]]:
    """filmless's metadata of every study that has some (order link, link state)."""
    return {sid: meta for sid in store.study_ids() if (meta := store.study_metadata(sid))}


def import_instances(
    store: OrthancStore,
    pool: Path,
    entries: Iterable[PoolEntry],
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Store each pool file in ``store`` (idempotent: Orthanc keeps one copy)."""
    summary = ImportSummary()
    for count, entry in enumerate(entries, 1):
        try:
            result = store.upload((pool / entry.path).read_bytes())
        except (OSError, StorageError) as exc:
            summary.failed.append((entry.instance_id, str(exc)))
            log.error("instance %s not restored: %s", entry.instance_id, exc)
        else:
            if result.instance_id != entry.instance_id:
                summary.failed.append((entry.instance_id, f"stored as {result.instance_id}"))
            elif result.already_stored:
                summary.already_stored += 1
            else:
                summary.stored += 1
        if progress is not None:
            progress(count)
    return summary


def import_study_metadata(store: OrthancStore, metadata: dict[str, dict[str, str]]) -> int:
    """Put filmless's study metadata back; returns how many studies got some."""
    for study_id, values in metadata.items():
        for key, value in values.items():
            store.set_study_metadata(study_id, key, value)
    return len(metadata)
