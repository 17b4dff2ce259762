"""Query/Retrieve SCP (IHE RAD-14/RAD-16) with DCMTK findscu/movescu/getscu and pynetdicom.

Everything real: the session Orthanc holds the studies, the gateway answers
from its index, DCMTK's storescp is the workstation a C-MOVE sends to.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

import emr.core.normalize
from pacs_gateway import Gateway, fold
from pacs_gateway.names import index_pattern, name_matches
from storage import OrthancStore
from tests.corpus import make_ct_series
from tests.helpers import free_port, wait_for

from .conftest import dcmtk

BINH = "Phạm^Văn Bình"
NHUNG = "Hoàng^Thị Thúy Quỳnh"


@pytest.fixture(scope="module")
def studies(orthanc: OrthancStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two patients in Orthanc: Phạm Văn Bình (one CT study, 2 series: 3 + 2 slices), Hoàng Thị Thúy Quỳnh.

    The session Orthanc also holds other tests' patients (Phạm^Quốc Việt, ...): queries here must
    single these out by name alone."""
    root = tmp_path_factory.mktemp("qr")
    study_uid = pydicom.uid.generate_uid()
    first = make_ct_series(root / "a", 3, rows=64, cols=64, patient_name=BINH, patient_id="QR-BINH",
                           accession="QR-ACC1", study_uid=study_uid)
    second = make_ct_series(root / "b", 2, rows=64, cols=64, patient_name=BINH, patient_id="QR-BINH",
                            accession="QR-ACC1", study_uid=study_uid)
    other = make_ct_series(root / "c", 1, rows=64, cols=64, patient_name=NHUNG, patient_id="QR-NHUNG",
                           accession="QR-ACC2")
    for path in [*first, *second, *other]:
        orthanc.upload(path.read_bytes())
    return {"study_uid": study_uid, "files": first + second, "other": other,
            "series": [pydicom.dcmread(first[0]).SeriesInstanceUID, pydicom.dcmread(second[0]).SeriesInstanceUID]}


@pytest.fixture
def audited() -> list[dict[str, object]]:
    return []


@pytest.fixture
def qr_gateways(orthanc: OrthancStore, make_gateway: Callable[..., Gateway],
                audited: list[dict[str, object]]) -> Callable[..., tuple[Gateway, int]]:
    """Factory: a gateway with Q/R whose only move destination is WS01 on a free port, and that port.

    ``store`` replaces the session Orthanc (e.g. a wrapper that records calls); other keywords are settings.
    """

    def make(store: Any = None, **overrides: Any) -> tuple[Gateway, int]:
        ws_port = free_port()
        gw = make_gateway(store or orthanc, destinations=(f"WS01@127.0.0.1:{ws_port}",), **overrides)
        gw.query_retrieve.audit_provider = audited.append  # type: ignore[union-attr]
        return gw, ws_port

    return make


@pytest.fixture
def qr_gateway(qr_gateways: Callable[..., tuple[Gateway, int]]) -> tuple[Gateway, int]:
    """A gateway with Q/R whose only move destination is WS01 (a storescp on a free port)."""
    return qr_gateways()


