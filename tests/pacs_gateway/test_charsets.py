"""Issue 12, §3: one encoding per data set, applied to every text element, stored as UTF-8.

Real files (text written as raw bytes, as the modalities do) are sent by
DCMTK storescu through the gateway; the result is read back from Orthanc.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pacs_gateway import Gateway
from storage import OrthancStore
from tests.helpers import wait_for

from .conftest import dcmtk

VIETNAMESE = {
    "PatientName": "Lê^Thị Ánh Tuyết",
    "StudyDescription": "Chụp CT sọ não",
    "SeriesDescription": "Lát cắt mỏng",
    "InstitutionName": "Bệnh viện Đa khoa Tỉnh",
    "ReferringPhysicianName": "Phạm^Văn Bình",
}
LATIN = {
    "PatientName": "José^Müller",
    "StudyDescription": "Tête crâne",
    "SeriesDescription": "Coupe fine",
    "InstitutionName": "Hôpital Saint-Éloi",
    "ReferringPhysicianName": "Brûlé^Anaïs",
}
JAPANESE = {
    "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "StudyDescription": "胸部ＣＴ",
    "SeriesDescription": "単純",
    "InstitutionName": "東京病院",
    "ReferringPhysicianName": "Sato^Hanako=佐藤^花子",
}


def _file(path: Path, charset: list[str] | None, texts: dict[str, str], encoding: str | None) -> str:
    """A Secondary Capture instance; ``encoding`` writes the text bytes ourselves, None lets pydicom encode."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if charset is not None:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "CHARSET-" + meta.MediaStorageSOPInstanceUID[-6:]
    ds.Modality = "OT"
    for key, text in texts.items():
        setattr(ds, key, text.encode(encoding) if encoding else text)
    item = Dataset()
    value = texts["StudyDescription"]
    item.RequestedProcedureDescription = value.encode(encoding) if encoding else value
    ds.RequestAttributesSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


CASES = {
    # label, texts, how the bytes are written
    "no-charset-utf8": (None, VIETNAMESE, "utf-8"),
    "latin1-label-utf8-bytes": (["ISO_IR 100"], VIETNAMESE, "utf-8"),
    "utf8-label-latin1-bytes": (["ISO_IR 192"], LATIN, "latin-1"),
    "latin1-correct": (["ISO_IR 100"], LATIN, "latin-1"),
    "iso2022-ir87": (["", "ISO 2022 IR 87"], JAPANESE, None),
    "iso2022-ir6-ir87": (["ISO 2022 IR 6", "ISO 2022 IR 87"], JAPANESE, None),
}


def test_every_text_element_is_stored_as_correct_utf8(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pacs_gateway")
    gw = make_gateway(orthanc)
    sent: dict[str, tuple[str, dict[str, str]]] = {}
    paths = []
    for name, (charset, texts, encoding) in CASES.items():
        path = tmp_path / f"{name}.dcm"
        sent[name] = (_file(path, charset, texts, encoding), texts)
        paths.append(str(path))
    if b"\x1b$B" not in (tmp_path / "iso2022-ir87.dcm").read_bytes():
        raise AssertionError("the ISO 2022 IR 87 file does not use JIS escape sequences")
    result = dcmtk("storescu", "-aec", "FILMLESS", "-R", "127.0.0.1", str(gw.port), *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    wrong = []
    for name, (sop, texts) in sent.items():
        wait_for(lambda sop=sop: orthanc.find_instance(sop) is not None, timeout=60, what=f"{name} in Orthanc")
        stored = pydicom.dcmread(BytesIO(orthanc.instance_file(orthanc.find_instance(sop) or "")))
        assert stored.SpecificCharacterSet == "ISO_IR 192", name
        got = {key: str(stored.get(key, "")) for key in texts}
        got["nested"] = str(stored.RequestAttributesSequence[0].RequestedProcedureDescription)
        expected = {**texts, "nested": texts["StudyDescription"]}
        if got != expected:
            wrong.append((name, got))
    assert not wrong
    # The guesses are logged with the original bytes, so a wrong one can be undone.
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "labelled ISO_IR 100 but written in UTF-8" in messages
    assert "labelled UTF-8 but not UTF-8" in messages
    assert "Chụp CT sọ não".encode().hex(" ") in messages
