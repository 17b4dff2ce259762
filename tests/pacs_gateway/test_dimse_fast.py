"""The per-instance DIMSE messages of a retrieve, encoded and decoded without pydicom (pacs_gateway/dimse_fast.py).

Each must be byte for byte what pynetdicom would send or read, so the
comparisons here are with pynetdicom's own encoding of the same primitive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode, split_dataset

from pacs_gateway.dimse_fast import (
    CommandError,
    c_store_rq,
    pending_rsp,
    read_c_store_rsp,
    read_file_meta,
)
from tests.corpus import make_ct_series

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _pynetdicom(message_class: type, primitive: object) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("originator", [("BENCHSCU", 1), ("ODD", 65535), (None, None)])
def test_c_store_rq_is_pynetdicoms(originator: tuple[str | None, int | None]) -> None:
    aet, msg_id = originator
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4.55"
    primitive.Priority = 2
    if aet is not None:
        primitive.MoveOriginatorApplicationEntityTitle = aet
        primitive.MoveOriginatorMessageID = msg_id
    primitive._dataset_path = (Path("unused"), 0)  # a data set follows
    ours = c_store_rq(message_id=7, sop_class=CT, sop_instance="1.2.3.4.55", priority=2, originator_aet=aet,
                      originator_id=msg_id)
    assert ours == _pynetdicom(C_STORE_RQ, primitive)


@pytest.mark.parametrize(("message_class", "primitive_class", "field"), [(C_MOVE_RSP, C_MOVE, 0x8021),
                                                                        (C_GET_RSP, C_GET, 0x8010)])
def test_pending_response_is_pynetdicoms(message_class: type, primitive_class: type, field: int) -> None:
    primitive = primitive_class()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = STUDY_MOVE
    primitive.Status = 0xFF00
    primitive.NumberOfRemainingSuboperations = 48
    primitive.NumberOfCompletedSuboperations = 1
    primitive.NumberOfFailedSuboperations = 1
    primitive.NumberOfWarningSuboperations = 0
    ours = pending_rsp(command_field=field, responding_to=3, sop_class=STUDY_MOVE, status=0xFF00, remaining=48,
                       completed=1, failed=1, warning=0)
    assert ours == _pynetdicom(message_class, primitive)


def test_values_a_command_cannot_hold_are_refused() -> None:
    with pytest.raises(CommandError):
        c_store_rq(message_id=1, sop_class=CT, sop_instance="1." * 40)
    with pytest.raises(CommandError):
        pending_rsp(command_field=0x8020, responding_to=1, sop_class=CT, status=0, remaining=0, completed=0,
                    failed=0, warning=0)


def test_plain_c_store_responses_are_read_and_others_left_to_pynetdicom() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = "1.2.3.45"
    rsp.Status = 0xB000
    read = read_c_store_rsp(_pynetdicom(C_STORE_RSP, rsp))
    assert read is not None
    assert (read.responding_to, read.sop_class, read.sop_instance, read.status) == (9, CT, "1.2.3.45", 0xB000)
    rsp.ErrorComment = "disk full"  # optional elements: pynetdicom decodes those
    assert read_c_store_rsp(_pynetdicom(C_STORE_RSP, rsp)) is None
    move = C_MOVE()
    move.MessageIDBeingRespondedTo = 1
    move.AffectedSOPClassUID = STUDY_MOVE
    move.Status = 0xFF00
    assert read_c_store_rsp(_pynetdicom(C_MOVE_RSP, move)) is None
    assert read_c_store_rsp(b"\x00\x00") is None


def test_file_meta_is_read_as_pydicom_reads_it(tmp_path: Path) -> None:
    for path in make_ct_series(tmp_path, 2, patient_name="Trần^Thị Meta", accession="META1"):
        meta, offset = split_dataset(path)
        ours = read_file_meta(path)
        assert (ours.sop_class, ours.sop_instance, ours.transfer_syntax, ours.data_set_offset) == (
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID, offset)
    odd = tmp_path / "no-preamble.dcm"
    odd.write_bytes(b"\x08\x00\x18\x00" + b"\x00" * 200)
    with pytest.raises(CommandError):
        read_file_meta(odd)
