"""``filmless backup DEST`` and ``filmless restore SRC``: everything a hospital needs to come back.

A backup destination holds one pool of DICOM instance files, shared by every
backup made into it (so each run fetches only the new instances), and one
folder per run under ``snapshots/``::

    DEST/instances/        ab/<orthanc id>.dcm ... and catalogue.jsonl
    DEST/snapshots/<time>/ manifest.json     every file with size and SHA-256
                           manifest.sha256   checksum of the manifest itself
                           emr.sqlite3 | emr.pgdump
                           study-metadata.json
                           files/...         the rest of the data directory:
                                             secrets, PKI and trust anchors,
                                             SoftHSM tokens, audit anchors,
                                             settings, the gateway's spool

The order makes the copy consistent while everything runs: the EMR database
first, then the spool (instances acknowledged but not yet in Orthanc), then
Orthanc's instances (so every study the database refers to, and everything
that left the spool meanwhile, is in the copy), then the small files.

``restore`` checks every checksum before it writes anything, refuses a data
directory that is not empty, puts the files and the database back, starts
the managed Orthanc once to store the instances and their metadata, and makes
the study linker read the restored Orthanc's changes from the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emr import BackupError, backup_database, database_kind, relink_all_studies, restore_database
from storage import OrthancProcess, open_store
from storage.backup import PoolEntry, export_instances, export_study_metadata, import_instances, import_study_metadata

from . import __version__
from .settings import Settings

__all__ = ["BackupError", "BackupResult", "RestoreResult", "backup", "restore", "verify", "latest_snapshot"]

FORMAT = 1
POOL = "instances"
SNAPSHOTS = "snapshots"

# Relative to the data directory: what the steps above copy their own way, or
# what is rebuilt at start-up (Orthanc's generated config, logs, scratch files).
_SKIP_PREFIXES = (
    "orthanc/index/",
    "orthanc/storage/",
    "orthanc/orthanc.json",
    "spool/incoming/",
    "spool/scratch/",
)
_SKIP_NAMES = ("emr.sqlite3", "emr.sqlite3-wal", "emr.sqlite3-shm", "emr.sqlite3-journal")
# ".lock": the run-once locks of the EMR's background jobs (empty, held by a live process).
# Text files that name the data directory by absolute path (rewritten on restore).
_RELOCATE = ("softhsm/softhsm2.conf",)


@dataclass
class BackupResult:
    snapshot: Path
    instances: int
    new_instances: int
    new_bytes: int
    files: int


@dataclass
class RestoreResult:
    snapshot: Path
    instances: int
    files: int
    failed: list[tuple[str, str]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _skipped(rel: str) -> bool:
    return rel in _SKIP_NAMES or rel.startswith(_SKIP_PREFIXES) or rel.endswith((".log", ".part", ".tmp", ".lock"))


def _data_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(data_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(data_dir).as_posix()
        if not _skipped(rel):
            yield rel, path


def _copy_file(src: Path, dst: Path) -> bool:
    """Copy with mode; ``False`` when the file went away meanwhile (spool drained it)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        return False
    return True


def _store(settings: Settings) -> Any:
    return open_store(settings.storage)


def backup(settings: Settings, dest: Path, progress: Callable[[str], None] = lambda _m: None) -> BackupResult:
    """Write one snapshot of the running (or stopped) installation into ``dest``."""
    dest = dest.absolute()
    data_dir = settings.data_dir
    if dest == data_dir or data_dir in dest.parents:
        raise BackupError(f"{dest} is inside the data directory; back up to another disk")
    snapshot, work = _claim_snapshot(dest / SNAPSHOTS)
    os.chmod(dest, 0o700)

    progress("database")
    dump = backup_database(settings.emr, work)

    progress("spool")
    copied: list[str] = []
    for rel, path in _data_files(data_dir):
        if rel.startswith("spool/") and _copy_file(path, work / "files" / rel):
            copied.append(f"files/{rel}")

    progress("instances")
    store = _store(settings)
    exported = export_instances(store, dest / POOL)
    metadata = export_study_metadata(store)
    (work / "study-metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True), encoding="utf-8")

    progress("files")
    for rel, path in _data_files(data_dir):
        if not rel.startswith("spool/") and _copy_file(path, work / "files" / rel):
            copied.append(f"files/{rel}")

    listed = [*copied, dump.name, "study-metadata.json"]
    manifest = {
        "format": FORMAT,
        "filmless": __version__,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "data_dir": str(data_dir),
        "database": database_kind(settings.emr.database_url),
        "database_file": dump.name,
        "files": [{"path": rel, "size": (work / rel).stat().st_size, "sha256": _sha256(work / rel)} for rel in listed],
        "instances": [{"id": e.instance_id, "path": e.path, "size": e.size, "sha256": e.sha256}
                      for e in exported.instances],
    }
    body = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
    (work / "manifest.json").write_bytes(body)
    (work / "manifest.sha256").write_text(f"{hashlib.sha256(body).hexdigest()}  manifest.json\n", encoding="ascii")
    os.replace(work, snapshot)  # a snapshot without ".incomplete" is whole
    return BackupResult(snapshot, len(exported.instances), exported.new, exported.bytes_new, len(copied))


def _claim_snapshot(folder: Path) -> tuple[Path, Path]:
    """Name this run's snapshot after the local time, unique even for runs within one second.

    The name is claimed by creating its ``.incomplete`` work folder (``mkdir``
    is atomic), so two backups started together never share a folder. A
    second run in the same second gets ``-01``, ``-02``...: the names still
    sort in the order the runs started, which ``latest_snapshot`` relies on.
    """
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    stamp = datetime.now().astimezone().strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        name = stamp if n == 0 else f"{stamp}-{n:02d}"
        snapshot, work = folder / name, folder / f"{name}.incomplete"
        if snapshot.exists():
            continue
        try:
            work.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return snapshot, work
    raise BackupError(f"{folder}: 100 backups started within one second; try again")


def latest_snapshot(src: Path) -> Path:
    folder = src / SNAPSHOTS
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and "." not in p.name) if folder.is_dir() else []
    if not names:
        raise BackupError(f"{src} holds no complete backup (no {SNAPSHOTS}/<time>/ folder)")
    return folder / names[-1]


