"""The C-STORE fast path (pacs_gateway/fast_store.py): same bytes, same answers as pynetdicom's path.

Real clients (DCMTK storescu, pynetdicom) and, for the broken streams a
modality should never send, raw P-DATA-TF PDUs written on a real association.
"""

from __future__ import annotations

import json
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated module
    CTImageStorage,
    MRImageStorage,
    Verification,
)

from pacs_gateway import Gateway
from pacs_gateway.dimse_fast import c_store_rsp
from pacs_gateway.fast_store import encode_file_meta
from storage import UploadResult
from tests.dicom_factory import ct_instance
from tests.helpers import wait_for

from .conftest import storescu_as_modalities


class RecordingStore:
    """A Store that keeps what the forwarders upload (bytes per SOP Instance UID)."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def upload(self, data: bytes | object) -> UploadResult:
        raw = data if isinstance(data, bytes) else data.read()  # type: ignore[attr-defined]
        uid = str(pydicom.dcmread(BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)
        with self._lock:
            self.uploads[uid] = raw
        return UploadResult(instance_id=uid, study_id="", series_id="", patient_id="", already_stored=False)

    def set_study_metadata(self, study_id: str, key: str, value: str) -> None:
        pass


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "2.25." + "9" * 38])
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit])
def test_file_meta_is_what_pynetdicom_writes(sop_instance: str, syntax: str) -> None:
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(expected, create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=sop_instance,
                                                    transfer_syntax=syntax))
    ours = encode_file_meta(str(CTImageStorage), sop_instance, str(syntax), PYNETDICOM_IMPLEMENTATION_UID,
                            PYNETDICOM_IMPLEMENTATION_VERSION)
    assert ours == expected.getvalue()


@pytest.mark.parametrize("comment", [None, "Invalid SOP Instance UID", "odd"])
def test_store_response_is_what_pynetdicom_encodes(comment: str | None) -> None:
    ours = c_store_rsp(responding_to=7, sop_class=str(CTImageStorage), sop_instance="1.2.3.45",
                       status=0xC000 if comment else 0, error_comment=comment)
    ds = decode(BytesIO(ours), True, True)
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 7
    assert ds.CommandDataSetType == 0x0101
    assert ds.AffectedSOPClassUID == CTImageStorage
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.Status == (0xC000 if comment else 0)
    assert ds.get("ErrorComment") == comment
    assert ds.CommandGroupLength == len(ours) - 12
    # pydicom encodes the same data set to the same bytes.
    assert encode(ds, True, True) == ours


def _association_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "pacs_gateway.association" and r.getMessage().startswith('{"event": "association"')]


def test_fast_and_pynetdicom_paths_forward_the_same_bytes(
    make_gateway: Callable[..., Gateway], corpus: tuple[Path, list[Path]], caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole corpus (every transfer syntax and character set in it), once through each path,
    the second time in 4 KiB PDUs (a data set in many PDUs, many fragments per file)."""
    root, files = corpus
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    fast_store, slow_store = RecordingStore(), RecordingStore()
    fast = make_gateway(fast_store, fast_store=True)
    slow = make_gateway(slow_store, fast_store=False)
    for gw, extra in ((fast, ("--max-send-pdu", "4096")), (slow, ())):
        for result in storescu_as_modalities(gw.settings.port, files, *extra):
            assert result.returncode == 0, result.stderr[-3000:]
    wait_for(lambda: fast.forwarder.pending == 0 and slow.forwarder.pending == 0, timeout=60,
             what="forwarders to drain")
    assert fast.stats.received == slow.stats.received > 0
    assert fast.stats.quarantined == slow.stats.quarantined
    assert fast.stats.refused == slow.stats.refused == 0
    assert fast_store.uploads.keys() == slow_store.uploads.keys()
    different = [uid for uid in fast_store.uploads if fast_store.uploads[uid] != slow_store.uploads[uid]]
    assert not different, f"{len(different)} instance(s) differ between the paths"
    lines = _association_lines(caplog)
    assert sum(int(line["fast_path"]) for line in lines) == fast.stats.received + fast.stats.quarantined


