"""Storage commitment: a modality may delete its copies only once Orthanc has them.

The modality is pynetdicom (DCMTK has no storage commitment SCU); the
gateway, Orthanc and the spool are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
)

from pacs_gateway import Gateway, ReturnAddress, spool_status
from pacs_gateway.commitment import CLASS_INSTANCE_CONFLICT, COMMITMENT_INSTANCE, NO_SUCH_OBJECT
from storage import OrthancProcess, OrthancStore
from tests.corpus import make_ct_series
from tests.dicom_factory import commitment_request
from tests.helpers import free_port, wait_for


class ReportListener:
    """The modality's side of the reverse association: takes N-EVENT-REPORTs."""

    def __init__(self, ae_title: str = "CT01") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.reports: list[tuple[int, Dataset]] = []
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._ae = ae
        self._server: Any = None

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        self.reports.append((int(event.event_type), event.event_information))
        return 0x0000, None

    def start(self) -> ReturnAddress:
        self._server = self._ae.start_server(("127.0.0.1", self.port), block=False,
                                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        return ReturnAddress(self.ae_title, "127.0.0.1", self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture
def listener() -> Iterator[ReportListener]:
    lst = ReportListener()
    yield lst
    lst.stop()


def _modality(port: int, handlers: list[Any] | None = None) -> Any:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS", evt_handlers=handlers or [])
    assert assoc.is_established
    return assoc


def _send_all(assoc: Any, paths: list[Path]) -> list[str]:
    uids = []
    for path in paths:
        ds = pydicom.dcmread(path)
        assert int(assoc.send_c_store(ds).Status) == 0
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _action(assoc: Any, request: Dataset | None, action_type: int = 1,
            instance: str = COMMITMENT_INSTANCE) -> int:
    status, _ = assoc.send_n_action(request, action_type, StorageCommitmentPushModel, instance)
    return int(status.Status)


def _items(ds: Dataset, keyword: str) -> dict[str, Dataset]:
    return {str(i.ReferencedSOPInstanceUID): i for i in ds.get(keyword) or []}


def test_report_on_the_open_association_tells_stored_from_missing(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(orthanc)
    paths = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32)
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information))
        got.set()
        return 0x0000, None

    assoc = _modality(gw.settings.port, [(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        sent = _send_all(assoc, paths)
        never_sent = generate_uid()
        transaction = generate_uid()
        refs = [(CTImageStorage, sent[0]), (CTImageStorage, sent[1]),
                (MRImageStorage, sent[2]),  # stored, but as CT: class/instance conflict
                (CTImageStorage, never_sent)]
        assert _action(assoc, commitment_request(transaction, refs)) == 0
        assert got.wait(30), "no N-EVENT-REPORT on the requesting association"
        # Release only once the gateway has our answer: releasing while the
        # response is still queued makes pynetdicom drop it (Evt9 in Sta7).
        wait_for(lambda: gw.stats.commitments == 0, timeout=15, what="request settled")
    finally:
        assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # failures exist
    assert str(info.TransactionUID) == transaction
    ok = _items(info, "ReferencedSOPSequence")
    failed = _items(info, "FailedSOPSequence")
    assert set(ok) == {sent[0], sent[1]}
    assert all(str(i.RetrieveAETitle) == "FILMLESS" for i in ok.values())
    assert {uid: int(i.FailureReason) for uid, i in failed.items()} == {
        sent[2]: CLASS_INSTANCE_CONFLICT,
        never_sent: NO_SUCH_OBJECT,
    }
    # What was reported committed is really in Orthanc.
    assert all(orthanc.find_instance(uid) is not None for uid in ok)
    wait_for(lambda: gw.stats.commitments == 0, timeout=15, what="request settled")


def test_no_success_before_orthanc_has_them_even_across_a_restart(
    fresh_orthanc: Callable[..., OrthancProcess], make_gateway: Callable[..., Gateway], tmp_path: Path,
    listener: ReportListener,
) -> None:
    proc = fresh_orthanc()
    store = proc.store()
    address = listener.start()
    spool = tmp_path / "spool"
    peers = (f"{address.ae_title}@{address.host}:{address.port}",)
    gw = make_gateway(store, spool_dir=spool, commitment_peers=peers)
    proc.stop()  # Orthanc down: the gateway acknowledges into its spool only
    paths = make_ct_series(tmp_path / "ct", 4, rows=32, cols=32)
    assoc = _modality(gw.settings.port)
    sent = _send_all(assoc, paths)
    transaction = generate_uid()
    assert _action(assoc, commitment_request(transaction, [(CTImageStorage, uid) for uid in sent])) == 0
    assoc.release()  # the report must now come on a new association
    time.sleep(1.5)
    assert listener.reports == [], "reported before the instances were in Orthanc"
    assert gw.stats.commitments == 1
    assert spool_status(gw.settings).commitments_pending == 1
    gw.stop()
    # A new gateway process on the same spool still owes the report.
    gw2 = make_gateway(store, spool_dir=spool, commitment_peers=peers)
    time.sleep(1.0)
    assert listener.reports == []
    proc.start()
    wait_for(lambda: listener.reports, timeout=60, what="the report after Orthanc came back")
    event_type, info = listener.reports[0]
    assert event_type == 1, info.get("FailedSOPSequence")  # all committed
    assert str(info.TransactionUID) == transaction
    assert set(_items(info, "ReferencedSOPSequence")) == set(sent)
    assert "FailedSOPSequence" not in info
    assert all(store.find_instance(uid) is not None for uid in sent)
    wait_for(lambda: gw2.stats.commitments == 0, timeout=10, what="request settled")
    assert len(listener.reports) == 1


def test_an_unreachable_modality_gets_its_report_when_it_listens_again(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path, listener: ReportListener
) -> None:
    peers = (f"{listener.ae_title}@127.0.0.1:{listener.port}",)
    gw = make_gateway(orthanc, commitment_peers=peers)
    assoc = _modality(gw.settings.port)
    sent = _send_all(assoc, make_ct_series(tmp_path / "ct", 2, rows=32, cols=32))
    assert _action(assoc, commitment_request(generate_uid(), [(CTImageStorage, uid) for uid in sent])) == 0
    assoc.release()
    time.sleep(2.0)  # decided, but nobody listens yet: retried with back-off
    assert gw.stats.commitments == 1
    listener.start()
    wait_for(lambda: listener.reports, timeout=30, what="the retried report")
    assert listener.reports[0][0] == 1
    wait_for(lambda: gw.stats.commitments == 0, timeout=15, what="request settled")


def test_malformed_requests_get_a_clear_status_and_nothing_is_kept(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway]
) -> None:
    gw = make_gateway(orthanc)
    assoc = _modality(gw.settings.port)
    try:
        no_transaction = commitment_request(generate_uid(), [(CTImageStorage, generate_uid())])
        del no_transaction.TransactionUID
        assert _action(assoc, no_transaction) == 0x0120  # missing attribute
        assert _action(assoc, commitment_request(generate_uid(), [])) == 0x0120
        assert _action(assoc, commitment_request("not-a-uid", [(CTImageStorage, generate_uid())])) == 0x0106
        assert _action(assoc, commitment_request(generate_uid(), [(CTImageStorage, "1..2")])) == 0x0106
        one = commitment_request(generate_uid(), [(CTImageStorage, generate_uid())])
        assert _action(assoc, one, action_type=2) == 0x0123  # no such action
        assert _action(assoc, one, instance=generate_uid()) == 0x0117  # not the well-known instance
    finally:
        assoc.release()
    assert gw.stats.commitments == 0


@pytest.mark.parametrize("entry", ["CT01", "CT01@host", "CT01@host:port", "@h:104", "CT01@h:0", "CT01@h:70000"])
def test_return_address_must_be_aet_host_port(entry: str) -> None:
    with pytest.raises(ValueError):
        ReturnAddress.parse(entry)


def test_return_address_forms() -> None:
    assert ReturnAddress.parse("CT01@10.1.2.3:104") == ReturnAddress("CT01", "10.1.2.3", 104)
    assert ReturnAddress.parse(" MR@[fe80::1]:11112 ") == ReturnAddress("MR", "fe80::1", 11112)
