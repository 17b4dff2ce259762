"""Signed report → DICOM Encapsulated PDF → Orthanc → back, byte for byte."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread

from emr.signing import ENCAPSULATED_PDF_STORAGE, DicomEncapsulationError, encapsulate_pdf, extract_pdf, verify_pdf

STUDY = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.12345678901234567890",
    "PatientID": "BN000123",
    "PatientName": "Nguyễn^Thị Hồng Nhung",
    "PatientBirthDate": "19850314",
    "PatientSex": "F",
    "AccessionNumber": "CT2026-0001",
    "StudyDate": "20261123",
}


def test_encapsulated_pdf_round_trip_through_orthanc(signed_twice: bytes, orthanc, pki) -> None:
    dicom = encapsulate_pdf(signed_twice, STUDY, title="Kết quả CLVT sọ não")
    ds = dcmread(io.BytesIO(dicom))
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.StudyInstanceUID == STUDY["StudyInstanceUID"] and ds.Modality == "DOC"
    assert ds.SeriesInstanceUID != STUDY["StudyInstanceUID"]
    stored = orthanc.upload(dicom)
    tags = orthanc.instance_tags(stored.instance_id)
    assert tags["StudyInstanceUID"] == STUDY["StudyInstanceUID"]
    assert tags["PatientName"] == "Nguyễn^Thị Hồng Nhung"
    back = extract_pdf(orthanc.instance_file(stored.instance_id))
    assert back == signed_twice
    assert verify_pdf(back, [pki.ca_certificate()]).valid


def test_odd_length_pdf_comes_back_exactly(signed_once: bytes) -> None:
    odd = signed_once if len(signed_once) % 2 else signed_once + b"\n"
    assert extract_pdf(encapsulate_pdf(odd, STUDY)) == odd


def test_bad_inputs() -> None:
    with pytest.raises(DicomEncapsulationError):
        encapsulate_pdf(b"not a pdf", STUDY)
    with pytest.raises(DicomEncapsulationError):
        encapsulate_pdf(b"%PDF-1.7", {"PatientID": "x"})
    with pytest.raises(DicomEncapsulationError):
        extract_pdf(b"not dicom at all")
