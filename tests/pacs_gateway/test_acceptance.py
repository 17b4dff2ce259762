"""Issue 12, §2: accept what a real PACS accepts, never acknowledge what cannot be stored.

Every case is sent by an outside client (DCMTK storescu, or pynetdicom
sending the file's bytes as they are) and checked in the real Orthanc.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    HEVCMP51,
    MPEG2MPML,
    MPEG4HP41,
    ExplicitVRLittleEndian,
    RTPlanStorage,
    VideoEndoscopicImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config

from pacs_gateway import Gateway
from pacs_gateway.storage_classes import extra_standard_storage_classes
from storage import OrthancStore
from tests.helpers import wait_for

from .conftest import dcmtk

US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
NM_RETIRED = "1.2.840.10008.5.1.4.1.1.5"


def _dataset(sop_class: str, *, study_uid: str | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
             modality: str = "OT") -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "ACCEPT-1"
    ds.PatientName = "Trần^Văn Bình"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.StudyDate = "20261201"
    return ds


def _image(ds: Dataset, frames: int = 1) -> Dataset:
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(64)) * frames
    return ds


def _stored(orthanc: OrthancStore, sop_uid: str) -> bool:
    return orthanc.find_instance(sop_uid) is not None


def test_retired_storage_classes_are_accepted_and_stored(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(orthanc)
    files = {}
    for uid, modality, frames in ((US_RETIRED, "US", 1), (US_MULTIFRAME_RETIRED, "US", 3), (NM_RETIRED, "NM", 2)):
        ds = _image(_dataset(uid, modality=modality), frames)
        path = tmp_path / f"{uid}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[str(ds.SOPInstanceUID)] = path
    sent = dcmtk("storescu", "-aec", "FILMLESS", "-R", "127.0.0.1", str(gw.port), *map(str, files.values()))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    for sop in files:
        wait_for(lambda sop=sop: _stored(orthanc, sop), timeout=60, what=f"{sop} in Orthanc")


def test_every_standard_storage_class_is_offered(make_gateway: Callable[..., Gateway], orthanc: OrthancStore) -> None:
    """The retired (and recent non-patient) storage classes from pydicom's dictionary, all of them."""
    extra = extra_standard_storage_classes()
    assert {US_RETIRED, US_MULTIFRAME_RETIRED, NM_RETIRED} <= set(extra)
    gw = make_gateway(orthanc)
    ae = AE(ae_title="OLDMOD")
    for uid in extra:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == set(extra)


def test_non_conformant_but_unique_study_uid_is_stored_with_a_warning(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pacs_gateway")
    gw = make_gateway(orthanc)
    hex_uid = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"  # 64 hex characters
    ds = _image(_dataset("1.2.840.10008.5.1.4.1.1.7", study_uid=hex_uid))  # Secondary Capture
    path = tmp_path / "hex.dcm"
    ds.save_as(path, enforce_file_format=True)
    sent = dcmtk("storescu", "-aec", "FILMLESS", "-R", "127.0.0.1", str(gw.port), str(path))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert gw.stats.received == 1
    wait_for(lambda: _stored(orthanc, str(ds.SOPInstanceUID)), timeout=60, what="hex-UID instance in Orthanc")
    tags = orthanc.instance_tags(orthanc.find_instance(str(ds.SOPInstanceUID)) or "")
    assert tags["StudyInstanceUID"] == hex_uid
    assert any("StudyInstanceUID" in r.getMessage() and "UID syntax" in r.getMessage() for r in caplog.records)


def _truncated_rt_plan(path: Path) -> str:
    """An RT Plan whose defined-length Beam Sequence holds an element claiming more bytes than the item has.

    The bytes after the sequence are enough to cover the claim, so only a
    walk into the sequence notices it (the case the issue found).
    """
    ds = _dataset(RTPlanStorage, modality="RTPLAN")
    beam = Dataset()
    beam.BeamNumber = 1
    beam.BeamName = "FIELD1"
    ds.BeamSequence = Sequence([beam])
    ds.ApprovalStatus = "UNAPPROVED"
    ds.DataSetTrailingPadding = b"\0" * 512
    ds["BeamSequence"].is_undefined_length = False
    beam.is_undefined_length_sequence_item = False
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    raw = out.getvalue()
    good = b"LO\x06\x00FIELD1"
    assert raw.count(good) == 1
    path.write_bytes(raw.replace(good, b"LO\xc8\x00FIELD1"))  # claims 200 bytes inside a 30-byte item
    return str(ds.SOPInstanceUID)


def test_truncated_sequence_is_refused_before_the_acknowledgement(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway(orthanc)
    path = tmp_path / "rtplan.dcm"
    sop = _truncated_rt_plan(path)
    # Send the bytes exactly as they are (no re-encoding by the client).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="TPS01")
    ae.add_requested_context(RTPlanStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    assert assoc.is_established
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0xC000, status
    assert "sequence item truncated" in str(status.ErrorComment)
    assert gw.stats.received == 0
    notes = [json.loads(n.read_text("utf-8")) for n in (gw.settings.spool_dir / "quarantine").glob("*.json")]
    assert [(n["stage"], n["status"]) for n in notes] == [("receive", "0xC000")]
    assert not _stored(orthanc, sop)


@pytest.mark.parametrize(("transfer_syntax", "propose"), [(MPEG2MPML, "-xm"), (MPEG4HP41, "-xn"), (HEVCMP51, "-x4")],
                         ids=["mpeg2", "h264", "hevc"])
def test_video_transfer_syntaxes_are_accepted_and_stored_as_sent(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, transfer_syntax: str, propose: str
) -> None:
    gw = make_gateway(orthanc)
    ds = _dataset(VideoEndoscopicImageStorage, transfer_syntax=transfer_syntax, modality="ES")
    ds.Rows, ds.Columns = 480, 640
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 30
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 33.3
    stream = b"\x00\x00\x01\xb3" + bytes(range(256)) * 40  # stands in for the video stream
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "video.dcm"
    ds.save_as(path, enforce_file_format=True)
    sent = dcmtk("storescu", "-aec", "FILMLESS", "-R", propose, "127.0.0.1", str(gw.port), str(path))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    sop = str(ds.SOPInstanceUID)
    wait_for(lambda: _stored(orthanc, sop), timeout=60, what="video instance in Orthanc")
    back = pydicom.dcmread(BytesIO(orthanc.instance_file(orthanc.find_instance(sop) or "")))
    assert back.file_meta.TransferSyntaxUID == transfer_syntax
    assert stream in bytes(back.PixelData)
