"""The durable spool: nothing is acknowledged before it is on disk.

Layout under ``spool_dir``::

    incoming/    being received (pynetdicom streams each data set into a file
                 here); never acknowledged; emptied at start-up
    ready/       fsynced and acknowledged; the forwarders drain it in name order
    quarantine/  refused or rejected instances, each with a ``.json`` reason
    scratch/     rewritten copies the forwarders upload; emptied at start-up
    spare/       forwarded files kept to be overwritten by the next received
                 instance (see :meth:`Spool.recycle`); emptied at start-up

An instance is acknowledged only after :meth:`Spool.commit`: fsync of the
file, rename into ``ready/`` (same file system, so no copy) and fsync of
``ready/`` so the new name survives a crash too.

File names are unique and time-ordered (not the SOP Instance UID), so a
duplicate that arrives while the forwarder uploads the first copy can never
overwrite or unlink it; Orthanc makes duplicates idempotent.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .exceptions import OutOfResources
from .settings import GatewaySettings

__all__ = ["Spool", "SpoolStatus", "sender_of", "spool_status"]

log = logging.getLogger(__name__)

_PREAMBLE = b"\x00" * 128 + b"DICM"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# Forwarded files kept for reuse (:meth:`Spool.recycle`): only files up to
# _SPARE_MAX_SIZE (slices, not multi-frame instances), at most _SPARE_BYTES
# altogether: about the space a burst of a few hundred slices held in the
# spool anyway. They are given back first when the disk runs short.
_SPARE_MAX_SIZE = 2 * 1024 * 1024
_SPARE_BYTES = 256 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AE_MARK = "_ae"  # never in :meth:`Spool._name` (digits, hex, "-")


def sender_of(path: Path) -> str:
    """The calling AE title a spooled file was received from ("" when unknown: files of older runs)."""
    stem = path.name.removesuffix(".dcm")
    if _AE_MARK not in stem:
        return ""
    try:
        return bytes.fromhex(stem.rsplit(_AE_MARK, 1)[1]).decode("ascii", "replace").strip()
    except ValueError:
        return ""


class Spool:
    """One spool directory; safe to use from many threads."""

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.ready = self.root / "ready"
        self.quarantine_dir = self.root / "quarantine"
        self.scratch = self.root / "scratch"
        self.spare = self.root / "spare"
        self.min_free_bytes = min_free_bytes
        self._counter = itertools.count()
        self._token = secrets.token_hex(3)
        self._lock = threading.Lock()
        self._spares: list[tuple[Path, int]] = []  # files in spare/ and their sizes, newest last
        self._spare_bytes = 0

    def open(self) -> list[Path]:
        """Create the folders, drop unacknowledged partial files, list the backlog."""
        for d in (self.incoming, self.ready, self.quarantine_dir, self.scratch, self.spare):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        dropped = 0
        for leftover in self.incoming.iterdir():
            # Anything here was never acknowledged (the rename into ready/
            # comes before the success status), so the sender still has it.
            leftover.unlink(missing_ok=True)
            dropped += 1
        for leftover in self.scratch.iterdir():
            leftover.unlink(missing_ok=True)  # derived copies; the original is still in ready/
        self.drop_spares()
        if dropped:
            log.info("spool: removed %d unacknowledged partial file(s) from %s", dropped, self.incoming)
        return self.backlog()

    def backlog(self) -> list[Path]:
        return sorted(p for p in self.ready.iterdir() if p.suffix == ".dcm")

    def _name(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"{time.time_ns():020d}-{os.getpid()}-{self._token}-{n:08d}"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_space(self, size: int) -> None:
        """Raise :class:`OutOfResources` unless ``size`` more bytes leave the free-space floor intact
        (spare files are given back first)."""
        free = self.free_bytes()
        if free < self.min_free_bytes + size and self.drop_spares():
            free = self.free_bytes()
        if free < self.min_free_bytes + size:
            raise OutOfResources(f"spool {self.root} has {free} bytes free, needs {self.min_free_bytes} + {size}")

    def commit(self, received: Path, calling_aet: str = "") -> Path:
        """Make a file received into ``incoming/`` durable in ``ready/``; return its new path.

        ``calling_aet`` (who sent it) is kept in the file name, so it survives a
        restart with the file itself: the forwarder tells Orthanc (see
        :func:`sender_of`). Raises :class:`OutOfResources` when the disk is
        (nearly) full. On any failure the received file is removed: it was
        never acknowledged.
        """
        name = self._name()
        if calling_aet:
            name += _AE_MARK + calling_aet.encode("ascii", "replace")[:16].hex()
        final = self.ready / f"{name}.dcm"
        try:
            # The instance is already on disk: refuse it if keeping it would
            # eat into the floor (space other modalities and Orthanc need).
            self.check_space(0)
            fd = os.open(received, os.O_RDONLY)
            try:
                # Data and size; the name is made durable by the folder's fsync.
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(received, final)
            _fsync_dir(self.ready)
        except OSError as exc:
            received.unlink(missing_ok=True)
            if exc.errno in _DISK_FULL:
                raise OutOfResources(f"spool {self.root} is full: {exc.strerror}") from None
            raise
        except OutOfResources:
            received.unlink(missing_ok=True)
            raise
        return final

    def sweep_incoming(self, older_than: float) -> int:
        """Delete files in ``incoming/`` untouched for ``older_than`` seconds (abandoned receives)."""
        limit = time.time() - older_than
        removed = 0
        for leftover in self.incoming.iterdir():
            try:
                if leftover.stat().st_mtime < limit:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("spool: removed %d abandoned partial file(s) from %s", removed, self.incoming)
        return removed

    def receive(self, meta: bytes, dataset: Any) -> Path:
        """Write an in-memory data set into ``incoming/`` (not yet durable; see :meth:`commit`)."""
        target = self.incoming / f"{self._name()}.tmp"
        try:
            with open(target, "xb") as f, dataset.getbuffer() as view:
                f.write(_PREAMBLE)
                f.write(meta)
                f.write(view)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        return target

    def adopt(self, received: Path) -> Path:
        """Move a file received outside ``incoming/`` into it (a copy across file systems)."""
        target = self.incoming / f"{self._name()}.tmp"
        try:
            shutil.move(received, target)
        except OSError:
            target.unlink(missing_ok=True)
            received.unlink(missing_ok=True)
            raise
        return target

    def scratch_file(self) -> Path:
        """A fresh path under ``scratch/`` for a rewritten copy (removed by the caller)."""
        return self.scratch / f"{self._name()}.dcm"

    def quarantine(self, data: Path, reason: str, **details: Any) -> Path:
        """Move a refused received file (or a spooled one) aside with a JSON note of why.

        Best effort on a full disk: the note is small and the reason is also
        logged, so the operator learns what happened either way.
        """
        name = self._name()
        target = self.quarantine_dir / f"{name}.dcm"
        note = {
            "reason": reason,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **details,
        }
        try:
            if data.parent == self.incoming and self.free_bytes() < self.min_free_bytes:
                # Hostile or broken senders must not fill the disk the spool needs.
                data.unlink(missing_ok=True)
                note["kept"] = False
                target = target.with_suffix(".refused")
            else:
                os.replace(data, target)
            note_path = target.with_suffix(".json")
            note_path.write_text(json.dumps(note, ensure_ascii=False, indent=1), "utf-8")
        except OSError as exc:
            log.error("quarantine: cannot keep %s (%s); reason was: %s", target.name, exc, reason)
        log.warning("quarantined %s: %s %s", target.name, reason, json.dumps(details, ensure_ascii=False))
        return target

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    def recycle(self, path: Path) -> None:
        """Remove a forwarded file by keeping it in ``spare/`` for :meth:`reuse` (or unlinking it).

        Why: on ext4 creating a file (inode allocation scans past every
        recently deleted inode), allocating its blocks and unlinking it later
        cost more CPU than the rest of the file's way through the kernel;
        overwriting the blocks of a file that already exists costs a page
        copy. Only call this when nothing else reads ``path`` any more: its
        blocks are overwritten by the next received instance.
        """
        try:
            size = path.stat().st_size
            with self._lock:
                full = self._spare_bytes + size > _SPARE_BYTES
            if full or size > _SPARE_MAX_SIZE:
                path.unlink(missing_ok=True)
                return
            target = self.spare / f"{self._name()}.spare"
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError:
            path.unlink(missing_ok=True)
            return
        with self._lock:
            self._spares.append((target, size))
            self._spare_bytes += size

    def reuse(self, target: Path) -> bool:
        """Move a spare file to ``target`` (in ``incoming/``) to be overwritten; False when there is none.

        The file keeps its old content until overwritten: the caller must cut
        it to the length it wrote (``ftruncate``) before making it durable.
        """
        while True:
            with self._lock:
                if not self._spares:
                    return False
                spare, size = self._spares.pop()
                self._spare_bytes -= size
            try:
                os.rename(spare, target)
                return True
            except OSError:
                spare.unlink(missing_ok=True)  # gone or unusable: try the next one

    def drop_spares(self) -> int:
        """Delete every spare file (disk short, start-up); how many there were."""
        with self._lock:
            self._spares, self._spare_bytes = [], 0
        dropped = 0
        for spare in self.spare.glob("*"):  # every spare file lives there (recycle)
            spare.unlink(missing_ok=True)
            dropped += 1
        return dropped

    def usage(self) -> dict[str, int]:
        return {
            "ready": sum(1 for _ in self.ready.glob("*.dcm")),
            "quarantined": sum(1 for _ in self.quarantine_dir.glob("*.json")),
        }



@dataclass(frozen=True)
class SpoolStatus:
    backlog: int  # acknowledged, not yet in Orthanc
    quarantined: int
    mpps_pending: int = 0  # MPPS status changes the EMR has not taken yet
    commitments_pending: int = 0  # storage commitment reports not delivered yet
    # Seconds the oldest item of each queue has waited (0 when empty): a
    # queue that does not drain means Orthanc, the EMR or a modality is gone.
    oldest_backlog_s: float = 0.0
    oldest_mpps_s: float = 0.0
    oldest_commitment_s: float = 0.0


def _queue(folder: Path, pattern: str, now: float) -> tuple[int, float]:
    """How many files match, and the age in seconds of the oldest."""
    count, oldest = 0, now
    if folder.is_dir():
        for path in folder.glob(pattern):
            try:
                oldest = min(oldest, path.stat().st_mtime)
            except OSError:
                continue  # forwarded meanwhile
            count += 1
    return count, max(0.0, now - oldest)


def spool_status(settings: GatewaySettings) -> SpoolStatus:
    """Counts and ages read from the spool folders, usable from another process (health checks)."""
    root = Path(settings.spool_dir)
    now = time.time()
    backlog, backlog_age = _queue(root / "ready", "*.dcm", now)
    mpps, mpps_age = _queue(root / "mpps" / "outbox", "*.json", now)
    commitments, commitment_age = _queue(root / "commitment", "*.json", now)
    quarantine = root / "quarantine"  # counted only: it is kept, not drained
    quarantined = sum(1 for _ in quarantine.glob("*.json")) if quarantine.is_dir() else 0
    return SpoolStatus(
        backlog=backlog,
        quarantined=quarantined,
        mpps_pending=mpps,
        commitments_pending=commitments,
        oldest_backlog_s=backlog_age,
        oldest_mpps_s=mpps_age,
        oldest_commitment_s=commitment_age,
    )
