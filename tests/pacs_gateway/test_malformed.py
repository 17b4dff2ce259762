"""Bad input gets a failure status, lands in quarantine with a reason, and the AE keeps serving."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSNearLossless, SecondaryCaptureImageStorage
from pynetdicom import AE, _config

from pacs_gateway import Gateway, NotUnderstood
from pacs_gateway.validate import inspect_file
from storage import OrthancStore
from tests.corpus import make_ct_series

from .conftest import echo


def _raw_file(path: Path, body: bytes, sop_class: str, sop_instance: str) -> Path:
    """A Part-10 file with a proper meta header and arbitrary data-set bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with path.open("wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, meta, enforce_standard=True)
        f.write(body)
    return path


def _body(path: Path) -> bytes:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw = path.read_bytes()
    return raw[132 + 12 + ds.file_meta.FileMetaInformationGroupLength :]


def test_malformed_instances_fail_quarantine_and_echo_still_answers(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway(orthanc)
    good = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)[0]
    uid = pydicom.dcmread(good).SOPInstanceUID
    body = _body(good)
    no_study = get_testdata_file("JPEGLSNearLossless_08.dcm")
    cases = {
        "truncated": (_raw_file(tmp_path / "t.dcm", body[: len(body) - 100], CTImageStorage, uid), 0xC000),
        "random": (_raw_file(tmp_path / "r.dcm", os.urandom(5000), CTImageStorage, "1.2.3.4.5"), 0xC000),
        "no-sop-instance": (
            _raw_file(tmp_path / "n.dcm", body.replace(uid.encode(), b"1.2.826.0.1.3680043.8.498.1"[: len(uid)]),
                      CTImageStorage, uid),
            0xC000,
        ),
        # A control character: not an identifier Orthanc can index (a merely
        # non-conformant UID is stored: tests/pacs_gateway/test_acceptance.py).
        "unstorable-uid": (_raw_file(tmp_path / "u.dcm", body.replace(uid.encode(), b"1.2\x07" + b"0" * (len(uid) - 4)),
                                     CTImageStorage, "1.2\x07" + "0" * (len(uid) - 4)), 0xC000),
        "wrong-sop-class": (_raw_file(tmp_path / "w.dcm", body, SecondaryCaptureImageStorage, uid), 0xA900),
        "no-study-uid": (Path(str(no_study)), 0xA900),
    }
    # Send the bytes exactly as they are in the files (no re-encoding by the client).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="BADMOD")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(SecondaryCaptureImageStorage, JPEGLSNearLossless)
    statuses = {}
    for name, (path, _expected) in cases.items():
        assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
        assert assoc.is_established
        rsp = assoc.send_c_store(path)
        statuses[name] = int(rsp.Status)
        assoc.release()
    assert statuses == {name: expected for name, (_p, expected) in cases.items()}
    assert gw.stats.received == 0
    notes = sorted((gw.settings.spool_dir / "quarantine").glob("*.json"))
    assert len(notes) == len(cases)
    reasons = [json.loads(n.read_text("utf-8")) for n in notes]
    assert all(r["calling_aet"] == "BADMOD" and r["reason"] and r["stage"] == "receive" for r in reasons)
    assert any("truncated" in r["reason"] for r in reasons)
    assert all(n.with_suffix(".dcm").exists() for n in notes)
    assert not list((gw.settings.spool_dir / "ready").iterdir())
    assert echo(gw.settings.port)
    # And a good instance still goes through afterwards.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert assoc.send_c_store(pydicom.dcmread(good)).Status == 0
    assoc.release()


def test_header_walk_reads_the_uids_pydicom_reads(corpus: tuple[Path, list[Path]]) -> None:
    """The acknowledgement path identifies instances without pydicom: check it against pydicom."""
    _root, files = corpus
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        header = inspect_file(path, str(ds.file_meta.TransferSyntaxUID), str(ds.SOPClassUID), None)
        assert (header.sop_class_uid, header.sop_instance_uid) == (ds.SOPClassUID, ds.SOPInstanceUID), path.name
    truncated = corpus[0] / "truncated.dcm"
    truncated.write_bytes(files[0].read_bytes()[:-7])
    with pytest.raises(NotUnderstood, match="truncated"):
        inspect_file(truncated, str(pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID), None, None)
    truncated.unlink()
