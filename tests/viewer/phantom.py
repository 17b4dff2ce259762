"""A synthetic CT series made with pydicom, and a numpy reference renderer.

Why synthetic: the tests need a CT whose every slice differs (so scrolling
visibly changes the pixels), with realistic HU ranges (air, lung, soft
tissue, bone) and a header VOI, and the benchmark needs 200 such slices;
nothing like that ships offline. The reference renderer applies the same
modality LUT and linear VOI as DICOM PS3.3 C.11.2.1.2 so browser pixels can
be compared with it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = [
    "COMPRESSORS",
    "CtSeries",
    "compress",
    "make_ct_series",
    "make_undecodable",
    "make_us_cine",
    "render_reference",
    "slice_hu",
]


@dataclass(frozen=True)
class CtSeries:
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    datasets: tuple[Dataset, ...]

    def encoded(self) -> Iterator[bytes]:
        for ds in self.datasets:
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            yield buf.getvalue()


def slice_hu(index: int, count: int, size: int = 512) -> np.ndarray:
    """HU values of slice ``index``: body, lungs, spine, a moving lesion, a ramp."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.33 * size)) ** 2 <= 1
    hu[body] = 40.0
    for side in (-1, 1):
        lung = ((x - c - side * 0.19 * size) / (0.13 * size)) ** 2 + ((y - c + 0.02 * size) / (0.22 * size)) ** 2 <= 1
        hu[lung] = -820.0 + 60.0 * np.sin(x[lung] / 7.0)
    spine = (x - c) ** 2 + (y - c - 0.22 * size) ** 2 <= (0.05 * size) ** 2
    hu[spine] = 700.0
    # A lesion that moves and grows along z, so every slice differs.
    t = index / max(count - 1, 1)
    lx, ly, r = c + (t - 0.5) * 0.3 * size, c - 0.05 * size, (0.03 + 0.05 * t) * size
    lesion = (x - lx) ** 2 + (y - ly) ** 2 <= r * r
    hu[lesion] = 120.0
    # A ramp across the bottom of the body: many grey levels at soft-tissue windows.
    ramp = body & (y > c + 0.12 * size) & (y < c + 0.2 * size)
    hu[ramp] = -160.0 + 400.0 * (x[ramp] / size)
    # A slice-number bar code on the left edge: unambiguous slice identity.
    for bit in range(8):
        if (index >> bit) & 1:
            hu[int(0.1 * size) + bit * 12 : int(0.1 * size) + bit * 12 + 8, 8:24] = 1000.0
    return hu


def make_ct_series(
    count: int = 20,
    size: int = 512,
    patient_name: str = "Nguyễn^Thị Hồng Nhung",
    patient_id: str = "BN0001",
    study_uid: str | None = None,
    window: tuple[float, float] = (40.0, 400.0),
    seed: int = 0,
) -> CtSeries:
    """``count`` axial CT slices, 16-bit signed stored values, intercept -1024."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(seed)
    datasets = []
    for i in range(count):
        hu = slice_hu(i, count, size) + rng.normal(0, 4, (size, size)).astype(np.float32)
        stored = np.clip(np.round(hu + 1024.0), -2000, 4000).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19800101"
        ds.PatientSex = "F"
        ds.StudyDate = "20261120"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC0001"
        ds.StudyDescription = "CT ngực"
        ds.SeriesDescription = "Axial 5mm"
        ds.Modality = "CT"
        ds.Manufacturer = "filmless-phantom"
        ds.SeriesNumber = 2
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-0.5 * size * 0.7, -0.5 * size * 0.7, -5.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [0.7, 0.7]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = window[0]
        ds.WindowWidth = window[1]
        ds.PixelData = stored.tobytes()
        datasets.append(ds)
    return CtSeries(study_uid, series_uid, tuple(d.SOPInstanceUID for d in datasets), tuple(datasets))


def render_reference(ds: Dataset, center: float, width: float) -> np.ndarray:
    """8-bit grey image of ``ds`` at window ``center``/``width`` (DICOM linear VOI)."""
    stored = ds.pixel_array.astype(np.float64)
    hu = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # PS3.3 C.11.2.1.2.1: linear function with the 0.5 / 1 offsets.
    out = ((hu - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.clip(out, 0, 255)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        out = 255 - out
    return out.astype(np.uint8)


def parse(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data))


# -- compressed variants and other modalities ---------------------------------------

# name → (command line turning in.dcm into out.dcm, transfer syntax it produces)
COMPRESSORS: dict[str, tuple[list[str], str]] = {
    "jpeg-lossless": (["dcmcjpeg", "+e1"], "1.2.840.10008.1.2.4.70"),
    "jpeg-ls": (["dcmcjpls"], "1.2.840.10008.1.2.4.80"),
    "rle": (["dcmcrle"], "1.2.840.10008.1.2.5"),
    "jpeg-2000": (["gdcmconv", "--j2k"], "1.2.840.10008.1.2.4.90"),
    "jpeg-baseline": (["dcmcjpeg", "+eb"], "1.2.840.10008.1.2.4.50"),
}


def compress(data: bytes, codec: str, workdir: Path) -> bytes:
    """``data`` (Part 10, uncompressed) re-encoded by DCMTK/GDCM as ``codec``."""
    command, syntax = COMPRESSORS[codec]
    src, dst = workdir / f"in-{codec}.dcm", workdir / f"out-{codec}.dcm"
    src.write_bytes(data)
    subprocess.run([*command, str(src), str(dst)], check=True, capture_output=True, timeout=60)
    out = dst.read_bytes()
    if parse(out).file_meta.TransferSyntaxUID != syntax:
        raise RuntimeError(f"{command[0]} did not produce {syntax}")
    return out


def make_us_cine(frames: int = 12, size: int = 256, bits: int = 8) -> CtSeries:
    """One multi-frame 8-bit ultrasound instance whose frames all differ (for cine)."""
    from pydicom.uid import UltrasoundMultiFrameImageStorage

    study_uid, series_uid = generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    pixels = np.empty((frames, size, size), dtype=np.uint8)
    for f in range(frames):
        cx = size * (0.3 + 0.4 * f / max(frames - 1, 1))
        blob = np.exp(-((x - cx) ** 2 + (y - size / 2) ** 2) / (2 * (size / 10) ** 2))
        pixels[f] = np.clip(30 + 200 * blob + 20 * np.sin(y / 9.0 + f), 0, 255).astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID = "Trần^Văn Bình", "BN0002"
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20261121", "US", 1, 1
    ds.StudyDescription = "Siêu âm tim"
    ds.NumberOfFrames = frames
    ds.FrameTime = 40.0
    ds.CineRate = 25
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = pixels.tobytes()
    return CtSeries(study_uid, series_uid, (ds.SOPInstanceUID,), (ds,))


def make_undecodable(study_uid: str | None = None) -> CtSeries:
    """A CT slice that claims JPEG baseline but whose fragment is not a JPEG."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    series = make_ct_series(count=1, size=64, study_uid=study_uid, patient_id="BN0003")
    ds = series.datasets[0]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.RescaleIntercept = 0
    ds.PixelData = encapsulate([b"\xff\xd8 this is not a JPEG stream" * 8])
    ds["PixelData"].VR = "OB"
    return series
