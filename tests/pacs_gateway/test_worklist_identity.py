"""Modality Worklist from a provider (DCMTK findscu -W) and EMR identity coercion."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityWorklistInformationFind

from pacs_gateway import Gateway
from pacs_gateway.names import name_matches
from storage import OrthancStore
from tests.corpus import describe, make_ct_series
from tests.helpers import wait_for

from .conftest import dcmtk

ORDERS = [
    {"AccessionNumber": "A1001", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.100", "PatientID": "BN001",
     "PatientName": "Nguyễn^Thị Hồng Nhung", "PatientBirthDate": "19850412", "PatientSex": "F",
     "RequestedProcedureID": "RP1", "RequestedProcedureDescription": "CT sọ não không tiêm thuốc",
     "ReferringPhysicianName": "Trần^Văn Đức", "Modality": "CT", "ScheduledStationAETitle": "CT01",
     "ScheduledProcedureStepStartDate": "20261123", "ScheduledProcedureStepStartTime": "0930",
     "ScheduledProcedureStepID": "SPS1", "ScheduledProcedureStepDescription": "Sọ não"},
    {"AccessionNumber": "A1002", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.101", "PatientID": "BN002",
     "PatientName": "Phạm^Quốc Việt", "Modality": "MR", "ScheduledStationAETitle": "MR01",
     "ScheduledProcedureStepStartDate": "20261124"},
    {"AccessionNumber": "A1003", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.102", "PatientID": "BN003",
     "PatientName": "Lê^Thị Ánh Tuyết", "Modality": "CT", "ScheduledStationAETitle": "CT01",
     "ScheduledProcedureStepStartDate": "20261201"},
]

STATION_LESS = {"AccessionNumber": "A1004", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.103", "PatientID": "BN004",
                "PatientName": "Đỗ^Minh Khôi", "Modality": "CT", "ScheduledStationAETitle": "",
                "ScheduledProcedureStepStartDate": "20261123"}


def test_findscu_worklist_gets_vietnamese_names_and_only_requested_keys(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    queries: list[dict[str, str]] = []

    def provider(query: dict[str, str]) -> Iterable[Mapping[str, object]]:
        queries.append(query)
        return ORDERS[:1] + [STATION_LESS]  # what the EMR matched: the gateway answers it as it is

    gw = make_gateway(orthanc, worklist=provider)
    out = tmp_path / "rsp"
    out.mkdir()
    result = dcmtk(
        "findscu", "-W", "-aet", "CT01", "-aec", "FILMLESS", "-X", "-od", str(out),
        "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber", "-k", "PatientSex",
        "-k", "ScheduledProcedureStepSequence[0].Modality=CT",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261120-20261125",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
        "127.0.0.1", str(gw.settings.port),
    )
    assert result.returncode == 0, result.stderr
    assert queries == [{"Modality": "CT", "ScheduledStationAETitle": "CT01",
                        "ScheduledProcedureStepStartDate": "20261120-20261125"}]
    files = sorted(out.glob("rsp*.dcm"))
    assert len(files) == 2  # an order with no station is offered to every station, CT01 included
    by_accession = {pydicom.dcmread(f).AccessionNumber: pydicom.dcmread(f) for f in files}
    assert set(by_accession) == {"A1001", "A1004"}
    # Type 1, never empty (issue 12 §4): a step for any station is answered as the asking station's.
    assert by_accession["A1004"].ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"
    ds = by_accession["A1001"]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Nguyễn^Thị Hồng Nhung"
    assert ds.PatientID == "BN001" and ds.AccessionNumber == "A1001" and ds.PatientSex == "F"
    assert "PatientBirthDate" not in ds  # not asked for
    step = ds.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepDescription == "Sọ não"
    assert "ScheduledProcedureStepID" not in step


def test_findscu_worklist_utf8_name_without_character_set(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A station on a UTF-8 terminal types ``Nguyễn*``: UTF-8 bytes, no Specific Character Set."""
    queries: list[dict[str, str]] = []

    def provider(query: dict[str, str]) -> Iterable[Mapping[str, object]]:
        queries.append(query)  # matches names as the EMR does: without case or diacritics
        return [o for o in ORDERS if name_matches(query.get("PatientName", "*"), str(o["PatientName"]))]

    caplog.set_level(logging.INFO, logger="pacs_gateway")
    gw = make_gateway(orthanc, worklist=provider)

    def find(out: Path, *keys: str) -> list[pydicom.Dataset]:
        out.mkdir()
        args = [a for k in ("PatientID", "AccessionNumber", "ScheduledProcedureStepSequence[0].Modality", *keys)
                for a in ("-k", k)]
        result = dcmtk("findscu", "-W", "-aet", "CT01", "-aec", "FILMLESS", "-X", "-od", str(out), *args,
                       "127.0.0.1", str(gw.settings.port))
        assert result.returncode == 0, result.stderr
        return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]

    (ds,) = find(tmp_path / "utf8", "PatientName=Nguyễn^Thị*")  # str arguments reach findscu UTF-8 encoded
    assert queries[-1] == {"PatientName": "Nguyễn^Thị*"}
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert (ds.AccessionNumber, str(ds.PatientName)) == ("A1001", "Nguyễn^Thị Hồng Nhung")
    logged = [r for r in caplog.records if "no character set, bytes are UTF-8" in r.getMessage()]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in logged] == [("INFO", "worklist C-FIND from CT01")]

    # Latin-1 bytes under ISO_IR 100 are still Latin-1: "Lê^Thị Ánh*" ("ê", "ị" are not in Latin-1: wildcards).
    latin1 = os.fsdecode("PatientName=L?^Th? Ánh*".encode("latin-1"))  # those very bytes on the command line
    (ds,) = find(tmp_path / "latin1", "SpecificCharacterSet=ISO_IR 100", latin1)
    assert queries[-1] == {"PatientName": "L?^Th? Ánh*"}
    assert (ds.AccessionNumber, str(ds.PatientName)) == ("A1003", "Lê^Thị Ánh Tuyết")


