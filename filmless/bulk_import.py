"""``filmless import``: load folders of DICOM files (old PACS exports, CDs).

Each file is checked with pydicom before upload so the summary can say *why*
a file was refused (not DICOM, no SOP Instance UID, a DICOMDIR), and uploads
run on a few threads because Orthanc ingests in parallel. If Orthanc stops
answering, the import stops with a clear message instead of marking every
remaining file as rejected: nothing is lost, the same command resumes (files
already stored count as "already stored").
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from storage import OrthancStore, StorageRejected, StorageUnavailable

__all__ = ["ImportSummary", "import_paths", "iter_files"]

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_REQUIRED_UIDS = (
    ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
    ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
)


@dataclass
class ImportSummary:
    accepted: int = 0
    already_stored: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # path → reason
    skipped: dict[str, str] = field(default_factory=dict)
    aborted: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected and self.aborted is None

    def render(self, max_reasons: int = 20) -> str:
        rate = (self.accepted + self.already_stored) / self.seconds if self.seconds else 0.0
        lines = [
            f"accepted: {self.accepted}   already stored: {self.already_stored}   "
            f"rejected: {len(self.rejected)}   skipped: {len(self.skipped)}   "
            f"({self.bytes_sent / 1e6:.1f} MB in {self.seconds:.1f} s, {rate:.0f} files/s)"
        ]
        if self.skipped:
            # "skipped" is not an error: files that are not images on purpose (a CD's DICOMDIR index).
            by_reason = Counter(self.skipped.values())
            lines.append("skipped (not imported on purpose, nothing is wrong with them):")
            lines += [f"  {count:>6}  {reason}" for reason, count in by_reason.most_common()]
        if self.rejected:
            by_reason = Counter(self.rejected.values())
            lines.append("rejected files by reason:")
            lines += [f"  {count:>6}  {reason}" for reason, count in by_reason.most_common()]
            lines.append("first rejected files:")
            lines += [f"  {path}: {reason}" for path, reason in list(self.rejected.items())[:max_reasons]]
        if self.aborted:
            lines.append(f"import stopped early: {self.aborted}")
        return "\n".join(lines)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith("."):
                    yield child
        elif path.is_file():
            yield path


def _check(path: Path) -> tuple[bytes | None, str | None, bool]:
    """(data, reason for rejection, skip?) for one file."""
    data = path.read_bytes()
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, TypeError, KeyError) as exc:
        return None, f"not a readable DICOM file ({type(exc).__name__})", False
    sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if sop_class == DICOMDIR_SOP_CLASS:
        return None, "DICOMDIR (an index, not an image)", True
    missing = [name for keyword, name in _REQUIRED_UIDS if not str(ds.get(keyword, "") or "").strip()]
    if missing:
        # Orthanc files an instance under its study and series: without those UIDs it answers
        # "no such resource", which tells nobody what is wrong with the file.
        return None, "missing " + ", ".join(missing) + " (Orthanc files every image under its study and series)", False
    if data[128:132] != b"DICM":
        return None, "not in DICOM file format (no preamble and file meta)", False
    return data, None, False


def _upload(store: OrthancStore, data: bytes, retries: int = 5) -> bool:
    """Upload with a few retries on transient failures; True when already stored."""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return store.upload(data).already_stored
        except StorageUnavailable:
            if attempt == retries:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def import_paths(paths: Iterable[Path], store: OrthancStore, *, workers: int = 4,
                 progress: bool = True, retries: int = 5) -> ImportSummary:
    # Old archives are full of values pydicom warns about (bad VRs, odd lengths); they are
    # stored as they are, so the warnings would only bury the progress bar and the summary.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom_log = logging.getLogger("pydicom")
        level = pydicom_log.level
        pydicom_log.setLevel(logging.CRITICAL)
        try:
            return _import(paths, store, workers=workers, progress=progress, retries=retries)
        finally:
            pydicom_log.setLevel(level)


def _import(paths: Iterable[Path], store: OrthancStore, *, workers: int, progress: bool,
            retries: int) -> ImportSummary:
    files = list(iter_files(paths))
    summary = ImportSummary()
    started = time.monotonic()
    bar = tqdm(total=len(files), unit="file", disable=None if progress else True, dynamic_ncols=True)

    def work(path: Path) -> tuple[Path, int, bool | None, str | None, bool]:
        data, reason, skip = _check(path)
        if data is None:
            return path, 0, None, reason, skip
        try:
            return path, len(data), _upload(store, data, retries), None, False
        except StorageRejected as exc:
            return path, 0, None, f"refused by Orthanc: {exc.message}", False

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[tuple[Path, int, bool | None, str | None, bool]]] = set()
        queue = iter(files)
        try:
            while True:
                while len(pending) < workers * 2 and summary.aborted is None:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending.add(pool.submit(work, nxt))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        path, size, already, reason, skip = fut.result()
                    except StorageUnavailable as exc:
                        summary.aborted = f"Orthanc is not reachable ({exc}); run the same command again to resume"
                        continue
                    bar.update(1)
                    if reason is not None:
                        (summary.skipped if skip else summary.rejected)[str(path)] = reason
                    elif already:
                        summary.already_stored += 1
                    else:
                        summary.accepted += 1
                    summary.bytes_sent += size
        finally:
            bar.close()
    summary.seconds = time.monotonic() - started
    return summary
