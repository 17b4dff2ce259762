"""The few DIMSE command sets a C-MOVE/C-GET sends per instance, encoded without pydicom.

Why: for each instance a retrieve sends a C-STORE-RQ command to the
workstation and a Pending C-MOVE/C-GET response to the requestor.
pynetdicom builds each as a pydicom Dataset, encodes it once to learn the
group length and again to send it, and reads the file's meta information
with pydicom to find where its data set starts: about a millisecond of
Python per instance, on the thread that waits for the workstation, longer
than Orthanc takes to send a CT slice (issue 12 §1).

A command set is always implicit VR little endian (PS3.7 6.3.1); the
elements here are fixed-size numbers and UIDs/AE titles, so the bytes are
written directly, in the layout pynetdicom produces (tests compare the two
byte for byte). Anything else still goes through pynetdicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CommandError", "FileMeta", "StoreResponse", "c_store_rq", "c_store_rsp", "file_meta_of", "pending_rsp",
    "read_c_store_rsp", "read_command", "read_file_meta",
]

_ELEMENT = struct.Struct("<HHL")  # group, element, value length
_US = struct.Struct("<H")
_UL = struct.Struct("<L")

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RSP = 0x8010
C_MOVE_RSP = 0x8021
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001  # pynetdicom's value; any but 0x0101 means "present"


class CommandError(ValueError):
    """A value that cannot be written into a command set (the caller falls back to pynetdicom)."""


def _text(value: str, pad: bytes, limit: int) -> bytes:
    raw = value.encode("ascii")
    if len(raw) > limit or b"\\" in raw:
        raise CommandError(f"not a valid command value: {value!r}")
    return raw + pad if len(raw) % 2 else raw


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    """Group 0000 elements (element number, value bytes), sorted, with the group length first."""
    body = b"".join(_ELEMENT.pack(0, tag, len(value)) + value for tag, value in elements)
    return _ELEMENT.pack(0, 0, 4) + _UL.pack(len(body)) + body


def c_store_rq(*, message_id: int, sop_class: str, sop_instance: str, priority: int = 2,
               originator_aet: str | None = None, originator_id: int | None = None) -> bytes:
    """The encoded command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1)."""
    elements = [
        (0x0002, _text(sop_class, b"\0", 64)),
        (0x0100, _US.pack(C_STORE_RQ)),
        (0x0110, _US.pack(message_id)),
        (0x0700, _US.pack(priority)),
        (0x0800, _US.pack(DATA_SET_PRESENT)),
        (0x1000, _text(sop_instance, b"\0", 64)),
    ]
    if originator_aet:
        elements.append((0x1030, _text(originator_aet.strip(), b" ", 16)))
    if originator_id is not None:
        elements.append((0x1031, _US.pack(originator_id)))
    return _command(elements)


def c_store_rsp(*, responding_to: int, sop_class: str, sop_instance: str, status: int,
                error_comment: str | None = None) -> bytes:
    """The encoded command set of a C-STORE-RSP (PS3.7 9.3.1.2); the comment is made a valid LO
    (no backslash, at most 64 characters, ASCII) rather than refused: it is the modality's only hint."""
    elements = [
        (0x0002, _text(sop_class, b"\0", 64)),
        (0x0100, _US.pack(C_STORE_RSP)),
        (0x0120, _US.pack(responding_to)),
        (0x0800, _US.pack(NO_DATA_SET)),
        (0x0900, _US.pack(status)),
    ]
    if error_comment:
        comment = error_comment.replace("\\", "/")[:64].encode("ascii", "replace").decode("ascii")
        elements.append((0x0902, _text(comment, b" ", 64)))
    elements.append((0x1000, _text(sop_instance, b"\0", 64)))
    return _command(elements)


def pending_rsp(*, command_field: int, responding_to: int, sop_class: str, status: int, remaining: int,
                completed: int, failed: int, warning: int) -> bytes:
    """The encoded command set of a C-MOVE or C-GET response without identifier (PS3.7 9.3.3.2, 9.3.4.2)."""
    if command_field not in (C_MOVE_RSP, C_GET_RSP):
        raise CommandError(f"not a C-MOVE/C-GET response: 0x{command_field:04X}")
    elements = [
        (0x0002, _text(sop_class, b"\0", 64)),
        (0x0100, _US.pack(command_field)),
        (0x0120, _US.pack(responding_to)),
        (0x0800, _US.pack(NO_DATA_SET)),
        (0x0900, _US.pack(status)),
        (0x1020, _US.pack(remaining)),
        (0x1021, _US.pack(completed)),
        (0x1022, _US.pack(failed)),
        (0x1023, _US.pack(warning)),
    ]
    return _command(elements)