def test_worklist_provider_failure_is_a_find_failure_not_a_crash(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway]
) -> None:
    def broken(query: dict[str, str]) -> Iterable[Mapping[str, object]]:
        raise ConnectionError("EMR database down")

    gw = make_gateway(orthanc, worklist=broken)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    query = pydicom.Dataset()
    query.PatientName = "*"
    statuses = [int(status.Status) for status, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    assoc.release()
    assert statuses == [0xC001]


def test_identity_from_emr_is_coerced_and_a_failing_provider_only_delays(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    calls: list[tuple[str, str]] = []

    def identity(accession: str, study_uid: str) -> Mapping[str, str] | None:
        calls.append((accession, study_uid))
        if len(calls) <= 2:
            raise TimeoutError("EMR is slow")
        if accession == "A2001":
            return {"PatientID": "BN777", "PatientName": "Nguyễn^Thị Hồng Nhung", "PatientBirthDate": "19850412"}
        return None

    gw = make_gateway(orthanc, identity=identity)
    paths = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32, patient_name="NGUYEN^THI HONG NHUNG",
                           accession="A2001", patient_id="TMP-42", charset=None)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths] == [0, 0, 0]
    assoc.release()
    wait_for(lambda: gw.stats.forwarded == 3, timeout=30, what="uploads after the identity provider recovers")
    for path in paths:
        tags = orthanc.instance_tags(orthanc.find_instance(describe(path).sop_instance_uid) or "")
        assert tags["PatientID"] == "BN777"
        assert tags["PatientName"] == "Nguyễn^Thị Hồng Nhung"
        assert tags["PatientBirthDate"] == "19850412"
        assert tags["PatientSex"] == "F"  # not coerced: kept from the modality


def test_worklist_not_offered_without_provider(orthanc: OrthancStore, make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(orthanc)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert not (assoc.is_established and assoc.accepted_contexts)
    if assoc.is_established:
        assoc.release()


def test_broken_emr_holds_images_back_only_for_identity_timeout(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken(accession: str, study_uid: str) -> Mapping[str, str] | None:
        calls.append(accession)
        raise RuntimeError("no such table: imaging_orders")  # EMR database not migrated

    caplog.set_level(logging.WARNING, logger="pacs_gateway")
    gw = make_gateway(orthanc, identity=broken, identity_timeout=1.0)
    paths = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32, patient_name="Lê^Thị Ánh Tuyết",
                           accession="A3001", patient_id="TMP-77", charset=None)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths] == [0, 0, 0]
    assoc.release()
    wait_for(lambda: gw.stats.forwarded == 3, timeout=30, what="uploads despite the broken EMR")
    assert calls and set(calls) == {"A3001"}
    for path in paths:
        tags = orthanc.instance_tags(orthanc.find_instance(describe(path).sop_instance_uid) or "")
        assert tags["PatientID"] == "TMP-77"  # as the modality sent it: the EMR reconciles later
        assert tags["PatientName"] == "Lê^Thị Ánh Tuyết"  # the charset is still normalised
    warnings = [r.getMessage() for r in caplog.records if "identity the modality sent" in r.getMessage()]
    assert len(warnings) == 3
    assert not list((gw.settings.spool_dir / "ready").iterdir())
    assert not list((gw.settings.spool_dir / "scratch").iterdir())