def test_echo_and_stores_on_two_contexts_share_one_association(
    make_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    store = RecordingStore()
    gw = make_gateway(store)
    ae = AE(ae_title="CT01")
    for cx in (Verification, CTImageStorage, MRImageStorage):
        ae.add_requested_context(cx)
    ct = pydicom.dcmread(BytesIO(ct_instance(patient_id="FAST1", sop_uid=generate_uid())))
    mr = pydicom.dcmread(BytesIO(ct_instance(patient_id="FAST1", sop_uid=generate_uid())))
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.Modality = "MR"
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(ct).Status == 0
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(mr).Status == 0
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    wait_for(lambda: len(store.uploads) == 2, timeout=30, what="both instances forwarded")
    assert {str(ct.SOPInstanceUID), str(mr.SOPInstanceUID)} == set(store.uploads)
    wait_for(lambda: bool(_association_lines(caplog)), timeout=10, what="the association's log line")
    line = _association_lines(caplog)[-1]
    assert line["fast_path"] == 2 and line["echoes"] == 3 and line["instances"] == 2


def _raw_store_pdus(ds: pydicom.Dataset, context_id: int, message_id: int) -> tuple[bytes, bytes]:
    """(command set, data set) of a C-STORE-RQ for ``ds``, encoded as a modality would."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 0
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    message.command_set.CommandDataSetType = 0x0001
    command = encode(message.command_set, True, True)
    return command, encode(ds, True, True)


def _pdu(*pdvs: tuple[int, int, bytes]) -> bytes:
    items = b"".join(struct.pack(">LBB", 2 + len(data), cx, control) + data for cx, control, data in pdvs)
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


def _raw_association(gw: Gateway, responses: queue.Queue[Any] | None = None) -> tuple[Any, int, int]:
    """A pynetdicom association whose socket the test writes PDUs on; decoded responses go to ``responses``."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    ae.add_requested_context(MRImageStorage, ImplicitVRLittleEndian)
    handlers = [] if responses is None else [(evt.EVT_DIMSE_RECV, lambda event: responses.put(event.message))]
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS", evt_handlers=handlers)
    assert assoc.is_established
    ids = {str(cx.abstract_syntax): cx.context_id for cx in assoc.accepted_contexts}
    return assoc, ids[str(CTImageStorage)], ids[str(MRImageStorage)]


def test_command_and_data_in_one_pdu_a_split_command_and_a_class_mismatch(
    make_gateway: Callable[..., Gateway],
) -> None:
    """Legal PS3.8 streams: command and data in one PDU stays on the fast path, a command split
    over two PDUs goes to pynetdicom; a data set of another class than its command is refused."""
    store = RecordingStore()
    gw = make_gateway(store)
    received: queue.Queue[Any] = queue.Queue()
    assoc, ct_cx, _ = _raw_association(gw, received)
    answers: list[int] = []
    try:
        for n, how in enumerate(("one PDU", "split command", "wrong class"), start=1):
            ds = pydicom.dcmread(BytesIO(ct_instance(patient_id="FAST2", sop_uid=generate_uid())))
            command, data = _raw_store_pdus(ds, ct_cx, n)
            if how == "wrong class":
                ds.SOPClassUID = MRImageStorage  # the command says CT
                _, data = _raw_store_pdus(ds, ct_cx, n)
            if how == "split command":
                stream = _pdu((ct_cx, 0x01, command[:10])) + _pdu((ct_cx, 0x03, command[10:]), (ct_cx, 0x02, data))
            else:
                stream = _pdu((ct_cx, 0x03, command), (ct_cx, 0x00, data[:100]), (ct_cx, 0x02, data[100:]))
            assoc.dul.socket.socket.sendall(stream)  # type: ignore[attr-defined]
            response = received.get(timeout=15).command_set
            assert response.MessageIDBeingRespondedTo == n
            answers.append(int(response.Status))
    finally:
        assoc.release()
    assert answers == [0, 0, 0xA900]
    wait_for(lambda: len(store.uploads) == 2, timeout=30, what="both instances forwarded")
    assert gw.stats.quarantined == 1


def test_a_foreign_fragment_inside_a_data_set_aborts_and_acknowledges_nothing(
    make_gateway: Callable[..., Gateway],
) -> None:
    store = RecordingStore()
    gw = make_gateway(store)
    assoc, ct_cx, mr_cx = _raw_association(gw)
    ds = pydicom.dcmread(BytesIO(ct_instance(patient_id="FAST3", sop_uid=generate_uid())))
    command, data = _raw_store_pdus(ds, ct_cx, 1)
    sock = assoc.dul.socket.socket  # type: ignore[attr-defined]
    sock.sendall(_pdu((ct_cx, 0x03, command), (ct_cx, 0x00, data[:200])))
    sock.sendall(_pdu((mr_cx, 0x02, data[200:])))  # the rest on another context
    wait_for(lambda: not assoc.is_established, timeout=15, what="the gateway to abort the association")
    assert assoc.is_aborted
    time.sleep(0.5)
    assert gw.stats.received == 0 and not store.uploads
    assert not list(gw.spool.incoming.iterdir()), "the partial file was left behind"
    assert not list(gw.spool.ready.iterdir())


def test_a_connection_lost_mid_instance_leaves_nothing_behind(make_gateway: Callable[..., Gateway]) -> None:
    store = RecordingStore()
    gw = make_gateway(store)
    assoc, ct_cx, _ = _raw_association(gw)
    ds = pydicom.dcmread(BytesIO(ct_instance(patient_id="FAST4", sop_uid=generate_uid())))
    command, data = _raw_store_pdus(ds, ct_cx, 1)
    assoc.dul.socket.socket.sendall(_pdu((ct_cx, 0x03, command), (ct_cx, 0x00, data[:300])))  # type: ignore[attr-defined]
    wait_for(lambda: bool(list(gw.spool.incoming.iterdir())), timeout=10, what="the partial file")
    assoc.abort()
    wait_for(lambda: not list(gw.spool.incoming.iterdir()), timeout=10, what="the partial file to go")
    assert gw.stats.received == 0 and not store.uploads
