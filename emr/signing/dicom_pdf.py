"""Signed PDF reports as DICOM Encapsulated PDF instances, so any workstation shows them.

The instance joins the imaging study (same Study Instance UID and patient
tags) in a series of its own. The PDF bytes go in unchanged, so the signature
still verifies after a round trip through the PACS; ``EncapsulatedDocumentLength``
records the exact length because DICOM pads values to an even length.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from emr.core.clock import to_local, utcnow

from .exceptions import DicomEncapsulationError

__all__ = ["ENCAPSULATED_PDF_STORAGE", "STUDY_TAGS", "encapsulate_pdf", "extract_pdf"]

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
# Tags copied from the study (by keyword); the rest identify the new instance.
STUDY_TAGS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)


def encapsulate_pdf(
    pdf: bytes,
    study_tags: Mapping[str, Any],
    *,
    title: str = "",
    series_number: int = 9901,
    instance_number: int = 1,
    when: dt.datetime | None = None,
) -> bytes:
    """DICOM Part 10 bytes of an Encapsulated PDF instance in the study of ``study_tags``."""
    if not pdf.startswith(b"%PDF-"):
        raise DicomEncapsulationError("input is not a PDF", key="signing.error.document")
    if not study_tags.get("StudyInstanceUID") or not study_tags.get("PatientID"):
        raise DicomEncapsulationError(
            "StudyInstanceUID and PatientID are required", key="signing.error.dicom"
        )
    when = when or to_local(utcnow())  # DICOM dates and times are the facility's local time
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in STUDY_TAGS:
        value = study_tags.get(keyword)
        if value not in (None, ""):
            setattr(ds, keyword, value)
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if keyword not in ds:
            setattr(ds, keyword, "")  # type 2 attributes: present, may be empty
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = title[:64] if title else "Signed report"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "filmless"
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64] if title else "Signed report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except (ValueError, TypeError) as exc:
        raise DicomEncapsulationError(f"cannot write DICOM: {exc}", key="signing.error.dicom") from exc
    return out.getvalue()


def extract_pdf(dicom: bytes) -> bytes:
    """The PDF inside an Encapsulated PDF instance, exactly as it was encapsulated."""
    try:
        ds = dcmread(io.BytesIO(dicom))
        if ds.SOPClassUID != ENCAPSULATED_PDF_STORAGE or "EncapsulatedDocument" not in ds:
            raise DicomEncapsulationError("not an Encapsulated PDF", key="signing.error.not_dicom_pdf")
        data = bytes(ds.EncapsulatedDocument)
    except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
        raise DicomEncapsulationError(f"unreadable DICOM: {exc}", key="signing.error.not_dicom_pdf") from exc
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None and 0 <= int(length) <= len(data):
        return data[: int(length)]
    return data[:-1] if data.endswith(b"%%EOF\n\x00") or data.endswith(b"%%EOF\x00") else data
