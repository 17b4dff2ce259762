"""direct_store.py against a real storage SCP (pynetdicom): negotiation, statuses, refusals, a peer that aborts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, evt
from pynetdicom.pdu import A_RELEASE_RQ

from pacs_gateway.dimse_fast import c_store_rq, file_meta_of
from pacs_gateway.direct_store import (
    DestinationUnreachable,
    DirectStoreAssociation,
    DirectStoreError,
    StoreRefused,
)
from tests.corpus import make_ct_series
from tests.helpers import free_port


@contextmanager
def _scp(on_store: Callable[[evt.Event], Any], syntaxes: list[str] | None = None,
         require_calling: list[str] | None = None,
         handlers: list[Any] | None = None) -> Iterator[tuple[int, list[Any]]]:
    received: list[Any] = []

    def handler(event: evt.Event) -> Any:
        received.append(event.dataset)
        return on_store(event)

    ae = AE(ae_title="WS01")
    ae.add_supported_context(CTImageStorage, syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    if require_calling:
        ae.require_calling_aet = require_calling
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, handler), *(handlers or [])])
    try:
        yield port, received
    finally:
        server.shutdown()


def _request(port: int, contexts: list[tuple[str, str]] | None = None) -> DirectStoreAssociation:
    return DirectStoreAssociation.request(
        "127.0.0.1", port, calling_aet="FILMLESS", called_aet="WS01",
        contexts=contexts or [(CTImageStorage, ExplicitVRLittleEndian), (MRImageStorage, ExplicitVRLittleEndian)],
        timeout=5)


def _store(assoc: DirectStoreAssociation, data: bytes, msg_id: int = 1) -> int:
    meta = file_meta_of(data)
    command = c_store_rq(message_id=msg_id, sop_class=meta.sop_class, sop_instance=meta.sop_instance,
                         originator_aet="WS01", originator_id=7)
    return assoc.store(meta.sop_class, meta.transfer_syntax, command, memoryview(data)[meta.data_set_offset:])


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    paths = make_ct_series(tmp_path_factory.mktemp("direct"), 3, rows=256, cols=256, patient_name="Lê^Văn Tám")
    return [p.read_bytes() for p in paths]


def test_data_sets_arrive_whole_in_pdus_of_the_peers_size(slices: list[bytes]) -> None:
    with _scp(lambda e: 0x0000) as (port, received):
        assoc = _request(port)
        # Only what the peer accepted: CT as explicit VR (MR is unknown to it).
        assert assoc.accepts(CTImageStorage, ExplicitVRLittleEndian)
        assert not assoc.accepts(MRImageStorage, ExplicitVRLittleEndian)
        assert 0 < assoc.max_pdu < len(slices[0])  # the 128 KiB data set goes in several PDUs
        assert [_store(assoc, data, n + 1) for n, data in enumerate(slices)] == [0, 0, 0]
        assoc.release()
        assert not assoc.is_established
    for data, ds in zip(slices, received, strict=True):
        assert ds.PixelData == pydicom.dcmread(BytesIO(data)).PixelData


def test_a_failure_status_with_an_error_comment_is_read(slices: list[bytes]) -> None:
    def refuse(event: evt.Event) -> Any:
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = "disk full"
        return status

    with _scp(refuse) as (port, _):
        assoc = _request(port)
        assert _store(assoc, slices[0]) == 0xA700
        assert _store(assoc, slices[1], 2) == 0xA700  # the association is still usable
        assoc.release()


def test_a_rejected_association_is_a_store_refused() -> None:
    with _scp(lambda e: 0, require_calling=["SOMEONE"]) as (port, _), pytest.raises(StoreRefused):
        _request(port)


def test_nobody_listening_or_nobody_answering_is_an_unreachable_destination() -> None:
    import socket

    with pytest.raises(DestinationUnreachable):
        _request(free_port())
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        with pytest.raises(DestinationUnreachable, match="did not answer in time"):
            DirectStoreAssociation.request("127.0.0.1", silent.getsockname()[1], calling_aet="FILMLESS",
                                           called_aet="WS01", contexts=[(CTImageStorage, ExplicitVRLittleEndian)],
                                           timeout=0.3)
    assert issubclass(DestinationUnreachable, DirectStoreError)


def test_a_peer_that_aborts_mid_store_fails_that_instance_and_ends_the_association(slices: list[bytes]) -> None:
    def abort(event: evt.Event) -> int:
        event.assoc.abort()
        return 0

    with _scp(abort) as (port, _):
        assoc = _request(port)
        with pytest.raises(DirectStoreError):
            _store(assoc, slices[0])
        assert not assoc.is_established
        assoc.release()  # nothing left to do, no error


def test_a_release_without_waiting_returns_before_the_peer_answers_and_still_ends_cleanly(
        slices: list[bytes]) -> None:
    """The C-MOVE's final response need not wait for the destination's A-RELEASE-RP."""
    answer = threading.Event()
    released, aborted = threading.Event(), threading.Event()

    def hold_release(event: evt.Event) -> None:
        if isinstance(event.pdu, A_RELEASE_RQ):
            answer.wait(10)  # the peer's reactor answers only once the test lets it

    handlers = [(evt.EVT_PDU_RECV, hold_release), (evt.EVT_RELEASED, lambda e: released.set()),
                (evt.EVT_ABORTED, lambda e: aborted.set())]
    with _scp(lambda e: 0x0000, handlers=handlers) as (port, received):
        assoc = _request(port)
        assert _store(assoc, slices[0]) == 0
        assoc.release(wait=False)  # returns although the peer has not answered
        assert not assoc.is_established and not released.is_set()
        answer.set()
        assert released.wait(5)  # a proper A-RELEASE, not an abort
        assert not aborted.is_set()
        assert len(received) == 1


def test_meanwhile_runs_once_the_request_is_sent() -> None:
    calls: list[bool] = []
    with _scp(lambda e: 0) as (port, _):
        assoc = DirectStoreAssociation.request(
            "127.0.0.1", port, calling_aet="FILMLESS", called_aet="WS01",
            contexts=[(CTImageStorage, ExplicitVRLittleEndian)], timeout=5, meanwhile=lambda: calls.append(True))
        assert calls == [True] and assoc.is_established
        assoc.release()

        def fail() -> None:
            raise RuntimeError("audit unavailable")

        with pytest.raises(RuntimeError, match="audit unavailable"):
            DirectStoreAssociation.request("127.0.0.1", port, calling_aet="FILMLESS", called_aet="WS01",
                                           contexts=[(CTImageStorage, ExplicitVRLittleEndian)], timeout=5,
                                           meanwhile=fail)
    # Nobody listening: nothing was sent, so nothing runs.
    with pytest.raises(DirectStoreError):
        DirectStoreAssociation.request("127.0.0.1", free_port(), calling_aet="FILMLESS", called_aet="WS01",
                                       contexts=[(CTImageStorage, ExplicitVRLittleEndian)], timeout=5,
                                       meanwhile=lambda: calls.append(False))
    assert calls == [True]