def _responses(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


def test_fold_is_the_emr_rule() -> None:
    for name in (BINH, NHUNG, "Nguyễn^Thị Hồng Nhung", "Đặng  Thị Ánh Tuyết", "Lê Đức Thọ", "TRẦN QUỐC VIỆT"):
        assert fold(name) == emr.core.normalize.fold(name)
    assert name_matches("pham*", BINH) and name_matches("PHAM^VAN*", BINH) and not name_matches("phan*", BINH)
    assert index_pattern("pham*") == "ph*m*"


def test_findscu_study_root_matches_names_without_diacritics(
    qr_gateway: tuple[Gateway, int], studies: dict[str, Any], audited: list[dict[str, object]], tmp_path: Path
) -> None:
    gw, _ = qr_gateway
    result = dcmtk(
        "findscu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-X", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=pham^van*", "-k", "PatientID", "-k", "StudyInstanceUID",
        "-k", "StudyDescription", "-k", "AccessionNumber", "-k", "ModalitiesInStudy",
        "-k", "NumberOfStudyRelatedInstances", "-k", "NumberOfStudyRelatedSeries", "-k", "StudyDate",
        "127.0.0.1", str(gw.settings.port),
    )
    assert result.returncode == 0, result.stderr
    found = _responses(tmp_path)
    assert len(found) == 1
    ds = found[0]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == BINH and ds.PatientID == "QR-BINH"
    assert ds.StudyInstanceUID == studies["study_uid"]
    assert ds.StudyDescription == "CT ngực"
    assert ds.ModalitiesInStudy == "CT"
    assert int(ds.NumberOfStudyRelatedInstances) == 5
    assert int(ds.NumberOfStudyRelatedSeries) == 2
    assert ds.StudyDate == "20261123"
    assert audited[-1]["action"] == "dicom.query"
    assert audited[-1]["patients"] == [{"PatientID": "QR-BINH", "PatientName": BINH}]
    assert audited[-1]["calling_aet"] == "WS01"


TRAN = "Trần^Thị Mỹ Duyên"
MUELLER = "Müller^Hans"


@pytest.fixture(scope="module")
def foreign_names(orthanc: OrthancStore, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Trần Thị Mỹ Duyên (patient ID QR-TRẦN) and Müller Hans in Orthanc (stored as UTF-8), one CT slice each."""
    root = tmp_path_factory.mktemp("qr-names")
    for folder, name, patient_id in (("tran", TRAN, "QR-TRẦN"), ("mueller", MUELLER, "QR-MUELLER")):
        (path,) = make_ct_series(root / folder, 1, rows=16, cols=16, patient_name=name, patient_id=patient_id,
                                 accession=f"ACC-{folder}")
        orthanc.upload(path.read_bytes())


def _findscu_names(port: int, out: Path, *keys: str) -> list[Dataset]:
    """findscu -S at STUDY level; a key given as bytes goes on the command line as those very bytes."""
    out.mkdir()
    args = [a for k in ("QueryRetrieveLevel=STUDY", "PatientID", "StudyInstanceUID", *keys) for a in ("-k", k)]
    result = dcmtk("findscu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-X", "-od", str(out), *args,
                   "127.0.0.1", str(port))
    assert result.returncode == 0, result.stderr
    return _responses(out)


def test_findscu_utf8_name_without_character_set_is_read_as_utf8(
    qr_gateway: tuple[Gateway, int], foreign_names: None, audited: list[dict[str, object]], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DCMTK on a UTF-8 terminal sends ``Trần*`` as UTF-8 bytes and no Specific Character Set."""
    gw, _ = qr_gateway
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    # str arguments reach findscu UTF-8 encoded, exactly as typed in a UTF-8 terminal.
    found = _findscu_names(gw.settings.port, tmp_path / "utf8", "PatientName=Trần^Thị Mỹ*")
    assert [(d.PatientID, str(d.PatientName), d.SpecificCharacterSet) for d in found] == [
        ("QR-TRẦN", TRAN, "ISO_IR 192")]
    assert audited[-1]["query"] == {"PatientName": "Trần^Thị Mỹ*"}
    logged = [r for r in caplog.records if "no character set, bytes are UTF-8" in r.getMessage()]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in logged] == [("INFO", "C-FIND from WS01")]

    # Labelled ISO_IR 100 (what some workstations send whatever they type) but written in UTF-8.
    found = _findscu_names(gw.settings.port, tmp_path / "labelled", "SpecificCharacterSet=ISO_IR 100",
                           "PatientName=Trần^Thị Mỹ*")
    assert [(d.PatientID, str(d.PatientName)) for d in found] == [("QR-TRẦN", TRAN)]


def test_getscu_utf8_patient_id_without_character_set_is_read_as_utf8(
    qr_gateway: tuple[Gateway, int], foreign_names: None, audited: list[dict[str, object]], tmp_path: Path
) -> None:
    """C-GET (and C-MOVE, which resolves its identifier the same way) decide the identifier's text alike."""
    gw, _ = qr_gateway
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk("getscu", "-P", "-aet", "WS02", "-aec", "FILMLESS", "-od", str(out),
                   "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=QR-TRẦN", "127.0.0.1", str(gw.settings.port))
    assert result.returncode == 0, result.stderr
    assert [str(pydicom.dcmread(p).PatientName) for p in out.iterdir()] == [TRAN]
    assert audited[-1]["query"] == {"PatientID": "QR-TRẦN"} and audited[-1]["instances"] == 1


@pytest.mark.parametrize("charset", ["ISO_IR 100", None], ids=["labelled-latin-1", "unlabelled-latin-1"])
def test_findscu_latin1_name_still_matches_as_latin1(
    qr_gateway: tuple[Gateway, int], foreign_names: None, tmp_path: Path, charset: str | None
) -> None:
    gw, _ = qr_gateway
    name = os.fsdecode("PatientName=Müller^H*".encode("latin-1"))  # the Latin-1 bytes on findscu's command line
    keys = ([f"SpecificCharacterSet={charset}"] if charset else []) + [name]
    found = _findscu_names(gw.settings.port, tmp_path / "latin1", *keys)
    assert [(d.PatientID, str(d.PatientName), d.SpecificCharacterSet) for d in found] == [
        ("QR-MUELLER", MUELLER, "ISO_IR 192")]


def test_findscu_patient_root_at_every_level(
    qr_gateway: tuple[Gateway, int], studies: dict[str, Any], tmp_path: Path
) -> None:
    gw, _ = qr_gateway
    port = str(gw.settings.port)

    def find(name: str, *keys: str) -> list[Dataset]:
        out = tmp_path / name
        out.mkdir()
        result = dcmtk("findscu", "-P", "-aet", "WS01", "-aec", "FILMLESS", "-X", "-od", str(out),
                       *[a for k in keys for a in ("-k", k)], "127.0.0.1", port)
        assert result.returncode == 0, result.stderr
        return _responses(out)

    patients = find("patient", "QueryRetrieveLevel=PATIENT", "PatientName=HOANG^THI THUY*", "PatientID",
                     "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")
    assert [(str(p.PatientName), p.PatientID) for p in patients] == [(NHUNG, "QR-NHUNG")]
    assert int(patients[0].NumberOfPatientRelatedStudies) == 1
    assert int(patients[0].NumberOfPatientRelatedInstances) == 1

    series = find("series", "QueryRetrieveLevel=SERIES", "PatientID=QR-BINH",
                  f"StudyInstanceUID={studies['study_uid']}", "SeriesInstanceUID", "Modality",
                  "NumberOfSeriesRelatedInstances")
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(studies["series"])
    assert sorted(int(s.NumberOfSeriesRelatedInstances) for s in series) == [2, 3]
    assert {s.Modality for s in series} == {"CT"}

    images = find("image", "QueryRetrieveLevel=IMAGE", "PatientID=QR-BINH",
                  f"StudyInstanceUID={studies['study_uid']}", f"SeriesInstanceUID={studies['series'][0]}",
                  "SOPInstanceUID", "SOPClassUID", "InstanceNumber")
    expected = {pydicom.dcmread(p).SOPInstanceUID for p in studies["files"][:3]}
    assert {i.SOPInstanceUID for i in images} == expected
    assert {i.SOPClassUID for i in images} == {CTImageStorage}

    assert find("nobody", "QueryRetrieveLevel=PATIENT", "PatientName=khongai*", "PatientID") == []


def _storescp(port: int, folder: Path, aet: str = "WS01") -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-aet", aet, "-od", str(folder), "+B", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(port)],
                                    capture_output=True).returncode == 0, timeout=15, what="storescp")
    return proc


