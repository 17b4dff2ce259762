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

import logging
import mmap
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.uid import RE_VALID_UID, UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from .exceptions import NotUnderstood, SopClassMismatch

__all__ = ["InstanceHeader", "inspect_dataset", "inspect_file", "check_structure"]

log = logging.getLogger("pacs_gateway.validate")

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
        self._implicit_sq: dict[int, bool] = {}

    def need(self, pos: int, n: int, end: int | None = None) -> None:
        limit = self.end if end is None else end
        if pos + n > limit:
            where = "data set" if limit == self.end else "sequence item"
            raise NotUnderstood(
                f"{where} truncated at byte {pos} (needs {n} more bytes, has {limit - pos})"
            )

    def is_sequence(self, tag: int, vr: bytes, implicit: bool) -> bool:
        """Whether a defined-length value holds sequence items that must be walked too."""
        if not implicit:
            return vr == b"SQ"
        if tag >> 16 & 1:  # private: the VR is unknown in implicit VR
            return False
        known = self._implicit_sq.get(tag)
        if known is None:
            try:
                known = dictionary_VR(tag) == "SQ"
            except KeyError:
                known = False
            self._implicit_sq[tag] = known
        return known

    def dataset(self, pos: int, depth: int, implicit: bool, in_item: bool, end: int | None = None) -> int:
        """Walk elements from ``pos`` up to ``end``; return the position after the data set."""
        if depth > _MAX_DEPTH:
            raise NotUnderstood("sequences nested too deeply")
        buf = self.buf
        end = self.end if end is None else end
        while pos < end:
            self.need(pos, 8, end)
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
                    self.need(pos, 12, end)
                    (length,) = self.u32(buf, pos + 8)
                    pos += 12
                else:
                    (length,) = self.u16(buf, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                # UN of undefined length holds implicit VR little endian items (PS3.5 6.2.2);
                # OB/OW of undefined length is encapsulated pixel data (fragments, not data sets).
                walk = implicit or vr in (b"SQ", b"UN")
                pos = self.items(pos, depth + 1, implicit or vr == b"UN", walk, end)
            else:
                self.need(pos, length, end)
                if depth == 0 and tag in _UID_TAGS and length <= 64:
                    self.uids[tag] = bytes(buf[pos : pos + length])
                if length and self.is_sequence(tag, vr, implicit):
                    # A defined-length sequence: every item and element in it must fit in it
                    # (a truncated RT Plan claimed more than its sequence held).
                    self.defined_items(pos, pos + length, depth + 1, implicit)
                pos += length
        if in_item:
            raise NotUnderstood("data set truncated inside an item of undefined length")
        if pos != end:
            raise NotUnderstood(f"element overruns its sequence item at byte {pos}")
        return pos

    def defined_items(self, pos: int, end: int, depth: int, implicit: bool) -> None:
        """Items of a defined-length sequence, each bounded by the sequence."""
        buf = self.buf
        while pos < end:
            self.need(pos, 8, end)
            group, elem = self.tag(buf, pos)
            tag = group << 16 | elem
            (length,) = self.u32(buf, pos + 4)
            pos += 8
            if tag != _ITEM:
                raise NotUnderstood(f"expected a sequence item at byte {pos - 8}, found ({group:04X},{elem:04X})")
            if length == _UNDEFINED:
                pos = self.dataset(pos, depth, implicit, in_item=True, end=end)
            else:
                self.need(pos, length, end)
                self.dataset(pos, depth, implicit, in_item=False, end=pos + length)
                pos += length

    def items(self, pos: int, depth: int, implicit: bool, walk: bool = True, end: int | None = None) -> int:
        """Items of an undefined-length sequence (``walk``) or encapsulated pixel data."""
        buf = self.buf
        end = self.end if end is None else end
        while True:
            self.need(pos, 8, end)
            group, elem = self.tag(buf, pos)
            tag = group << 16 | elem
            (length,) = self.u32(buf, pos + 4)
            pos += 8
            if tag == _SEQ_DELIM:
                return pos
            if tag != _ITEM:
                raise NotUnderstood(f"expected a sequence item at byte {pos - 8}, found ({group:04X},{elem:04X})")
            if length == _UNDEFINED:
                pos = self.dataset(pos, depth, implicit, in_item=True, end=end)
            else:
                self.need(pos, length, end)
                if walk and length:
                    self.dataset(pos, depth, implicit, in_item=False, end=pos + length)
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

    Raises :class:`NotUnderstood` (truncated anywhere, nested sequences
    included; not DICOM; SOP Instance UID missing, unstorable, or differing
    from the command's AffectedSOPInstanceUID) or :class:`SopClassMismatch`
    (SOP Class UID missing or contradicting the command, Study or Series
    Instance UID missing or unstorable). UIDs that merely break the UID
    syntax are accepted with a warning, as Orthanc stores them.
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
        if transfer_syntax == DeflatedExplicitVRLittleEndian or size - offset < 8:
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


_VALID_UID = re.compile(RE_VALID_UID)


def _valid_uid(value: str) -> bool:
    """pydicom's ``UID(value).is_valid``, without building (and validating) a UID object per check."""
    return len(value) <= 64 and _VALID_UID.match(value) is not None


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("ascii", "replace").rstrip("\x00 ").strip()


def _storable(keyword: str, value: str) -> str | None:
    """Why a UID value cannot be stored as one identifier, or ``None``.

    Orthanc stores UIDs that break the UID syntax (real archives hold
    64-character hex strings); what it cannot index is an empty, overlong
    or multi-valued one.
    """
    if not value:
        return f"{keyword} is missing"
    if len(value) > 64:
        return f"{keyword} {value[:70]!r} is longer than 64 characters"
    if "\\" in value or not value.isprintable():
        return f"{keyword} {value!r} is not a single printable identifier"
    return None


def _identify(
    uids: dict[int, bytes], affected_sop_class: str | None, affected_sop_instance: str | None
) -> InstanceHeader:
    sop_class = _text(uids.get(_SOP_CLASS))
    sop_instance = _text(uids.get(_SOP_INSTANCE))
    study = _text(uids.get(_STUDY))
    series = _text(uids.get(_SERIES))
    why = _storable("SOP Instance UID (0008,0018)", sop_instance)
    if why is not None:
        raise NotUnderstood(why)
    if affected_sop_instance and sop_instance != str(affected_sop_instance).strip():
        raise NotUnderstood(
            f"SOP Instance UID {sop_instance!r} differs from the command's {str(affected_sop_instance)!r}"
        )
    if not sop_class:
        raise SopClassMismatch("SOP Class UID (0008,0016) is missing")
    if not _valid_uid(sop_class):
        raise SopClassMismatch(f"SOP Class UID {sop_class!r} is not a valid UID")
    if affected_sop_class and sop_class != str(affected_sop_class).strip():
        raise SopClassMismatch(f"SOP Class UID {sop_class!r} differs from the command's {str(affected_sop_class)!r}")
    # Type 1 in every storage IOD, and Orthanc refuses instances without them:
    # better the modality hears it now than the instance vanish into quarantine.
    for keyword, value in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
        why = _storable(keyword, value)
        if why is not None:
            raise SopClassMismatch(why)
    for keyword, value in (("SOPInstanceUID", sop_instance), ("StudyInstanceUID", study),
                           ("SeriesInstanceUID", series)):
        if not _valid_uid(value):
            log.warning("%s %r breaks the UID syntax; stored as it is (unique values still identify)",
                        keyword, value)
    return InstanceHeader(sop_class, sop_instance)
