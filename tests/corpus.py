"""The DICOM test corpus: pydicom's bundled files plus generated CT series.

Used by the gateway tests and by ``benchmarks/ingest.py`` (``make_ct_series``),
so it only needs pydicom, numpy and the DCMTK/GDCM command-line tools.

What is in it (see :func:`build_corpus`):

* every pydicom test file (``get_testdata_files`` and ``get_charset_files``)
  that is a Part-10 storage instance DCMTK's storescu can send, one per SOP
  Instance UID. Left out, with the reason, in :data:`EXCLUDED`;
* CT series with Vietnamese names in ``ISO_IR 192``, a Latin-1 series in
  ``ISO_IR 100``, and two series without Specific Character Set (UTF-8 bytes
  and Latin-1 bytes, as misconfigured modalities send them);
* compressed variants of a CT series: JPEG lossless and extended (DCMTK
  ``dcmcjpeg``), JPEG-LS (``dcmcjpls``), RLE (``dcmcrle``), deflate
  (``dcmconv +td``) and JPEG 2000 (GDCM ``gdcmconv --j2k``).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AllStoragePresentationContexts

__all__ = [
    "EXCLUDED",
    "CorpusEntry",
    "VIETNAMESE_NAMES",
    "build_corpus",
    "describe",
    "make_ct_series",
    "pydicom_storage_files",
]

VIETNAMESE_NAMES = (
    "Nguyễn^Thị Hồng Nhung",
    "Trần^Văn Đức",
    "Lê^Thị Ánh Tuyết",
    "Phạm^Quốc Việt",
)

_STORAGE_CLASSES = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}

# Files left out on purpose, by name, with why (checked by hand).
EXCLUDED: dict[str, str] = {
    "SC_rgb_jpeg.dcm": "says explicit VR but is encoded implicit VR; DCMTK storescu cannot parse it",
    "badVR.dcm": "deliberately invalid VR; a gateway fault test, not an instance to store",
    "rtplan.dcm": "file meta and data set disagree on the SOP Instance UID (same UID as rtplan_truncated)",
    "no_meta.dcm": "no file meta information",
}


@dataclass(frozen=True)
class CorpusEntry:
    path: Path
    sop_instance_uid: str
    patient_name: str  # as it must come back from Orthanc (UTF-8, ^ separators)


def _quiet_read(path: Path | str, **kwargs: object) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pydicom.dcmread(path, **kwargs)  # type: ignore[arg-type]


def describe(path: Path) -> CorpusEntry:
    """SOP Instance UID and the patient name Orthanc should report for ``path``."""
    ds = _quiet_read(path, stop_before_pixels=True)
    raw = ds.get_item("PatientName")
    if raw is None:
        return CorpusEntry(path, str(ds.SOPInstanceUID), "")
    value = raw.value if isinstance(raw.value, bytes) else None
    if "SpecificCharacterSet" not in ds and value and not value.isascii():
        # The gateway's rule for undeclared character sets: UTF-8, else Latin-1.
        try:
            name = value.decode("utf-8")
        except UnicodeDecodeError:
            name = value.decode("latin-1")
        return CorpusEntry(path, str(ds.SOPInstanceUID), name.strip())
    return CorpusEntry(path, str(ds.SOPInstanceUID), str(ds.PatientName))


def _dcmtk_reads(path: Path, uid: str) -> bool:
    """storescu reads files with DCMTK; some of pydicom's odd files defeat it."""
    if shutil.which("dcmdump") is None:
        return True
    result = subprocess.run(["dcmdump", "-q", "+P", "0008,0018", str(path)], capture_output=True, text=True,
                            timeout=30)
    return result.returncode == 0 and uid in result.stdout


def pydicom_storage_files() -> list[Path]:
    """pydicom's bundled files that a modality could send (deduplicated by SOP Instance UID)."""
    seen: set[str] = set()
    chosen: list[Path] = []
    for name in sorted(set(get_testdata_files()) | set(get_charset_files()), key=lambda p: Path(p).name):
        path = Path(name)
        if not path.is_file() or path.name in EXCLUDED or path.stat().st_size > 8_000_000:
            continue
        with path.open("rb") as f:
            if f.read(132)[128:] != b"DICM":
                continue
        try:
            ds = _quiet_read(path)
            # Anything whose text pydicom cannot decode cleanly has no known expected name.
            for elem in ds.iterall():
                _ = elem.value
            _ = str(ds.get("PatientName", ""))
        except Exception:  # noqa: BLE001 - unreadable or warning-raising files are left out
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        sop_class = str(ds.get("SOPClassUID", ""))
        ts = ds.file_meta.get("TransferSyntaxUID")
        if not uid or uid in seen or sop_class not in _STORAGE_CLASSES or ts is None:
            continue
        if str(ds.file_meta.get("MediaStorageSOPInstanceUID", uid)) != uid:
            continue
        if not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID"):
            # Orthanc refuses these (HTTP 404 "inexistent tag"); the gateway
            # refuses them up front with 0xA900 (see test_malformed).
            EXCLUDED.setdefault(path.name, "no Study/Series Instance UID: not a storable instance")
            continue
        if not _dcmtk_reads(path, uid):
            EXCLUDED.setdefault(path.name, "DCMTK (storescu) cannot parse it")
            continue
        seen.add(uid)
        chosen.append(path)
    return chosen


