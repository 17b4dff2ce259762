"""Cheap checks on a received data set, done before the instance is acknowledged.

Why our own structural walk: pydicom reads values into memory and, on a
truncated stream, warns and returns what it got. Here we only need to know
that every element's length fits in the bytes received (so a truncated or
random stream is refused, not acknowledged) and to read the handful of UIDs
that identify the instance. The walk skips values, picking up the four
top-level UIDs on its way, so no DICOM library parses anything before the
acknowledgement, and pixel data is never touched.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from .exceptions import NotUnderstood, SopClassMismatch

__all__ = ["InstanceHeader", "inspect_dataset", "inspect_file", "check_structure"]

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 64
_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E
_UID_TAGS = frozenset({_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES})


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str


class _Walker:
    def __init__(self, buf: memoryview, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.implicit = implicit
        e = "<" if little else ">"
        self.u16 = struct.Struct(e + "H").unpack_from
        self.u32 = struct.Struct(e + "L").unpack_from
        self.tag = struct.Struct(e + "HH").unpack_from
        self.uids: dict[int, bytes] = {}

    def need(self, pos: int, n: int) -> None:
        if pos + n > self.end:
            raise NotUnderstood(f"data set truncated at byte {pos} (needs {n} more bytes, has {self.end - pos})")

    def dataset(self, pos: int, depth: int, implicit: bool, in_item: bool) -> int:
        """Walk elements from ``pos``; return the position after the data set."""
        if depth > _MAX_DEPTH:
            raise NotUnderstood("sequences nested too deeply")
        buf = self.buf
        while pos < self.end:
            self.need(pos, 8)
            group, elem = self.tag(buf, pos)
            tag = group << 16 | elem
            if tag == _ITEM_DELIM:
                if not in_item:
                    raise NotUnderstood(f"unexpected item delimiter at byte {pos}")
                return pos + 8
            if implicit or group == 0xFFFE:
                (length,) = self.u32(buf, pos + 4)
                vr = b""
                pos += 8
            else:
                vr = bytes(buf[pos + 4 : pos + 6])
                if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                    raise NotUnderstood(f"invalid value representation {vr!r} at byte {pos + 4}: not DICOM")
                if vr in _LONG_VRS:
                    self.need(pos, 12)
                    (length,) = self.u32(buf, pos + 8)
                    pos += 12
                else:
                    (length,) = self.u16(buf, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                # UN of undefined length holds implicit VR little endian items (PS3.5 6.2.2).
                pos = self.items(pos, depth + 1, implicit or vr == b"UN")
            else:
                self.need(pos, length)
                if depth == 0 and tag in _UID_TAGS and length <= 64:
                    self.uids[tag] = bytes(buf[pos : pos + length])
                pos += length
        if in_item:
            raise NotUnderstood("data set truncated inside an item of undefined length")
        return pos

    def items(self, pos: int, depth: int, implicit: bool) -> int:
        """Items of an undefined-length sequence or encapsulated pixel data."""
        buf = self.buf
        while True:
            self.need(pos, 8)
            group, elem = self.tag(buf, pos)
            tag = group << 16 | elem
            (length,) = self.u32(buf, pos + 4)
            pos += 8
            if tag == _SEQ_DELIM:
                return pos
            if tag != _ITEM:
                raise NotUnderstood(f"expected a sequence item at byte {pos - 8}, found ({group:04X},{elem:04X})")
            if length == _UNDEFINED:
                pos = self.dataset(pos, depth, implicit, in_item=True)
            else:
                self.need(pos, length)
                pos += length


def check_structure(stream: bytes | memoryview, transfer_syntax: str) -> dict[int, bytes]:
    """Raise :class:`NotUnderstood` unless every element fits; return the top-level UIDs found.

    For deflated transfer syntax the stream is inflated first.
    """
    ts = UID(transfer_syntax)
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            stream = inflater.decompress(stream) + inflater.flush()
        except zlib.error as exc:
            raise NotUnderstood(f"deflated data set does not inflate: {exc}") from None
        if not inflater.eof:
            raise NotUnderstood("deflated data set is truncated")
    if len(stream) < 8:
        raise NotUnderstood(f"data set of {len(stream)} bytes is too short to be DICOM")
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    walker = _Walker(memoryview(stream), implicit, little)
    try:
        walker.dataset(0, 0, implicit, in_item=False)
    finally:
        walker.buf.release()
    return walker.uids


def inspect_dataset(
    stream: bytes | memoryview,
    transfer_syntax: str,
    affected_sop_class: str | None,
    affected_sop_instance: str | None,
) -> InstanceHeader:
    """Validate a received data set and return its identifying UIDs.

    Raises :class:`NotUnderstood` (truncated, not DICOM, missing or invalid
    SOP Instance UID, or one that differs from the command's
    AffectedSOPInstanceUID) or :class:`SopClassMismatch` (SOP Class UID
    missing or contradicting the command, Study or Series Instance UID
    missing or invalid).
    """
    uids = check_structure(stream, transfer_syntax)
    return _identify(uids, affected_sop_class, affected_sop_instance)


def _meta_end(fp: BinaryIO) -> int:
    """Offset of the data set in a Part-10 file (after preamble and meta group)."""
    head = fp.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise NotUnderstood("received file has no Part-10 header")
    (group_length,) = struct.unpack_from("<L", head, 140)
    return 144 + group_length


def inspect_file(
    path: Path,
    transfer_syntax: str,
    affected_sop_class: str | None,
    affected_sop_instance: str | None,
) -> InstanceHeader:
    """:func:`inspect_dataset` for a data set streamed to disk, without loading it.

    The structural walk runs over a read-only memory map (it touches only the
    pages holding element headers, so pixel data is never read), and the
    UIDs are read from the file itself. Deflated data sets are inflated in
    memory: they are rare and small.
    """
    with open(path, "rb") as fp:
        offset = _meta_end(fp)
        size = os.fstat(fp.fileno()).st_size
        if UID(transfer_syntax) == DeflatedExplicitVRLittleEndian or size - offset < 8:
            fp.seek(offset)
            return inspect_dataset(fp.read(), transfer_syntax, affected_sop_class, affected_sop_instance)
        error = None
        uids: dict[int, bytes] = {}
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            data = view[offset:]
            try:
                uids = check_structure(data, transfer_syntax)
            except NotUnderstood as exc:
                # Keep only the text: the traceback's frames hold views of
                # the map, which could then not be closed.
                error = exc.reason
            finally:
                data.release()
                view.release()
        if error is not None:
            raise NotUnderstood(error)
        return _identify(uids, affected_sop_class, affected_sop_instance)


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("ascii", "replace").rstrip("\x00 ").strip()


def _identify(
    uids: dict[int, bytes], affected_sop_class: str | None, affected_sop_instance: str | None
) -> InstanceHeader:
    sop_class = _text(uids.get(_SOP_CLASS))
    sop_instance = _text(uids.get(_SOP_INSTANCE))
    study = _text(uids.get(_STUDY))
    series = _text(uids.get(_SERIES))
    if not sop_instance:
        raise NotUnderstood("SOP Instance UID (0008,0018) is missing")
    if not UID(sop_instance).is_valid:
        raise NotUnderstood(f"SOP Instance UID {sop_instance!r} is not a valid UID")
    if affected_sop_instance and sop_instance != str(affected_sop_instance).strip():
        raise NotUnderstood(
            f"SOP Instance UID {sop_instance!r} differs from the command's {str(affected_sop_instance)!r}"
        )
    if not sop_class:
        raise SopClassMismatch("SOP Class UID (0008,0016) is missing")
    if not UID(sop_class).is_valid:
        raise SopClassMismatch(f"SOP Class UID {sop_class!r} is not a valid UID")
    if affected_sop_class and sop_class != str(affected_sop_class).strip():
        raise SopClassMismatch(f"SOP Class UID {sop_class!r} differs from the command's {str(affected_sop_class)!r}")
    # Type 1 in every storage IOD, and Orthanc refuses instances without them:
    # better the modality hears it now than the instance vanish into quarantine.
    for keyword, value in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
        if not value:
            raise SopClassMismatch(f"{keyword} is missing")
        if not UID(value).is_valid:
            raise SopClassMismatch(f"{keyword} {value!r} is not a valid UID")
    return InstanceHeader(sop_class, sop_instance)