def _pixels(paths: list[Path]) -> dict[str, bytes]:
    out = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        out[ds.SOPInstanceUID] = ds.PixelData
    return out


@pytest.mark.parametrize("path", [{}, {"move_direct_max_mb": 0}, {"move_direct_max_mb": 0, "move_by_storage": False}],
                         ids=["sent-directly", "sent-by-orthanc", "sent-by-pynetdicom"])
def test_movescu_sends_the_study_to_the_configured_workstation(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], audited: list[dict[str, object]],
    tmp_path: Path, path: dict[str, Any]
) -> None:
    gw, ws_port = qr_gateways(**path)
    received = tmp_path / "ws01"
    scp = _storescp(ws_port, received)
    try:
        result = dcmtk("movescu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-aem", "WS01",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={studies['study_uid']}",
                       "127.0.0.1", str(gw.settings.port))
    finally:
        scp.terminate()
        scp.wait(10)
    assert result.returncode == 0, result.stderr
    assert _pixels(sorted(received.iterdir())) == _pixels(studies["files"])
    event = audited[-1]
    assert event["action"] == "dicom.retrieve" and event["destination"] == "WS01" and event["instances"] == 5
    assert event["patients"] == [{"PatientID": "QR-BINH", "PatientName": BINH}]


def test_moves_sent_directly_share_the_gateways_read_threads(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], tmp_path: Path
) -> None:
    """The files are read ahead by threads kept between moves, not by new ones per move."""
    import threading

    from pacs_gateway.retrieve import RETRIEVE_READERS

    gw, ws_port = qr_gateways()
    scp = _storescp(ws_port, tmp_path / "ws01")
    readers: list[set[int]] = []
    try:
        for _ in range(2):
            result = dcmtk("movescu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-aem", "WS01",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={studies['study_uid']}",
                           "127.0.0.1", str(gw.settings.port))
            assert result.returncode == 0, result.stderr
            readers.append({t.ident for t in threading.enumerate() if t.name.startswith("retrieve-read")
                            and t.ident is not None})
    finally:
        scp.terminate()
        scp.wait(10)
    assert 0 < len(readers[0]) <= RETRIEVE_READERS
    assert readers[1] == readers[0]
    assert len(list((tmp_path / "ws01").iterdir())) == 5


