"""storage's index reads for query/retrieve, against a real Orthanc."""

from __future__ import annotations

import socket
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from storage import NotFound, OrthancStore, StorageUnavailable
from tests.dicom_factory import ct_instance


def test_find_resources_levels_counts_and_files(orthanc: OrthancStore) -> None:
    study_uid = generate_uid()
    blobs = [ct_instance(patient_id="IDX-1", patient_name="Đỗ^Thị Index", study_uid=study_uid) for _ in range(3)]
    uploaded = [orthanc.upload(b) for b in blobs]
    (study,) = orthanc.find_resources("Study", {"StudyInstanceUID": study_uid})
    assert study.tags["PatientID"] == "IDX-1" and study.tags["PatientName"] == "Đỗ^Thị Index"
    assert study.parent_id == uploaded[0].patient_id
    studies, series, instances, modalities = orthanc.count_below("Study", study.orthanc_id)
    assert (studies, instances, modalities) == (1, 3, ("CT",))
    assert series == len({u.series_id for u in uploaded})
    stored = orthanc.stored_instances("Study", [study.orthanc_id])
    assert {s.orthanc_id for s in stored} == {u.instance_id for u in uploaded}
    assert {s.sop_class_uid for s in stored} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert all(s.transfer_syntax for s in stored)
    first = stored[0]
    ds = pydicom.dcmread(BytesIO(orthanc.read_instance(first.orthanc_id)))
    assert ds.SOPInstanceUID == first.sop_instance_uid
    assert orthanc.last_change() > 0


def test_only_indexed_keys_may_be_queried(orthanc: OrthancStore) -> None:
    with pytest.raises(ValueError, match="not indexed"):
        orthanc.find_resources("Study", {"BodyPartExamined": "HEAD"})  # a series tag, asked at study level
    with pytest.raises(ValueError, match="not indexed"):
        orthanc.find_resources("Patient", {"PixelSpacing": "1"})


def test_reading_a_missing_instance_is_not_found(orthanc: OrthancStore) -> None:
    with pytest.raises(NotFound):
        orthanc.read_instance("00000000-00000000-00000000-00000000-00000000")


def test_listing_then_describing_is_stored_instances(orthanc: OrthancStore) -> None:
    study_uid = generate_uid()
    for _ in range(4):
        orthanc.upload(ct_instance(patient_id="IDX-2", patient_name="Lê^Văn Liệt Kê", study_uid=study_uid))
    (study,) = orthanc.find_resources("Study", {"StudyInstanceUID": study_uid})
    listed = orthanc.list_instances("Study", [study.orthanc_id])
    stored = orthanc.stored_instances("Study", [study.orthanc_id])
    assert [i.orthanc_id for i in listed] == [i.orthanc_id for i in stored]
    assert all(not i.sop_class_uid and not i.transfer_syntax and i.size > 0 for i in listed)
    assert orthanc.describe_instances(listed) == stored
    gone = replace(listed[0], orthanc_id="00000000-00000000-00000000-00000000-00000000")
    assert [d.orthanc_id for d in orthanc.describe_instances([gone, *listed[1:]])] == [i.orthanc_id for i in listed[1:]]


def test_files_are_saved_whole_over_a_kept_alive_connection(orthanc: OrthancStore, tmp_path: Path) -> None:
    blob = ct_instance(patient_id="IDX-3", patient_name="Vũ^Thị Lưu", study_uid=generate_uid())
    instance_id = orthanc.upload(blob).instance_id
    target = tmp_path / "one.dcm"
    assert orthanc.save_instance(instance_id, target) == target.stat().st_size
    assert target.read_bytes() == orthanc.read_instance(instance_id)
    # Orthanc closing the idle kept-alive connection: the next read opens another.
    conn = orthanc._local.lean
    assert conn is not None and conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    again = tmp_path / "again.dcm"
    orthanc.save_instance(instance_id, again)
    assert again.read_bytes() == target.read_bytes()
    assert orthanc.instance_metadata(instance_id)["TransferSyntax"]
    with pytest.raises(NotFound):
        orthanc.save_instance("00000000-00000000-00000000-00000000-00000000", tmp_path / "missing.dcm")
    with pytest.raises(NotFound):
        orthanc.instance_metadata("00000000-00000000-00000000-00000000-00000000")
    assert orthanc.save_instance(instance_id, again) == len(again.read_bytes())  # still usable after a 404


def test_an_unreachable_orthanc_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    store = OrthancStore(f"http://127.0.0.1:{port}", "u", "p", timeout=2)
    with pytest.raises(StorageUnavailable):
        store.save_instance("x", tmp_path / "x.dcm")
    with pytest.raises(StorageUnavailable):
        store.instance_metadata("x")


def test_instances_are_read_into_a_reused_buffer(orthanc: OrthancStore) -> None:
    """read_instance_into reads into the buffer it is given when it fits, into a new one otherwise:
    the file's exact bytes either way."""
    blob = ct_instance(patient_id="IDX-4", patient_name="Trương^Thị Đĩa", study_uid=generate_uid())
    instance_id = orthanc.upload(blob).instance_id
    assert orthanc.read_instance(instance_id) == blob
    buffer = bytearray(b"x" * (len(blob) + 100))
    view = orthanc.read_instance_into(instance_id, buffer)
    assert view.obj is buffer and bytes(view) == blob
    view.release()
    small = bytearray(10)
    view = orthanc.read_instance_into(instance_id, small)
    assert view.obj is not small and bytes(view) == blob
    with pytest.raises(NotFound):
        orthanc.read_instance_into("00000000-00000000-00000000-00000000-00000000", buffer)
