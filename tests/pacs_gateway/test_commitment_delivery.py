"""Storage commitment fixes (issue 12 §4): class conflicts, released associations, no return address.

The modality is pynetdicom (DCMTK has no storage commitment SCU); gateway,
Orthanc and spool are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from pacs_gateway import Gateway
from pacs_gateway.commitment import CLASS_INSTANCE_CONFLICT
from storage import OrthancProcess, OrthancStore
from tests.corpus import make_ct_series
from tests.dicom_factory import commitment_request
from tests.helpers import wait_for

from .test_commitment import ReportListener, _action, _modality, _send_all


def _pairs(ds: Dataset, keyword: str) -> list[tuple[str, str, int]]:
    return [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID), int(i.get("FailureReason", 0)))
            for i in ds.get(keyword) or []]


def _collector() -> tuple[list[tuple[int, Dataset]], threading.Event, Any]:
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information))
        got.set()
        return 0x0000, None

    return reports, got, on_report


def test_one_instance_under_two_classes_fails_under_the_wrong_one_wherever_it_is(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(orthanc)
    reports, got, on_report = _collector()
    assoc = _modality(gw.settings.port, [(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        (uid,) = _send_all(assoc, make_ct_series(tmp_path / "ct", 1, rows=32, cols=32))
        wait_for(lambda: orthanc.find_instance(uid) is not None, timeout=30, what="instance in Orthanc")
        for order in ([(SecondaryCaptureImageStorage, uid), (CTImageStorage, uid)],
                      [(CTImageStorage, uid), (SecondaryCaptureImageStorage, uid)]):
            got.clear()
            assert _action(assoc, commitment_request(generate_uid(), order)) == 0
            assert got.wait(30), "no report"
            event_type, info = reports[-1]
            assert event_type == 2
            assert _pairs(info, "ReferencedSOPSequence") == [(CTImageStorage, uid, 0)]
            assert _pairs(info, "FailedSOPSequence") == [(SecondaryCaptureImageStorage, uid, CLASS_INSTANCE_CONFLICT)]
    finally:
        assoc.release()


def test_a_released_association_goes_straight_to_the_return_address(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    listener = ReportListener()
    address = listener.start()
    try:
        gw = make_gateway(orthanc, commitment_peers=(f"CT01@127.0.0.1:{address.port}",), network_timeout=20.0)
        for n in range(3):
            assoc = _modality(gw.settings.port)
            sent = _send_all(assoc, make_ct_series(tmp_path / f"ct{n}", 2, rows=32, cols=32))
            wait_for(lambda s=sent: all(orthanc.find_instance(u) for u in s), timeout=30,  # type: ignore[misc]
                     what="instances stored")
            started = time.monotonic()
            assert _action(assoc, commitment_request(generate_uid(), [(CTImageStorage, u) for u in sent])) == 0
            assoc.release()  # at once: the report is decided while the association goes away
            wait_for(lambda k=n + 1: len(listener.reports) == k, timeout=20, what=f"report {n + 1}")  # type: ignore[misc]
            # The old behaviour waited out the DIMSE timeout (20 s here) on the released association.
            assert time.monotonic() - started < 6.0
        assert all(event_type == 1 for event_type, _ in listener.reports)
    finally:
        listener.stop()


# The modality releases from another thread while its own handler still holds the report: on a loaded
# machine pynetdicom's state machine can then meet an A-RELEASE primitive in Sta13 in a reactor thread
# (InvalidEventError, logged by pynetdicom); what this test is about is asserted below all the same.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_modality_releasing_instead_of_answering_costs_no_dimse_timeout(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The report goes out on the requesting association, the modality does
    not answer it there but releases: the gateway must not sit out its DIMSE
    timeout (20 s here) before dialling the return address."""
    listener = ReportListener()
    address = listener.start()
    entered = threading.Event()

    def busy(event: evt.Event) -> tuple[int, None]:
        entered.set()
        time.sleep(8)  # a modality that only takes reports on its listener
        return 0x0000, None

    try:
        gw = make_gateway(orthanc, commitment_peers=(f"CT01@127.0.0.1:{address.port}",), network_timeout=20.0)
        assoc = _modality(gw.settings.port, [(evt.EVT_N_EVENT_REPORT, busy)])
        sent = _send_all(assoc, make_ct_series(tmp_path / "ct", 2, rows=32, cols=32))
        assert _action(assoc, commitment_request(generate_uid(), [(CTImageStorage, u) for u in sent])) == 0
        assert entered.wait(30), "the report was not tried on the requesting association"
        started = time.monotonic()
        threading.Thread(target=assoc.release, daemon=True).start()
        wait_for(lambda: listener.reports, timeout=20, what="the report on a new association")
        assert time.monotonic() - started < 5.0
        assert listener.reports[0][0] == 1
    finally:
        listener.stop()


def test_no_return_address_report_comes_on_the_next_association(
    fresh_orthanc: Callable[..., OrthancProcess], make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    proc = fresh_orthanc()
    store = proc.store()
    gw = make_gateway(store)  # no FILMLESS_GATEWAY_COMMITMENT_PEERS at all
    proc.stop()  # the instances stay in the spool: the report cannot be decided before the release
    assoc = _modality(gw.settings.port)
    sent = _send_all(assoc, make_ct_series(tmp_path / "ct", 2, rows=32, cols=32))
    transaction = generate_uid()
    assert _action(assoc, commitment_request(transaction, [(CTImageStorage, u) for u in sent])) == 0
    assoc.release()
    proc.start()
    wait_for(lambda: all(store.find_instance(u) for u in sent), timeout=60, what="instances forwarded")
    time.sleep(1.5)
    assert gw.stats.commitments == 1  # decided, owed, nobody to dial: kept, not lost
    reports, got, on_report = _collector()
    again = _modality(gw.settings.port, [(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        assert got.wait(20), "the report did not come on the modality's next association"
        # Released only once the gateway has the modality's answer: the handler hears the report before
        # pynetdicom sends its N-EVENT-REPORT-RSP, and a release in between dropped that answer (a test race).
        wait_for(lambda: gw.stats.commitments == 0, timeout=10, what="request settled")
    finally:
        again.release()
    event_type, info = reports[0]
    assert event_type == 1 and str(info.TransactionUID) == transaction


def test_no_return_address_and_never_back_is_set_aside_not_retried_forever(
    fresh_orthanc: Callable[..., OrthancProcess], make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    proc = fresh_orthanc()
    gw = make_gateway(proc.store(), commitment_wait=2.0)
    proc.stop()
    assoc = _modality(gw.settings.port)
    sent = _send_all(assoc, make_ct_series(tmp_path / "ct", 1, rows=32, cols=32))
    assert _action(assoc, commitment_request(generate_uid(), [(CTImageStorage, u) for u in sent])) == 0
    assoc.release()
    proc.start()  # decided once Orthanc answers; then owed to a modality that never comes back
    wait_for(lambda: gw.stats.commitments == 0, timeout=30, what="request set aside")
    assert len(list((gw.settings.spool_dir / "commitment").glob("*.undelivered"))) == 1