def test_getscu_receives_a_series_on_its_own_association(
    qr_gateway: tuple[Gateway, int], studies: dict[str, Any], tmp_path: Path
) -> None:
    gw, _ = qr_gateway
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk("getscu", "-S", "-aet", "WS02", "-aec", "FILMLESS", "-od", str(out),
                   "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={studies['study_uid']}",
                   "-k", f"SeriesInstanceUID={studies['series'][1]}", "127.0.0.1", str(gw.settings.port))
    assert result.returncode == 0, result.stderr
    assert _pixels(sorted(out.iterdir())) == _pixels(studies["files"][3:])


def _get_requestor() -> AE:
    ae = AE(ae_title="WS03")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    return ae


def test_c_get_reports_each_failed_instance_and_counts(
    qr_gateway: tuple[Gateway, int], studies: dict[str, Any]
) -> None:
    gw, _ = qr_gateway
    refused = pydicom.dcmread(studies["files"][1]).SOPInstanceUID

    def on_store(event: evt.Event) -> int:
        return 0xA700 if event.request.AffectedSOPInstanceUID == refused else 0x0000

    ae = _get_requestor()
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = studies["study_uid"]
    answers = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    pending = [s for s, _ in answers if s.Status == 0xFF00]
    assert [int(s.NumberOfRemainingSuboperations) for s in pending] == [4, 3, 2, 1, 0]
    final, identifier = answers[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (4, 1)
    assert identifier.FailedSOPInstanceUIDList == refused


def test_c_cancel_stops_a_retrieve(qr_gateway: tuple[Gateway, int], studies: dict[str, Any]) -> None:
    gw, _ = qr_gateway
    holder: dict[str, Any] = {}
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(event.request.AffectedSOPInstanceUID)
        if len(stored) == 2:
            # The workstation's user pressed "stop" while the second image arrives.
            holder["assoc"].send_c_cancel(holder["msg_id"], holder["context_id"])
            time.sleep(0.2)
        return 0x0000

    ae = _get_requestor()
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    holder["assoc"] = assoc
    holder["msg_id"] = 7
    holder["context_id"] = next(cx.context_id for cx in assoc.accepted_contexts
                                if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = studies["study_uid"]
    answers = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=7))
    assoc.release()
    final = answers[-1][0]
    assert final.Status == 0xFE00
    assert int(final.NumberOfRemainingSuboperations) == 3
    assert len(stored) == 2


def test_patient_level_is_refused_in_study_root(qr_gateway: tuple[Gateway, int], studies: dict[str, Any]) -> None:
    gw, _ = qr_gateway
    ae = AE(ae_title="WS01")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "QR-BINH"
    statuses = [int(s.Status) for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
    ok = [int(s.Status) for s, _ in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses == [0xA900]
    assert ok == [0xFF00, 0x0000]


def _copying_store(tmp_path: Path) -> tuple[Path, type, bytes]:
    """A work folder, a Store class whose save_instance writes one small CT slice (for _Prefetch), the slice."""
    data = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)[0].read_bytes()
    work = tmp_path / "work"
    work.mkdir()

    class Store:
        def save_instance(self, instance_id: str, target: Path) -> int:
            target.write_bytes(data)
            return len(data)

    return work, Store, data


def test_read_ahead_is_bounded_by_bytes_keeps_order_and_cleans_up(tmp_path: Path) -> None:
    """Large multi-frame instances are copied one at a time; every file is gone afterwards."""
    from types import SimpleNamespace

    from pacs_gateway.retrieve import PREFETCH_BYTES, _Prefetch

    work, Store, data = _copying_store(tmp_path)

    big = [SimpleNamespace(orthanc_id=str(n), size=PREFETCH_BYTES // 2 + 1, sop_instance_uid=str(n),
                           sop_class_uid=CTImageStorage) for n in range(5)]
    prefetch = _Prefetch(Store(), big, work)  # type: ignore[arg-type]
    assert len(prefetch.queued) == 1
    seen = []
    for inst, ds in prefetch:
        seen.append(inst.orthanc_id)
        assert ds.__dict__["_raw_path"].read_bytes() == data
        assert len(list(work.iterdir())) <= 2  # the one being sent and the next
    assert seen == ["0", "1", "2", "3", "4"]
    assert list(work.iterdir()) == []
    small = [SimpleNamespace(orthanc_id=str(n), size=1000, sop_instance_uid=str(n), sop_class_uid=CTImageStorage)
             for n in range(20)]
    cancelled = _Prefetch(Store(), small, work)  # type: ignore[arg-type]
    assert len(cancelled.queued) == 8
    next(iter(cancelled))
    cancelled.close()  # a C-CANCEL: nothing left behind
    assert list(work.iterdir()) == []


def test_the_move_sub_association_waits_for_work_and_streams_files(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent by the gateway, the association to the workstation gets reactor.py's loops before its
    threads start (MoveAE)."""
    import pacs_gateway.retrieve as retrieve
    from pacs_gateway.reactor import EventDrivenDUL
    from pacs_gateway.stream_send import StreamingDIMSE, StreamingDUL

    seen: list[Any] = []
    original = retrieve._no_delay

    def spy(event: evt.Event) -> None:
        seen.append(event.assoc)
        original(event)

    monkeypatch.setattr(retrieve, "_no_delay", spy)
    gw, ws_port = qr_gateways(move_by_storage=False, move_direct_max_mb=0)
    received = tmp_path / "ws01"
    scp = _storescp(ws_port, received)
    try:
        result = dcmtk("movescu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-aem", "WS01",
                       "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={studies['study_uid']}",
                       "-k", f"SeriesInstanceUID={studies['series'][1]}", "127.0.0.1", str(gw.settings.port))
    finally:
        scp.terminate()
        scp.wait(10)
    assert result.returncode == 0, result.stderr
    assert _pixels(sorted(received.iterdir())) == _pixels(studies["files"][3:])
    (assoc,) = seen
    assert isinstance(assoc, retrieve._RawSendingAssociation)
    assert isinstance(assoc.dul, EventDrivenDUL) and isinstance(assoc.dul, StreamingDUL)
    assert isinstance(assoc.dimse, StreamingDIMSE)
    assert not assoc.get_handlers(evt.EVT_PDU_SENT) and not assoc.get_handlers(evt.EVT_DIMSE_RECV)
    assert not assoc.is_alive() and not assoc.dul.is_alive()  # released, threads ended


def test_accepted_associations_share_the_frozen_contexts(qr_gateway: tuple[Gateway, int]) -> None:
    import copy

    from pacs_gateway.server import SupportedContexts

    gw, _ = qr_gateway
    assert gw._server is not None
    contexts = gw._server.contexts
    assert isinstance(contexts, SupportedContexts)
    shared = copy.deepcopy(contexts)  # what pynetdicom gives each association
    assert type(shared) is list and shared is not contexts
    assert all(mine is original for mine, original in zip(shared, contexts, strict=True))
    # Shared, so they cannot be changed in place: a change would reach every association.
    with pytest.raises(AttributeError):
        shared[0].transfer_syntax.append("1.2.3")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        shared[0].add_transfer_syntax("1.2.3.4.5")
    assert all("1.2.3" not in cx.transfer_syntax and "1.2.3.4.5" not in cx.transfer_syntax for cx in contexts)


def test_an_instance_deleted_while_listed_is_not_sent_and_leaves_no_file(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pacs_gateway.retrieve import _Prefetch

    work, Store, data = _copying_store(tmp_path)

    listed = [SimpleNamespace(orthanc_id=str(n), size=1000, sop_instance_uid=str(n), sop_class_uid=CTImageStorage)
              for n in range(12)]
    prefetch = _Prefetch(Store(), listed, work)  # type: ignore[arg-type]
    prefetch.keep_only({"0", "2", "9", "11"})  # 1 is being read already, 10 is not
    sent = [inst.orthanc_id for inst, _ in prefetch]
    prefetch.close()
    assert sent == ["0", "2", "9", "11"]
    assert list(work.iterdir()) == []


def test_pending_responses_reach_dimse_sent_handlers_as_pynetdicoms_message() -> None:
    from pynetdicom.dimse_messages import C_MOVE_RSP
    from pynetdicom.dimse_primitives import C_MOVE
    from pynetdicom.dsutils import encode

    from pacs_gateway.stream_send import _lazy_message

    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 4
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Status = 0xFF00
    primitive.NumberOfRemainingSuboperations = 2
    primitive.NumberOfCompletedSuboperations = 3
    primitive.NumberOfFailedSuboperations = 0
    primitive.NumberOfWarningSuboperations = 0
    lazy = _lazy_message(primitive, 1)
    assert isinstance(lazy, C_MOVE_RSP)
    built = C_MOVE_RSP()
    built.primitive_to_message(primitive)
    assert encode(lazy.command_set, True, True) == encode(built.command_set, True, True)
    assert lazy.context_id == 1


# -- C-MOVEs sent by Orthanc itself (storage_push.py) ---------------------------------------------

class _Recording:
    """The session Orthanc, with a record of how each C-MOVE was sent (and pushes that may be refused)."""

    def __init__(self, store: OrthancStore, refuse_push: bool = False) -> None:
        self._store = store
        self.refuse_push = refuse_push
        self.pushes: list[list[str]] = []
        self.described: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def push_instances(self, instance_ids: list[str], **kwargs: Any) -> Any:
        self.pushes.append(list(instance_ids))
        if self.refuse_push:
            from storage import StorageUnavailable

            raise StorageUnavailable("Orthanc cannot start jobs right now")
        return self._store.push_instances(instance_ids, **kwargs)

    def describe_instances(self, instances: list[Any], **kwargs: Any) -> Any:
        self.described.append(len(instances))
        return self._store.describe_instances(instances, **kwargs)


class _Workstation:
    """A pynetdicom storage SCP as the move destination: records each C-STORE and its calling AE."""

    def __init__(self, port: int, on_store: Callable[[evt.Event], int] | None = None,
                 syntaxes: list[str] | None = None) -> None:
        from pynetdicom import StoragePresentationContexts

        self.stored: list[tuple[str, str, str]] = []
        self.syntaxes: set[str] = set()  # the transfer syntaxes images arrived in
        self._on_store = on_store
        ae = AE(ae_title="WS01")
        if syntaxes:
            for cx in StoragePresentationContexts:
                ae.add_supported_context(cx.abstract_syntax, syntaxes)
        else:
            ae.supported_contexts = StoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        self.stored.append((event.request.AffectedSOPInstanceUID, event.assoc.requestor.ae_title,
                            str(event.request.MoveOriginatorApplicationEntityTitle or "")))
        self.syntaxes.add(str(event.context.transfer_syntax))
        return self._on_store(event) if self._on_store else 0x0000

    def uids(self) -> set[str]:
        return {uid for uid, _, _ in self.stored}

    def close(self) -> None:
        self.server.shutdown()


def _move(port: int, study_uid: str, msg_id: int = 1,
          during: Callable[[Any, int], None] | None = None) -> list[tuple[Dataset, Dataset | None]]:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    ae = AE(ae_title="WS01")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    answers = []
    for status, identifier in assoc.send_c_move(query, "WS01", StudyRootQueryRetrieveInformationModelMove,
                                                msg_id=msg_id):
        answers.append((status, identifier))
        if during is not None:
            during(assoc, len(answers))
    assoc.release()
    return answers


def _uids(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def test_orthanc_sends_the_move_with_pending_counts_as_the_gateway_would(
    orthanc: OrthancStore, qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any]
) -> None:
    """One job in Orthanc, no instance read by the gateway; the requestor sees every Pending count."""
    store = _Recording(orthanc)
    gw, ws_port = qr_gateways(store, move_direct_max_mb=0)  # Orthanc's job sends
    ws = _Workstation(ws_port)
    try:
        answers = _move(gw.settings.port, studies["study_uid"], msg_id=9)
    finally:
        ws.close()
    assert len(store.pushes) == 1 and len(store.pushes[0]) == 5
    assert store.described == []  # nothing went out from Python
    assert ws.uids() == set(_uids(studies["files"]))
    # Orthanc calls as the gateway's AE, naming the requestor as move originator (PS3.7 9.3.1.1).
    assert {(calling, originator) for _, calling, originator in ws.stored} == {("FILMLESS", "WS01")}
    pending = [s for s, _ in answers if s.Status == 0xFF00]
    assert [int(s.NumberOfRemainingSuboperations) for s in pending] == [4, 3, 2, 1, 0]
    assert [int(s.NumberOfCompletedSuboperations) for s in pending] == [1, 2, 3, 4, 5]
    final = answers[-1][0]
    assert final.Status == 0x0000 and int(final.NumberOfCompletedSuboperations) == 5


@pytest.mark.parametrize("direct_max_mb", [16, 0], ids=["sent-directly", "sent-by-orthanc"])
def test_an_instance_the_workstation_refuses_is_reported_under_its_uid(
    orthanc: OrthancStore, qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any],
    direct_max_mb: int
) -> None:
    """Sent directly, the refusal is that instance's answer and the rest follows on the same
    association; Orthanc's job stops at it, and the gateway sends the rest itself."""
    store = _Recording(orthanc)
    gw, ws_port = qr_gateways(store, move_direct_max_mb=direct_max_mb)
    order = _uids(studies["files"])
    refused = order[2]
    ws = _Workstation(ws_port, on_store=lambda e: 0xA700 if e.request.AffectedSOPInstanceUID == refused else 0)
    try:
        answers = _move(gw.settings.port, studies["study_uid"])
    finally:
        ws.close()
    final, identifier = answers[-1]
    assert final.Status == 0xB000
    assert (int(final.NumberOfCompletedSuboperations), int(final.NumberOfFailedSuboperations)) == (4, 1)
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == refused
    assert ws.uids() == set(order)  # every other image is on the workstation
    if direct_max_mb:
        assert store.pushes == [] and store.described == [1] and len(ws.stored) == 5  # each sent once
    else:
        assert len(store.pushes) == 1
        assert store.described, "what the job did not send went out from the gateway"


def test_when_orthanc_cannot_start_the_job_the_gateway_sends_everything(
    orthanc: OrthancStore, qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any]
) -> None:
    store = _Recording(orthanc, refuse_push=True)
    gw, ws_port = qr_gateways(store, move_direct_max_mb=0)  # Orthanc's job sends
    ws = _Workstation(ws_port)
    try:
        answers = _move(gw.settings.port, studies["study_uid"])
    finally:
        ws.close()
    assert store.pushes and store.described == [5]
    assert answers[-1][0].Status == 0x0000 and int(answers[-1][0].NumberOfCompletedSuboperations) == 5
    assert ws.uids() == set(_uids(studies["files"]))


def test_a_destination_nobody_can_reach_is_refused_before_any_pending(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], audited: list[dict[str, object]]
) -> None:
    gw, _ = qr_gateways()  # nothing listens on WS01's port
    answers = _move(gw.settings.port, studies["study_uid"])
    assert [int(s.Status) for s, _ in answers] == [0xA801]
    assert audited[-1]["action"] == "dicom.retrieve" and audited[-1]["destination"] == "WS01"


@pytest.mark.parametrize("direct_max_mb", [16, 0], ids=["sent-directly", "sent-by-orthanc"])
def test_a_cancel_stops_the_sending(
    orthanc: OrthancStore, qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any],
    direct_max_mb: int
) -> None:
    """C-CANCEL after the first Pending: Cancel (0xFE00) with the remaining count, and nothing more
    is sent (by the gateway, or by Orthanc's job, which is cancelled)."""
    gw, ws_port = qr_gateways(_Recording(orthanc), move_direct_max_mb=direct_max_mb)

    def slow(event: evt.Event) -> int:
        time.sleep(0.3)  # a workstation writing to a slow disk
        return 0x0000

    def cancel_after_first(assoc: Any, answered: int) -> None:
        if answered == 1:
            context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax.endswith(".2.2.2"))
            assoc.send_c_cancel(3, context.context_id)

    ws = _Workstation(ws_port, on_store=slow)
    try:
        answers = _move(gw.settings.port, studies["study_uid"], msg_id=3, during=cancel_after_first)
        final = answers[-1][0]
        assert final.Status == 0xFE00
        assert int(final.NumberOfRemainingSuboperations) >= 3
        time.sleep(1.5)  # long enough for three more images at the workstation's pace
        assert len(ws.stored) < 5
    finally:
        ws.close()


def test_small_instances_go_out_from_memory_with_pending_counts(
    qr_gateways: Callable[..., tuple[Gateway, int]], orthanc: OrthancStore, studies: dict[str, Any]
) -> None:
    """direct_move.py: no Orthanc job, one metadata look-up per series after the first (not per instance), the
    gateway calling as itself and naming the requestor as move originator."""
    store = _Recording(orthanc)
    gw, ws_port = qr_gateways(store)
    ws = _Workstation(ws_port)
    try:
        answers = _move(gw.settings.port, studies["study_uid"], msg_id=11)
    finally:
        ws.close()
    # The first series known from its first file, the second from one look-up.
    assert store.pushes == [] and store.described == [1]
    assert ws.uids() == set(_uids(studies["files"]))
    assert {(calling, originator) for _, calling, originator in ws.stored} == {("FILMLESS", "WS01")}
    pending = [s for s, _ in answers if s.Status == 0xFF00]
    assert [int(s.NumberOfRemainingSuboperations) for s in pending] == [4, 3, 2, 1, 0]
    assert answers[-1][0].Status == 0x0000 and int(answers[-1][0].NumberOfCompletedSuboperations) == 5


def test_a_workstation_without_the_stored_syntax_gets_converted_copies(
    qr_gateways: Callable[..., tuple[Gateway, int]], orthanc: OrthancStore, studies: dict[str, Any]
) -> None:
    """The files are explicit VR; a workstation taking only implicit VR gets them through
    pynetdicom, which converts (the direct association cannot send them as stored)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in studies["files"]} == {ExplicitVRLittleEndian}
    store = _Recording(orthanc)
    gw, ws_port = qr_gateways(store)
    ws = _Workstation(ws_port, syntaxes=[ImplicitVRLittleEndian])
    try:
        answers = _move(gw.settings.port, studies["study_uid"])
    finally:
        ws.close()
    assert answers[-1][0].Status == 0x0000 and int(answers[-1][0].NumberOfCompletedSuboperations) == 5
    assert ws.uids() == set(_uids(studies["files"])) and ws.syntaxes == {ImplicitVRLittleEndian}
    assert store.described == [1, 5]  # the second series' head, then every instance for pynetdicom


def test_a_destination_that_accepts_and_never_answers_costs_a_timeout_not_the_gateway(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A workstation that takes the connection and says nothing: the move fails (0xA801) after
    one network timeout (not a second one asking again through pynetdicom), and the gateway
    keeps answering others meanwhile."""
    import socket
    import threading

    gw, ws_port = qr_gateways(network_timeout=1.0, request_timeout=1.0)
    silent = socket.create_server(("127.0.0.1", ws_port))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    answers: list[Any] = []
    mover = threading.Thread(target=lambda: answers.extend(_move(gw.settings.port, studies["study_uid"])))
    try:
        started = time.monotonic()
        mover.start()
        time.sleep(0.2)
        echo = dcmtk("echoscu", "-aec", "FILMLESS", "127.0.0.1", str(gw.settings.port))
        assert echo.returncode == 0, echo.stderr  # served while the move waits
        mover.join(30)
        assert not mover.is_alive()
        assert [int(s.Status) for s, _ in answers] == [0xA801]
        assert time.monotonic() - started < 10
        assert len(held) == 1  # one association request, not two
        # The move took as long as the network timeout; the requestor's association still
        # ends with the requestor's release, not the gateway's, sent at the same moment.
        assert "Network timeout reached" not in caplog.text
    finally:
        silent.close()
        for conn in held:
            conn.close()


def _workstation(port: int, on_store: Callable[[Any], int], ended: list[str]) -> Any:
    """A pynetdicom storage SCP as WS01 whose C-STORE answers ``on_store`` decides."""
    from pynetdicom import AllStoragePresentationContexts

    ae = AE(ae_title="WS01")
    ae.supported_contexts = AllStoragePresentationContexts
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, lambda _e: ended.append("released")),
        (evt.EVT_ABORTED, lambda _e: ended.append("aborted")),
    ])


def test_a_workstation_that_stalls_mid_move_costs_timeouts_not_the_move(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any]
) -> None:
    """The workstation stores two slices, then never answers again: the move still ends, within a
    couple of network timeouts, with the two counted as done and the rest reported failed by UID."""
    import threading

    gw, ws_port = qr_gateways(network_timeout=1.0, request_timeout=1.0)
    stop = threading.Event()
    stored: list[str] = []

    def on_store(event: Any) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        if len(stored) > 2:
            stop.wait(30)  # hangs: no response
        return 0

    ended: list[str] = []
    server = _workstation(ws_port, on_store, ended)
    try:
        started = time.monotonic()
        answers = _move(gw.settings.port, studies["study_uid"])
        took = time.monotonic() - started
        final, identifier = answers[-1]
        assert int(final.Status) == 0xB000
        assert (int(final.NumberOfCompletedSuboperations), int(final.NumberOfFailedSuboperations)) == (2, 3)
        assert identifier is not None
        failed = identifier.FailedSOPInstanceUIDList
        failed = [failed] if isinstance(failed, str) else list(failed)
        assert sorted(failed) == sorted(set(_uids(studies["files"])) - set(stored[:2]))
        assert took < 5, f"the move took {took:.1f} s for a 1 s network timeout"
        echo = dcmtk("echoscu", "-aec", "FILMLESS", "127.0.0.1", str(gw.settings.port))
        assert echo.returncode == 0, echo.stderr
    finally:
        stop.set()
        server.shutdown()


def test_a_requestor_that_aborts_mid_move_stops_the_sending(
    qr_gateways: Callable[..., tuple[Gateway, int]], studies: dict[str, Any], audited: list[dict[str, object]]
) -> None:
    """The workstation's user gives up (the requestor aborts after the first Pending): the gateway
    sends at most the slice on the wire, then ends the association to the workstation."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    gw, ws_port = qr_gateways()
    stored: list[str] = []

    def on_store(event: Any) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.5)  # a slow workstation: the abort comes while slices are still to go
        return 0

    ended: list[str] = []
    server = _workstation(ws_port, on_store, ended)
    try:
        ae = AE(ae_title="WS01")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = studies["study_uid"]
        for status, _ in assoc.send_c_move(query, "WS01", StudyRootQueryRetrieveInformationModelMove):
            assert int(status.Status) == 0xFF00
            assoc.abort()
            break
        wait_for(lambda: ended != [], timeout=5, what="the end of the association to the workstation")
        time.sleep(0.5)  # nothing more arrives
        assert 1 <= len(stored) <= 2, stored
        assert [e["action"] for e in audited] == ["dicom.retrieve"]
    finally:
        server.shutdown()
