"""storage's index reads for query/retrieve, against a real Orthanc."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid

from storage import NotFound, OrthancStore
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