@dataclass(frozen=True)
class FileMeta:
    """What sending a Part-10 file as stored needs from its meta information (PS3.10 7.1)."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    data_set_offset: int


def read_file_meta(path: Path) -> FileMeta:
    """Read the File Meta Information of ``path``: its UIDs and where the data set starts.

    Raises :class:`CommandError` when the file has no standard preamble and
    meta group (the caller then lets pynetdicom/pydicom read it).
    """
    with open(path, "rb") as fh:
        length = _meta_length(fh.read(132 + 12), path)
        meta = fh.read(length)
    return _parse_meta(meta, length, path)


def file_meta_of(data: bytes | memoryview) -> FileMeta:
    """:func:`read_file_meta` of a Part-10 file held in memory."""
    length = _meta_length(bytes(data[:144]), "the file")
    return _parse_meta(bytes(data[144 : 144 + length]), length, "the file")


def _meta_length(head: bytes, name: object) -> int:
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        raise CommandError(f"{name} has no standard File Meta Information")
    (group_length,) = _UL.unpack_from(head, 140)
    if group_length > 1 << 16:
        raise CommandError(f"{name}: implausible meta group length {group_length}")
    return int(group_length)


def _parse_meta(meta: bytes, group_length: int, name: object) -> FileMeta:
    if len(meta) != group_length:
        raise CommandError(f"{name}: meta group cut short")
    values: dict[int, str] = {}
    pos = 0
    while pos + 8 <= len(meta):
        group, element = struct.unpack_from("<HH", meta, pos)
        vr = meta[pos + 4 : pos + 6]
        if group != 0x0002:
            raise CommandError(f"{name}: element ({group:04X},{element:04X}) in the meta group")
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (length,) = _UL.unpack_from(meta, pos + 8)
            start = pos + 12
        else:
            (length,) = _US.unpack_from(meta, pos + 6)
            start = pos + 8
        if element in (0x0002, 0x0003, 0x0010):
            values[element] = meta[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    if pos != len(meta) or any(k not in values for k in (0x0002, 0x0003, 0x0010)):
        raise CommandError(f"{name}: incomplete File Meta Information")
    return FileMeta(values[0x0002], values[0x0003], values[0x0010], 144 + group_length)


@dataclass(frozen=True)
class StoreResponse:
    """The elements of a plain C-STORE-RSP (PS3.7 9.3.1.2): no error comment or offending element."""

    responding_to: int
    sop_class: str
    sop_instance: str
    status: int


# The elements a plain C-STORE-RSP has; any other (Error Comment, Offending
# Element, Error ID...) sends the message through pynetdicom.
_RSP_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000})


def read_command(command: bytes | memoryview) -> dict[int, bytes] | None:
    """The elements of an implicit VR little endian command set by element number; None when it is
    not one (cut short, another group, an element twice)."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = _ELEMENT.unpack_from(command, pos)
        pos += 8
        if group != 0 or pos + length > end or element in values:
            return None
        values[element] = bytes(command[pos : pos + length])
        pos += length
    return values


def read_c_store_rsp(command: bytes | memoryview) -> StoreResponse | None:
    """Decode ``command`` if it is a plain C-STORE-RSP command set; None for anything else."""
    values = read_command(command)
    if values is None or not values.keys() <= _RSP_ELEMENTS:
        return None
    end = len(command)
    try:
        if (_US.unpack(values[0x0100])[0] != C_STORE_RSP or _US.unpack(values[0x0800])[0] != NO_DATA_SET
                or _UL.unpack(values[0x0000])[0] != end - 12):
            return None
        return StoreResponse(
            responding_to=_US.unpack(values[0x0120])[0],
            sop_class=values.get(0x0002, b"").rstrip(b"\0 ").decode("ascii"),
            sop_instance=values.get(0x1000, b"").rstrip(b"\0 ").decode("ascii"),
            status=_US.unpack(values[0x0900])[0],
        )
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
