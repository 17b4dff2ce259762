"""Orthanc sending instances to a DICOM peer itself (storage.push), against a real Orthanc."""

from __future__ import annotations

import time

import pytest
import requests
from pynetdicom import AE, StoragePresentationContexts, evt

from storage import OrthancProcess, OrthancStore, PushJob, PushProgress
from storage.push import peer_name, sent_lower_bound
from tests.dicom_factory import ct_instance
from tests.helpers import free_port, wait_for


def test_the_sent_count_never_overstates_what_orthanc_sent() -> None:
    """Orthanc says a rounded percentage; the count read from it is a lower bound, exact up to 100 instances."""
    for total in range(1, 301):
        for done in range(total):
            rounded = int(100 * done / total + 0.5)
            truncated = int(100 * done / total)
            assert sent_lower_bound(rounded, total) <= done
            assert sent_lower_bound(truncated, total) <= done
            if total <= 100:
                assert sent_lower_bound(rounded, total) == done
    assert sent_lower_bound(100, 7) == 6  # the last one counts only when the job says "done"


class _Peer:
    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.received: list[tuple[str, str, str, int]] = []
        self.delay = delay
        ae = AE(ae_title="PEER01")
        ae.supported_contexts = StoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: evt.Event) -> int:
        time.sleep(self.delay)
        rq = event.request
        self.received.append((rq.AffectedSOPInstanceUID, event.assoc.requestor.ae_title,
                              str(rq.MoveOriginatorApplicationEntityTitle or ""), int(rq.MoveOriginatorMessageID or 0)))
        return 0x0000


def _wait(job: PushJob, timeout: float = 30) -> PushProgress:
    """The job's progress once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.progress()
        if progress.state in ("failed", "done"):
            return progress
        time.sleep(0.01)
    raise AssertionError("the job did not end")


@pytest.fixture
def three(orthanc: OrthancStore) -> list[tuple[str, str]]:
    """Three stored CT slices: (Orthanc ID, SOP Instance UID)."""
    out = []
    for _ in range(3):
        data = ct_instance(patient_id="PUSH-1")
        result = orthanc.upload(data)
        out.append((result.instance_id, orthanc.instance_tags(result.instance_id)["SOPInstanceUID"]))
    return out


def test_orthanc_sends_in_the_given_order_as_the_local_ae_naming_the_originator(
    orthanc: OrthancStore, three: list[tuple[str, str]]
) -> None:
    peer = _Peer()
    try:
        order = list(reversed(three))
        job = orthanc.push_instances([i for i, _ in order], ae_title="PEER01", host="127.0.0.1", port=peer.port,
                                     local_aet="FILMLESS", originator_aet="WS07", originator_id=42)
        progress = _wait(job)
    finally:
        peer.server.shutdown()
    assert progress == PushProgress("done", 3, 3)
    assert peer.received == [(uid, "FILMLESS", "WS07", 42) for _, uid in order]


def test_a_peer_that_cannot_be_reached_fails_the_job_with_nothing_sent(
    orthanc: OrthancStore, three: list[tuple[str, str]]
) -> None:
    job = orthanc.push_instances([i for i, _ in three], ae_title="NOBODY", host="127.0.0.1", port=free_port(),
                                 local_aet="FILMLESS")
    progress = _wait(job)
    assert progress.state == "failed" and progress.sent == 0 and progress.error


def test_cancel_stops_the_job(orthanc: OrthancStore, three: list[tuple[str, str]]) -> None:
    peer = _Peer(delay=0.5)
    try:
        job = orthanc.push_instances([i for i, _ in three], ae_title="PEER01", host="127.0.0.1", port=peer.port,
                                     local_aet="FILMLESS")
        wait_for(lambda: len(peer.received) >= 1, timeout=10, what="first image")
        job.cancel()
        progress = _wait(job)
        time.sleep(1.2)
        assert progress.state == "failed"  # Orthanc ends a cancelled job as a failure
        assert len(peer.received) < 3
        job.cancel()  # an ended job: nothing to do, no error
    finally:
        peer.server.shutdown()


def test_a_peer_orthanc_forgot_is_registered_again(
    orthanc_process: OrthancProcess, orthanc: OrthancStore, three: list[tuple[str, str]]
) -> None:
    """Peers are registered in Orthanc's memory: after a restart it no longer knows them."""
    peer = _Peer()
    try:
        ids = [three[0][0]]
        _wait(orthanc.push_instances(ids, ae_title="PEER01", host="127.0.0.1", port=peer.port, local_aet="FILMLESS"))
        creds = orthanc_process.credentials
        name = peer_name("PEER01", "127.0.0.1", peer.port)
        gone = requests.delete(f"{orthanc.url}/modalities/{name}", auth=(creds.username, creds.password), timeout=10)
        assert gone.status_code == 200
        progress = _wait(orthanc.push_instances(ids, ae_title="PEER01", host="127.0.0.1", port=peer.port,
                                                local_aet="FILMLESS"))
    finally:
        peer.server.shutdown()
    assert progress.state == "done" and len(peer.received) == 2