def _manifest(snapshot: Path) -> dict[str, Any]:
    try:
        body = (snapshot / "manifest.json").read_bytes()
        expected = (snapshot / "manifest.sha256").read_text(encoding="ascii").split()[0]
    except (OSError, IndexError) as exc:
        raise BackupError(f"{snapshot}: manifest missing or unreadable ({exc})") from None
    if hashlib.sha256(body).hexdigest() != expected:
        raise BackupError(f"{snapshot}/manifest.json does not match manifest.sha256")
    manifest: dict[str, Any] = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{snapshot}: backup format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def verify(snapshot: Path) -> dict[str, Any]:
    """Check every file and instance of a snapshot against its manifest; returns the manifest."""
    manifest = _manifest(snapshot)
    pool = snapshot.parent.parent / POOL
    problems: list[str] = []
    checks = [(snapshot / f["path"], f) for f in manifest["files"]]
    checks += [(pool / i["path"], i) for i in manifest["instances"]]
    for path, item in checks:
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.stat().st_size != item["size"] or _sha256(path) != item["sha256"]:
            problems.append(f"damaged: {path}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BackupError(f"backup {snapshot} fails its checksums:\n  {shown}{more}")
    return manifest


def _empty(data_dir: Path) -> bool:
    return not data_dir.exists() or not any(data_dir.iterdir())


def restore(settings: Settings, src: Path, progress: Callable[[str], None] = lambda _m: None) -> RestoreResult:
    """Bring a snapshot back into the configured, empty data directory."""
    src = src.absolute()
    snapshot = src if (src / "manifest.json").exists() else latest_snapshot(src)
    progress("checksums")
    manifest = verify(snapshot)
    data_dir = settings.data_dir
    if not _empty(data_dir):
        raise BackupError(f"{data_dir} is not empty; restore into a new data directory (FILMLESS_DATA_DIR)")
    if settings.storage.external_url:
        raise BackupError("FILMLESS_ORTHANC_URL is set: restore the archive into that Orthanc with its own tools")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    progress("files")
    old_dir = str(manifest["data_dir"])
    restored_files = 0
    for item in manifest["files"]:
        rel = str(item["path"])
        if not rel.startswith("files/"):
            continue
        target = data_dir / rel[len("files/") :]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(snapshot / rel, target)
        if rel[len("files/") :] in _RELOCATE:
            text = target.read_text(encoding="utf-8")
            target.write_text(text.replace(old_dir, str(data_dir)), encoding="utf-8")
        restored_files += 1

    progress("database")
    restore_database(settings.emr, snapshot / str(manifest["database_file"]))

    progress("instances")
    pool = snapshot.parent.parent / POOL
    entries = [PoolEntry(i["id"], i["path"], i["size"], i["sha256"]) for i in manifest["instances"]]
    orthanc = OrthancProcess(settings.storage, gateway_aet=settings.gateway.ae_title,
                             gateway_port=settings.gateway.port)
    store = orthanc.start()
    try:
        imported = import_instances(store, pool, entries)
        metadata = json.loads((snapshot / "study-metadata.json").read_text(encoding="utf-8"))
        import_study_metadata(store, metadata)
    finally:
        orthanc.stop()
    relink_all_studies(settings.emr)
    return RestoreResult(snapshot, imported.stored + imported.already_stored, restored_files, imported.failed)