def _ct_template(rows: int, cols: int, charset: str | None, patient_name: str, patient_id: str,
                 accession: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20261123"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = "CT"
    ds.Manufacturer = "filmless-test"
    ds.StudyDescription = "CT ngực" if charset == "ISO_IR 192" else "CT chest"
    if charset is None:
        # No declared character set: store the name's bytes as given (UTF-8 or
        # Latin-1 is decided by the caller through ``raw_encoding``).
        pass
    else:
        ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    return ds


def _phantom(rows: int, cols: int) -> np.ndarray:
    """A compressible but non-trivial 12-bit image (a disc on a gradient)."""
    y, x = np.mgrid[0:rows, 0:cols]
    r = np.hypot(y - rows / 2, x - cols / 2)
    img = (x * 4 + y * 2) % 1024 + np.where(r < min(rows, cols) / 3, 1200, 0)
    return img.astype(np.uint16)


def make_ct_series(
    dest: Path,
    count: int,
    rows: int = 512,
    cols: int = 512,
    patient_name: str = VIETNAMESE_NAMES[0],
    accession: str = "ACC0001",
    study_uid: str | None = None,
    charset: str | None = "ISO_IR 192",
    *,
    patient_id: str = "VN0001",
    raw_encoding: str = "utf-8",
    series_uid: str | None = None,
    frames: int = 1,
) -> list[Path]:
    """Write ``count`` CT slices into ``dest`` and return their paths.

    ``charset=None`` writes no Specific Character Set and stores the name's
    bytes in ``raw_encoding`` (what misconfigured modalities do).
    ``frames > 1`` makes each file a multi-frame instance of that many
    frames (the ingest benchmark's large instances).
    Fast: one template, one pixel array, only UIDs and positions change.
    """
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    ds = _ct_template(rows, cols, charset, patient_name, patient_id, accession, study_uid, series_uid)
    if charset is None:
        ds.add_new(0x00100010, "PN", patient_name.encode(raw_encoding))
    base = _phantom(rows, cols)
    if frames > 1:
        ds.NumberOfFrames = frames
        base = np.tile(base, (frames, 1, 1))
    paths: list[Path] = []
    for i in range(count):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-180.0, -180.0, float(i)]
        ds.SliceLocation = float(i)
        ds.PixelData = np.roll(base, i, axis=-1).tobytes()
        path = dest / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# name, command (input, output appended), tool needed
_COMPRESSORS: tuple[tuple[str, list[str]], ...] = (
    ("jpeg-lossless", ["dcmcjpeg", "+e1"]),  # process 14 SV1
    ("jpeg-extended", ["dcmcjpeg", "+ee"]),  # 12-bit lossy, process 2/4
    ("jpeg-ls", ["dcmcjpls", "+el"]),
    ("jpeg-ls-near", ["dcmcjpls", "+en"]),
    ("rle", ["dcmcrle"]),
    ("deflate", ["dcmconv", "+td"]),
    ("j2k", ["gdcmconv", "--j2k"]),
    ("j2k-lossy", ["gdcmconv", "--j2k", "--lossy", "-q", "40"]),
)


def _compress(sources: list[Path], dest: Path, command: list[str]) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for src in sources:
        target = dest / src.name
        subprocess.run([*command, str(src), str(target)], check=True, capture_output=True, timeout=60)
        out.append(target)
    # A compressed copy is a new instance: give it its own UIDs so Orthanc keeps both.
    series_uid = generate_uid()
    for path in out:
        ds = _quiet_read(path)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid
        ds.save_as(path, enforce_file_format=True)
    return out


def build_corpus(dest: Path, ct_slices: int = 3) -> list[Path]:
    """Build the whole corpus into ``dest`` (idempotent per folder) and return the files."""
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    pyd = dest / "pydicom"
    pyd.mkdir(exist_ok=True)
    for src in pydicom_storage_files():
        target = pyd / src.name
        if not target.exists():
            shutil.copyfile(src, target)
        paths.append(target)

    study = generate_uid()
    series = {
        "vn-utf8": dict(patient_name=VIETNAMESE_NAMES[0], charset="ISO_IR 192", patient_id="VN0001"),
        "vn-utf8-b": dict(patient_name=VIETNAMESE_NAMES[1], charset="ISO_IR 192", patient_id="VN0002"),
        "latin1": dict(patient_name="Hà^Thúy Vân", charset="ISO_IR 100", patient_id="VN0003"),
        "nocharset-utf8": dict(patient_name=VIETNAMESE_NAMES[2], charset=None, patient_id="VN0004"),
        "nocharset-latin1": dict(patient_name="Hà^Thúy Vân", charset=None, patient_id="VN0005",
                                 raw_encoding="latin-1"),
        "ascii": dict(patient_name="Nguyen^Van An", charset=None, patient_id="VN0006"),
    }
    for i, (name, kw) in enumerate(series.items()):
        paths += make_ct_series(dest / name, ct_slices, rows=64, cols=64, accession=f"ACC{i:04d}",
                                study_uid=study if name.startswith("vn-utf8") else None, **kw)  # type: ignore[arg-type]
    source = make_ct_series(dest / "to-compress", 2, rows=128, cols=128, patient_name=VIETNAMESE_NAMES[3],
                            accession="ACC0100", patient_id="VN0100")
    paths += source
    for name, command in _COMPRESSORS:
        if shutil.which(command[0]) is None:
            continue
        paths += _compress(source, dest / name, command)
    return paths
