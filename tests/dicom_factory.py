"""Build small DICOM instances in memory for tests that need precise content."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["ct_instance", "commitment_request"]


def ct_instance(
    *,
    patient_id: str = "P001",
    patient_name: str = "Nguyễn^Thị Hồng Nhung",
    accession: str = "ACC001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    study_date: str = "20261120",
    instance_number: int = 1,
    size: int = 16,
    charset: str | None = "ISO_IR 192",
) -> bytes:
    """One small CT slice as DICOM Part 10 bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = "101010"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.StudyDescription = "CT sọ não"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.arange(size * size, dtype=np.int16) % 2000).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def commitment_request(transaction: str, references: list[tuple[str, str]]) -> Dataset:
    """Action Information of a storage commitment N-ACTION: (SOP Class UID, SOP Instance UID) pairs."""
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds
