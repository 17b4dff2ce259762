"""Query/Retrieve cannot be used to get around the gateway's access rules.

Only allowed AEs may query or retrieve; a move goes only to a configured
destination; a "list everything" query is still answered only to allowed
AEs and audited with every patient it showed; when the audit cannot be
written nothing is shown or sent.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacs_gateway import Gateway, GatewaySettings
from storage import OrthancStore
from tests.corpus import make_ct_series
from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")]


def _dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TCP_NODELAY": "1"})


@pytest.fixture(scope="module")
def archive(orthanc: OrthancStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("qrsec")
    names = {"SEC-1": "Trần^Thị Mai", "SEC-2": "Đặng^Văn Hùng"}
    uids = {}
    for pid, name in names.items():
        uid = pydicom.uid.generate_uid()
        for path in make_ct_series(root / pid, 2, rows=32, cols=32, patient_name=name, patient_id=pid,
                                   accession=f"A-{pid}", study_uid=uid):
            orthanc.upload(path.read_bytes())
        uids[pid] = uid
    return uids


@pytest.fixture
def gateway(orthanc: OrthancStore, tmp_path: Path) -> Iterator[Callable[..., tuple[Gateway, list[dict[str, Any]]]]]:
    started: list[Gateway] = []

    def make(audit: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> tuple[Gateway, list[Any]]:
        events: list[dict[str, Any]] = []
        settings = replace(GatewaySettings(), port=free_port(), spool_dir=tmp_path / f"spool{len(started)}",
                           min_free_bytes=0, network_timeout=15.0, **overrides)
        gw = Gateway(settings, orthanc, audit=audit or events.append)
        gw.start()
        started.append(gw)
        return gw, events

    yield make
    for gw in started:
        gw.stop()


def _find_all(port: int, aet: str, out: Path) -> subprocess.CompletedProcess[str]:
    out.mkdir(exist_ok=True)
    return _dcmtk("findscu", "-S", "-aet", aet, "-aec", "FILMLESS", "-X", "-od", str(out),
                  "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", "-k", "PatientID=*",
                  "-k", "StudyInstanceUID", "127.0.0.1", str(port))


def test_disallowed_ae_can_neither_query_nor_retrieve(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str], tmp_path: Path
) -> None:
    ws_port = free_port()
    gw, events = gateway(allowed_peers=("WS01@127.0.0.1",), destinations=(f"WS01@127.0.0.1:{ws_port}",))
    port = str(gw.settings.port)
    denied = _find_all(gw.settings.port, "INTRUDER", tmp_path / "intruder")
    assert denied.returncode != 0
    assert not list((tmp_path / "intruder").iterdir())
    moved = _dcmtk("movescu", "-S", "-aet", "INTRUDER", "-aec", "FILMLESS", "-aem", "WS01",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive['SEC-1']}", "127.0.0.1", port)
    assert moved.returncode != 0
    got = tmp_path / "got"
    got.mkdir()
    fetched = _dcmtk("getscu", "-S", "-aet", "INTRUDER", "-aec", "FILMLESS", "-od", str(got),
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive['SEC-1']}", "127.0.0.1", port)
    assert fetched.returncode != 0
    assert not list(got.iterdir())
    assert events == []  # nothing was shown, so nothing to audit
    # The allowed AE, same address, is answered: the refusal was about who asked.
    assert _find_all(gw.settings.port, "WS01", tmp_path / "ws01").returncode == 0
    assert len(events) == 1


def test_list_everything_is_answered_only_to_allowed_aes_and_audited_with_every_patient(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str], tmp_path: Path
) -> None:
    gw, events = gateway(allowed_peers=("WS01@127.0.0.1",))
    assert _find_all(gw.settings.port, "OTHER", tmp_path / "other").returncode != 0
    assert events == []
    result = _find_all(gw.settings.port, "WS01", tmp_path / "all")
    assert result.returncode == 0, result.stderr
    shown = {(ds.PatientID, str(ds.PatientName)) for ds in map(pydicom.dcmread, (tmp_path / "all").glob("rsp*"))}
    assert {("SEC-1", "Trần^Thị Mai"), ("SEC-2", "Đặng^Văn Hùng")} <= shown
    (event,) = events
    assert event["action"] == "dicom.query" and event["calling_aet"] == "WS01"
    # Every patient shown is in the audit row (by ID: PN spellings such as a trailing '=' may differ).
    assert {p["PatientID"] for p in event["patients"]} == {pid for pid, _ in shown}
    assert event["results"] == len(list((tmp_path / "all").glob("rsp*")))


@contextmanager
def _storescp(aet: str, folder: Path) -> Iterator[int]:
    """A DCMTK storescp called ``aet`` writing into ``folder``; its port."""
    port = free_port()
    folder.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", aet, "-od", str(folder), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _dcmtk("echoscu", "-aec", aet, "127.0.0.1", str(port)).returncode == 0,
                 timeout=15, what="storescp")
        yield port
    finally:
        scp.terminate()
        scp.wait(10)


def _move_statuses(gw: Gateway, study_uid: str, destination: str) -> list[int]:
    """The statuses of a C-MOVE of one study from WS01 to ``destination``."""
    ae = AE(ae_title="WS01")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    answers = assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)
    statuses = [int(s.Status) for s, _ in answers]
    assoc.release()
    return statuses


def test_unknown_move_destination_is_refused_sends_nothing_and_is_audited(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str], tmp_path: Path
) -> None:
    received = tmp_path / "evil"
    with _storescp("EVIL", received):
        gw, events = gateway(destinations=(f"WS01@127.0.0.1:{free_port()}",))
        statuses = _move_statuses(gw, archive["SEC-1"], "EVIL")
    assert statuses == [0xA801]
    assert not list(received.iterdir())
    (event,) = events
    assert (event["action"], event["outcome"], event["destination"]) == ("dicom.retrieve", "refused", "EVIL")


def test_wildcard_retrieve_cannot_move_the_whole_archive(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str], tmp_path: Path
) -> None:
    ws_port = free_port()
    gw, events = gateway(destinations=(f"WS01@127.0.0.1:{ws_port}",))
    ae = AE(ae_title="WS01")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "*"
    answers = list(assoc.send_c_move(query, "WS01", StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    final = answers[-1][0]
    assert final.Status not in (0x0000, 0xFF00, 0xB000)  # a failure: nothing matched, nothing moved
    assert int(final.get("NumberOfCompletedSuboperations", 0)) == 0
    (event,) = events
    assert event["outcome"] == "refused"


def test_when_the_audit_cannot_be_written_nothing_is_shown(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str]
) -> None:
    def broken(event: dict[str, Any]) -> None:
        raise ConnectionError("EMR database down")

    gw, _ = gateway(audit=broken)
    ae = AE(ae_title="WS01")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "*"
    query.PatientID = ""
    answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    assert [(int(s.Status), ds) for s, ds in answers] == [(0xC001, None)]


@pytest.mark.parametrize("direct_max_mb", [16, 0], ids=["sent-directly", "sent-by-orthanc"])
def test_a_move_whose_audit_cannot_be_written_sends_nothing(
    gateway: Callable[..., tuple[Gateway, list[dict[str, Any]]]], archive: dict[str, str], orthanc: OrthancStore,
    tmp_path: Path, direct_max_mb: int
) -> None:
    """Sent from memory (direct_move.py, the audit written while the association is set up) or by
    Orthanc's C-STORE client (storage_push.py, no job before the audit row): nothing leaves."""
    jobs_before = set(orthanc._read_json("/jobs"))

    def broken(event: dict[str, Any]) -> None:
        raise ConnectionError("EMR database down")

    received = tmp_path / "ws01"
    with _storescp("WS01", received) as ws_port:
        gw, _ = gateway(audit=broken, destinations=(f"WS01@127.0.0.1:{ws_port}",),
                        move_direct_max_mb=direct_max_mb)
        statuses = _move_statuses(gw, archive["SEC-1"], "WS01")
    assert len(statuses) == 1 and statuses[0] >= 0xA000  # one failure, no Pending
    assert not list(received.iterdir())
    assert set(orthanc._read_json("/jobs")) <= jobs_before  # Orthanc was never asked to send
