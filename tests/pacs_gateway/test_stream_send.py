"""Retrieve sends stored files as ready-made P-DATA PDUs (pacs_gateway/stream_send.py).

The framing must be exactly pynetdicom's (one PDV per PDU, the last flagged),
and a workstation with an odd, small maximum PDU length must receive every
byte of an instance larger than one write batch, over a real C-GET.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from pacs_gateway import Gateway
from pacs_gateway.stream_send import BATCH, pdu_parts, pdus_for, send_parts
from storage import OrthancStore
from tests.corpus import make_ct_series

from .conftest import c_get_study


def _pynetdicom_framing(data: bytes, context_id: int, fragment: int) -> bytes:
    out = b""
    for start in range(0, len(data), fragment):
        chunk = data[start : start + fragment]
        flag = b"\x02" if start + fragment >= len(data) else b"\x00"
        primitive = P_DATA()
        primitive.presentation_data_value_list.append((context_id, flag + chunk))
        out += P_DATA_TF(primitive).encode()
    return out


@pytest.mark.parametrize("size", [1, 16378, 16379, 3 * 16378 + 5])
def test_framing_is_pynetdicoms(size: int) -> None:
    data = os.urandom(size)
    assert bytes(pdus_for(memoryview(data), 5, 16378, last=True)) == _pynetdicom_framing(data, 5, 16378)
    # Not the last batch: no PDU may say "last fragment".
    assert set(_control_headers(bytes(pdus_for(memoryview(data), 5, 16378, last=False)))) == {0x00}


@pytest.mark.parametrize("size", [1, 16378, 16379, 3 * 16378 + 5])
def test_gathered_parts_are_the_same_bytes(size: int) -> None:
    data = os.urandom(size)
    for last in (True, False):
        parts = pdu_parts(memoryview(data), 5, 16378, last=last)
        assert b"".join(parts) == bytes(pdus_for(memoryview(data), 5, 16378, last=last))


def test_gathered_write_survives_partial_sends() -> None:
    # A small socket buffer and a slow reader force sendmsg() to stop mid-part.
    data = os.urandom(3 * 1024 * 1024 + 17)
    parts = pdu_parts(memoryview(data), 1, 16378, last=True)
    expected = b"".join(parts)
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    received = bytearray()

    def read() -> None:
        while len(received) < len(expected):
            chunk = right.recv(7000)
            if not chunk:
                break
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_parts(left, list(parts))
        reader.join(10)
    finally:
        left.close()
        right.close()
    assert bytes(received) == expected


def _control_headers(stream: bytes) -> list[int]:
    flags, pos = [], 0
    while pos < len(stream):
        assert stream[pos] == 0x04
        length = int.from_bytes(stream[pos + 2 : pos + 6], "big")
        flags.append(stream[pos + 11])
        pos += 6 + length
    return flags


def test_c_get_of_an_instance_larger_than_a_batch_arrives_byte_for_byte(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    # 3 frames of 512x512x2 bytes: 1.5 MiB, more than one 1 MiB write batch.
    files = make_ct_series(tmp_path / "big", 1, frames=3, patient_name="Lê^Văn Lớn", patient_id="STREAM-1",
                           accession="STREAM-ACC")
    assert files[0].stat().st_size > BATCH
    orthanc.upload(files[0].read_bytes())
    sent = pydicom.dcmread(files[0])
    gw = make_gateway(orthanc)
    received: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        # The gateway in this process makes pynetdicom stream received data sets to files.
        path = getattr(event.request, "_dataset_path", None)
        received.append(_data_set(Path(path).read_bytes()) if path else event.encoded_dataset(include_meta=False))
        return 0x0000

    ae = AE(ae_title="WS05")
    # An odd maximum PDU length, far below the batch size.
    ae.maximum_pdu_size = 12345
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [str(sent.file_meta.TransferSyntaxUID)])
    answers = c_get_study(ae, gw.settings.port, sent.StudyInstanceUID, on_store, CTImageStorage)
    assert answers[-1][0].Status == 0x0000
    # Orthanc keeps the uploaded file as it is: the workstation got its data set, every byte.
    assert len(received) == 1 and len(received[0]) > BATCH
    assert received[0] == _data_set(files[0].read_bytes())


def _data_set(part10: bytes) -> bytes:
    """The data set of a Part-10 file: after the preamble, "DICM" and the meta group."""
    assert part10[128:132] == b"DICM"
    return part10[144 + int.from_bytes(part10[140:144], "little"):]
