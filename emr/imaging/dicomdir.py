"""A study as a ZIP with a DICOMDIR (Circular 54/2017: export to CD or web link).

pydicom's File-set API writes the DICOMDIR and names the files (8-character
IDs in PTxxxxxx/STxxxxxx/SExxxxxx folders, as DICOM media require).
Instances come one at a time from the storage facade, so memory holds one
instance, never the study; the File-set and the ZIP live on disk in a
temporary directory and a spooled temporary file.
"""

from __future__ import annotations

import os
import tempfile
import threading
import zipfile
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from pydicom import dcmread
from pydicom.fileset import FileSet

from emr.core.exceptions import Busy

__all__ = ["study_zip", "write_study_fileset"]

_SPOOL_IN_MEMORY = 8 * 1024 * 1024

# A ZIP of a large study takes a web worker thread (and disk, and Orthanc's
# attention) for a while. At most this many are built at once, so patients
# downloading (or a client repeating the request) never take every worker
# from the clinicians; the others are told to come back shortly.
MAX_CONCURRENT_BUILDS = 2
_builds = threading.BoundedSemaphore(MAX_CONCURRENT_BUILDS)


# Keys the DICOMDIR records need (PS3.3 F.5). Modalities often leave them
# out; the exported copy gets a placeholder so one sloppy header does not
# make the whole study impossible to take home.
_RECORD_KEYS = {
    "PatientID": "UNKNOWN",
    "PatientName": "",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "AccessionNumber": "",
    "StudyDescription": "",
    "Modality": "OT",
    "SeriesNumber": "1",
}


def _complete(ds: Any, index: int) -> None:
    for keyword, default in _RECORD_KEYS.items():
        if keyword not in ds or (default and ds.get(keyword) in (None, "")):
            setattr(ds, keyword, default)
    if "InstanceNumber" not in ds or ds.get("InstanceNumber") in (None, ""):
        ds.InstanceNumber = str(index)


def write_study_fileset(store: Any, orthanc_study_id: str, folder: Path) -> int:
    """Write the study's File-set (DICOMDIR + instances) into ``folder``; returns the instance count."""
    fs = FileSet()
    fs.ID = "FILMLESS"
    count = 0
    for series in store.study_series(orthanc_study_id):
        for instance in store.series_instances(series["ID"]):
            ds = dcmread(BytesIO(store.instance_file(instance["ID"])))
            _complete(ds, count + 1)
            fs.add(ds)  # staged to a temp file by pydicom; the dataset is dropped here
            del ds
            count += 1
    fs.write(folder)
    return count


def study_zip(store: Any, orthanc_study_id: str) -> IO[bytes]:
    """The ZIP as a temporary file positioned at 0 (deleted when closed).

    Raises :class:`~emr.core.exceptions.Busy` when ``MAX_CONCURRENT_BUILDS`` are already running.
    """
    if not _builds.acquire(blocking=False):
        raise Busy("too many study downloads being prepared", key="share.error.busy")
    try:
        return _build_zip(store, orthanc_study_id)
    finally:
        _builds.release()


def _build_zip(store: Any, orthanc_study_id: str) -> IO[bytes]:
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by the caller
    with tempfile.TemporaryDirectory(prefix="filmless-dicomdir-") as tmp:
        folder = Path(tmp) / "study"
        write_study_fileset(store, orthanc_study_id, folder)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for root, _dirs, files in os.walk(folder):
                for name in sorted(files):
                    path = Path(root) / name
                    zf.write(path, path.relative_to(folder).as_posix())
    out.seek(0)
    return out
