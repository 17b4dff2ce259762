"""Make an instance what Orthanc should store: UTF-8 text and the EMR's identity.

Runs in the forwarders, off the acknowledgement path. Instances that need
nothing (the usual case: ASCII-only or already ``ISO_IR 192``, identity
unchanged) are returned byte for byte. That decision is first tried by a
structural walk of the header (:func:`_quick_scan`, no DICOM library):
pydicom parses only files that need a rewrite, or that the walk is not
sure about (big endian, deflated, VR switches, odd values).

Character sets: modalities send ``ISO_IR 100`` (Latin-1), other single- and
multi-byte sets (``ISO 2022 IR 87`` with its escape sequences), or no
Specific Character Set at all while writing UTF-8 or Latin-1 anyway, and
some write UTF-8 under an ``ISO_IR 100`` label or Latin-1 under
``ISO_IR 192``. Orthanc would then mangle Vietnamese names, so the encoding
is decided once per data set from all its raw text values (nested ones
included): valid UTF-8 wins over a missing or single-byte label (a Latin-1
byte sequence is almost never valid UTF-8), text that is not UTF-8 under a
UTF-8 label or none is read as Latin-1, anything else as labelled. Every
SH/LO/ST/LT/UT/UC/PN value is then re-encoded to UTF-8 and the instance
labelled ``ISO_IR 192``. When the label was wrong or missing the original
bytes are logged (hex) with the instance UID.

Query identifiers (C-FIND, C-MOVE, C-GET) get the same decision through
:func:`decode_identifier`: a workstation typing ``Trần*`` on a UTF-8
terminal sends UTF-8 with no Specific Character Set, which pydicom would
read as Latin-1 (``Tráº§n*``) and match nothing.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.charset import decode_element
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import VR

__all__ = ["IdentityProvider", "Normalised", "NormalisedFile", "decode_identifier", "normalise", "normalise_file",
           "IDENTITY_KEYS"]

log = logging.getLogger(__name__)

IdentityProvider = Callable[[str, str], Mapping[str, str] | None]

# Tags the EMR may coerce, in the order they are applied.
IDENTITY_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_UTF8 = "ISO_IR 192"


@dataclass
class Normalised:
    data: bytes
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _charset(ds: Dataset) -> list[str]:
    raw = ds.get("SpecificCharacterSet")
    if raw is None:
        return []
    values = list(raw) if isinstance(raw, pydicom.multival.MultiValue) else [raw]
    return [str(v).strip() for v in values]


def _needs_decoding(value: bytes) -> bool:
    # ISO 2022 text is 7-bit but switches sets with ESC sequences.
    return not value.isascii() or b"\x1b" in value


def _text_vr(tag: int, elem: RawDataElement) -> str | None:
    vr = elem.VR
    if vr is None:  # implicit VR: only the dictionary knows
        if tag >> 16 & 1:
            return None
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    return str(vr)


def _walk_text(ds: Dataset, visit: Callable[[Dataset, int, str, bytes], None], depth: int = 0) -> None:
    """Call ``visit(dataset, tag, vr, raw)`` for every raw text value needing decoding, nested ones included.

    Only sequences are converted on the way: text elements stay raw bytes
    until the encoding of the whole data set has been decided.
    """
    for tag, elem in list(ds._dict.items()):
        if isinstance(elem, RawDataElement):
            vr = _text_vr(tag, elem)
            if vr == "SQ" or (vr in (None, "UN") and elem.length == 0xFFFFFFFF):
                try:
                    seq = ds[tag].value
                except Exception:  # noqa: BLE001 - an unreadable private SQ is left alone
                    continue
                if depth < 16 and isinstance(seq, pydicom.sequence.Sequence):
                    for item in seq:
                        _walk_text(item, visit, depth + 1)
            elif vr in _TEXT_VRS and elem.value and _needs_decoding(bytes(elem.value)):
                visit(ds, tag, vr, bytes(elem.value))
        elif elem.VR == "SQ" and depth < 16:
            for item in elem.value or []:
                _walk_text(item, visit, depth + 1)


def _non_ascii_text(ds: Dataset, found: list[bytes]) -> None:
    _walk_text(ds, lambda _ds, _tag, _vr, raw: found.append(raw))


def _is_utf8(values: list[bytes]) -> bool:
    try:
        for v in values:
            v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Declared sets whose bytes are one character each: decoding never fails, so
# text written in UTF-8 under such a label shows as mojibake ("Chá»¥p").
_MULTI_BYTE = ("ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58", "ISO_IR 192", "GB18030",
               "GBK")


def _source_charset(declared: list[str], values: list[bytes]) -> tuple[list[str], str | None]:
    """The character set the text is really written in, decided once per data set.

    Returns the DICOM terms to decode with and, when that differs from the
    label, why (for the log).
    """
    if not values:
        return declared, None
    utf8 = _is_utf8(values)
    if not any(declared):
        return ([_UTF8], "no character set, bytes are UTF-8") if utf8 else (
            ["ISO_IR 100"], "no character set, bytes are not UTF-8: read as Latin-1")
    if declared == [_UTF8]:
        return (declared, None) if utf8 else (["ISO_IR 100"], "labelled UTF-8 but not UTF-8: read as Latin-1")
    single_byte = not any(term in _MULTI_BYTE for term in declared)
    if single_byte and utf8:
        return [_UTF8], f"labelled {'/'.join(declared)} but written in UTF-8"
    return declared, None


def _decode_to_utf8(ds: Dataset, terms: list[str]) -> None:
    """Decode every text value needing it (nested ones too) with ``terms``, in place.

    The values become ``str`` elements, which pydicom's writer encodes with
    the data set's (new) character set; the caller labels it ``ISO_IR 192``.
    """

    def visit(item: Dataset, tag: int, vr: str, raw: bytes) -> None:
        elem = DataElement(tag, vr, raw)
        decode_element(elem, terms)
        value = elem.value
        if isinstance(value, (list, pydicom.multival.MultiValue)):
            decoded: str | list[str] = [str(v) for v in value]
        else:
            decoded = str(value)
        item._dict[BaseTag(tag)] = DataElement(tag, vr, decoded)

    _walk_text(ds, visit)


def decode_identifier(ds: Dataset) -> str | None:
    """Decode a query identifier's text with the character set stored instances would get, in place.

    ``ds`` is an identifier as pynetdicom decodes it (text elements still
    raw). The set is decided by :func:`_source_charset` from all its raw text
    values, as for a stored instance. When that differs from the label (UTF-8
    sent with no Specific Character Set or under a single-byte one, text that
    is not UTF-8 under none or under ``ISO_IR 192``), every text value needing
    it is decoded with the set decided and the identifier is labelled
    ``ISO_IR 192``; the reason is returned for the caller's log. ``None``:
    the label was right (or there is no non-ASCII text) and nothing changed.
    """
    non_ascii: list[bytes] = []
    _non_ascii_text(ds, non_ascii)  # before anything is read: reading would decode with the label's set
    if not non_ascii:
        return None
    source, why = _source_charset(_charset(ds), non_ascii)
    if why is None:
        return None
    _decode_to_utf8(ds, source)
    ds.SpecificCharacterSet = _UTF8
    return why


@dataclass
class _Plan:
    charset: list[str]
    non_ascii: list[bytes]
    coerce: dict[str, str]
    source: list[str] = field(default_factory=list)
    why: str | None = None

    @property
    def needed(self) -> bool:
        return bool(self.coerce) or (bool(self.non_ascii) and (self.source != [_UTF8] or self.charset != [_UTF8]))


def _plan(header: Dataset, identity: IdentityProvider | None) -> _Plan:
    # Collect the raw text first: reading any element below would decode it
    # with pydicom's default character set.
    charset = _charset(header)
    non_ascii: list[bytes] = []
    _non_ascii_text(header, non_ascii)
    source, why = _source_charset(charset, non_ascii)
    wanted = None
    if identity is not None:
        wanted = identity(str(header.get("AccessionNumber", "") or ""), str(header.get("StudyInstanceUID", "") or ""))
    coerce: dict[str, str] = {}
    for key in IDENTITY_KEYS:
        if wanted and wanted.get(key) is not None:
            new = str(wanted[key])
            old = header.get(key)
            if str(old if old is not None else "") != new:
                coerce[key] = new
    return _Plan(charset, non_ascii, coerce, source, why)


def _apply(ds: Dataset, plan: _Plan) -> list[str]:
    """Apply ``plan`` to ``ds``, a data set read afresh (no element decoded yet)."""
    changes: list[str] = []
    needs_utf8 = plan.non_ascii or any(not v.isascii() for v in plan.coerce.values())
    if plan.non_ascii and (plan.source != [_UTF8] or plan.charset != [_UTF8]):
        declared = "\\".join(plan.charset) or "none"
        changes.append(f"charset {declared} (read as {'/'.join(plan.source)}) -> {_UTF8}")
        if plan.why:
            # The original bytes stay in the log: a wrong guess can be undone.
            log.warning(
                "instance %s: %s; original text bytes: %s",
                ds.get("SOPInstanceUID", "?"), plan.why, " | ".join(v[:80].hex(" ") for v in plan.non_ascii[:8]),
            )
        _decode_to_utf8(ds, plan.source)
        ds.SpecificCharacterSet = _UTF8
    elif needs_utf8 and plan.charset != [_UTF8]:
        changes.append(f"charset {'/'.join(plan.charset) or 'none'} -> {_UTF8}")
        ds.SpecificCharacterSet = _UTF8
    for key, new in plan.coerce.items():
        old = ds.get(key)
        setattr(ds, key, new)
        changes.append(f"{key} {str(old if old is not None else '')!r} -> {new!r}")
    return changes


# -- the quick decision ---------------------------------------------------------
#
# pydicom's dcmread of a header costs about a millisecond of GIL time per
# instance, taken from the threads receiving C-STOREs. Most instances need
# nothing, and deciding that needs only: every text value's bytes, the
# Specific Character Set, and the handful of values the identity lookup and
# the coercion compare. The walk below reads exactly those over a memory map.
# It answers "unchanged" only where the pydicom path would find the very same
# values (it walks at least every data set the pydicom path walks); anything
# it is not sure about returns ``None`` and the pydicom path decides.

_CHARSET_TAG = 0x00080005
_ACCESSION_TAG = 0x00080050
_STUDY_UID_TAG = 0x0020000D
_IDENTITY_TAGS = {"PatientID": 0x00100020, "IssuerOfPatientID": 0x00100021, "PatientName": 0x00100010,
                  "PatientBirthDate": 0x00100030, "PatientSex": 0x00100040}
# The VR each of them has in the dictionary: pydicom reads them as strings with that VR (or UN).
_QUICK_VRS = {_CHARSET_TAG: b"CS", _ACCESSION_TAG: b"SH", _STUDY_UID_TAG: b"UI", 0x00100020: b"LO",
              0x00100021: b"LO", 0x00100010: b"PN", 0x00100030: b"DA", 0x00100040: b"CS"}
_QUICK_TAGS = frozenset(_QUICK_VRS)
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where stop_before_pixels stops
_KNOWN_VRS = frozenset(v.value.encode() for v in VR if len(v.value) == 2)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_TEXT_VR_BYTES = frozenset(v.encode() for v in _TEXT_VRS)
_ITEM, _ITEM_DELIM, _SEQ_DELIM, _UNDEFINED = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD, 0xFFFFFFFF
_TAG = struct.Struct("<HH").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<L").unpack_from
_IMPLICIT_VR: dict[int, bytes] = {}


class _Unsure(Exception):
    """The quick walk cannot vouch for what pydicom would read: let pydicom decide."""


@dataclass
class _Scan:
    top: dict[int, bytes] = field(default_factory=dict)  # raw values of _QUICK_TAGS, top level only
    text: list[bytes] = field(default_factory=list)  # raw text values needing decoding, at any depth
    pixels: bool = False  # the walk stopped at the top-level pixel data (nothing after it is read)


def _implicit_vr(tag: int) -> bytes:
    """The VR the pydicom path gives an implicit VR element (b"" when it has none)."""
    vr = _IMPLICIT_VR.get(tag)
    if vr is None:
        if tag >> 16 & 1:
            vr = b""
        else:
            try:
                vr = str(dictionary_VR(tag)).encode()
            except KeyError:
                vr = b""
        if len(_IMPLICIT_VR) < 4096:
            _IMPLICIT_VR[tag] = vr
    return vr


class _QuickWalker:
    def __init__(self, buf: bytes | mmap.mmap, scan: _Scan) -> None:
        self.buf = buf
        self.scan = scan

    def need(self, pos: int, n: int, end: int) -> None:
        if pos + n > end:
            raise _Unsure("truncated")

    def dataset(self, pos: int, end: int, implicit: bool, depth: int, in_item: bool) -> int:
        if depth > 64:
            raise _Unsure("nested too deeply")
        buf = self.buf
        first = True
        while pos < end:
            self.need(pos, 8, end)
            group, elem = _TAG(buf, pos)
            tag = group << 16 | elem
            if tag == _ITEM_DELIM:
                if not in_item:
                    raise _Unsure("stray item delimiter")
                return pos + 8
            if depth == 0 and tag in _PIXEL_TAGS:
                self.scan.pixels = True
                return end
            raw_vr = buf[pos + 4 : pos + 6]
            if first and implicit and 0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B:
                raise _Unsure("explicit VR where implicit was expected")  # pydicom would switch
            first = False
            if group == 0xFFFE:
                raise _Unsure("item tag inside a data set")
            if implicit:
                (length,) = _U32(buf, pos + 4)
                vr = _implicit_vr(tag)
                pos += 8
            else:
                vr = raw_vr
                if vr not in _KNOWN_VRS:
                    raise _Unsure("unknown or implicit VR in an explicit VR data set")
                if vr in _LONG_VRS:
                    self.need(pos, 12, end)
                    (length,) = _U32(buf, pos + 8)
                    pos += 12
                else:
                    (length,) = _U16(buf, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                if vr in (b"OB", b"OW") or (implicit and vr in (b"OB or OW", b"US or OW", b"US or SS or OW")):
                    pos = self.items(pos, end, implicit, depth + 1, walk=False)  # encapsulated fragments
                else:
                    # SQ, UN (implicit VR little endian items, PS3.5 6.2.2), anything implicit.
                    pos = self.items(pos, end, implicit or vr == b"UN", depth + 1, walk=True)
                continue
            self.need(pos, length, end)
            if depth == 0 and tag in _QUICK_TAGS:
                if vr not in (_QUICK_VRS[tag], b"UN"):
                    raise _Unsure("an identity or character set element with an unexpected VR")
                self.scan.top[tag] = bytes(buf[pos : pos + length])
            if vr == b"SQ":
                if length:
                    self.defined_items(pos, pos + length, implicit, depth + 1)
            elif vr in _TEXT_VR_BYTES and length:
                value = bytes(buf[pos : pos + length])
                if _needs_decoding(value):
                    self.scan.text.append(value)
            pos += length
        if in_item:
            raise _Unsure("item of undefined length not closed")
        if pos != end:
            raise _Unsure("element overruns its container")
        return pos

    def defined_items(self, pos: int, end: int, implicit: bool, depth: int) -> None:
        buf = self.buf
        while pos < end:
            self.need(pos, 8, end)
            group, elem = _TAG(buf, pos)
            (length,) = _U32(buf, pos + 4)
            pos += 8
            if group << 16 | elem != _ITEM:
                raise _Unsure("not a sequence item")
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, implicit, depth, in_item=True)
            else:
                self.need(pos, length, end)
                self.dataset(pos, pos + length, implicit, depth, in_item=False)
                pos += length

    def items(self, pos: int, end: int, implicit: bool, depth: int, walk: bool) -> int:
        buf = self.buf
        while True:
            self.need(pos, 8, end)
            group, elem = _TAG(buf, pos)
            tag = group << 16 | elem
            (length,) = _U32(buf, pos + 4)
            pos += 8
            if tag == _SEQ_DELIM:
                return pos
            if tag != _ITEM:
                raise _Unsure("not a sequence item")
            if length == _UNDEFINED:
                if not walk:
                    raise _Unsure("fragment of undefined length")
                pos = self.dataset(pos, end, implicit, depth, in_item=True)
            else:
                self.need(pos, length, end)
                if walk and length:
                    self.dataset(pos, pos + length, implicit, depth, in_item=False)
                pos += length


def _quick_scan(buf: bytes | mmap.mmap) -> _Scan | None:
    """Text values and identity values of a Part-10 file, or ``None`` when not sure."""
    end = len(buf)
    if end < 144 or buf[128:132] != b"DICM":
        return None
    pos = 132
    syntax = b""
    try:
        while True:  # the meta group, explicit VR little endian, up to the first other group
            if pos + 8 > end:
                return None
            group, elem = _TAG(buf, pos)
            if group != 0x0002:
                break
            vr = buf[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                (length,) = _U32(buf, pos + 8)
                pos += 12
            else:
                (length,) = _U16(buf, pos + 6)
                pos += 8
            if length == _UNDEFINED or pos + length > end:
                return None
            if elem == 0x0010:
                syntax = bytes(buf[pos : pos + length])
            pos += length
        ts = UID(syntax.rstrip(b"\x00 ").decode("ascii", "replace"))
        if not ts.is_transfer_syntax or not ts.is_little_endian or ts.is_deflated:
            return None
        scan = _Scan()
        _QuickWalker(buf, scan).dataset(pos, end, ts.is_implicit_VR, 0, in_item=False)
    except (_Unsure, struct.error, IndexError):
        return None
    return scan


def _plain(raw: bytes | None, utf8: bool) -> str | None:
    """The ``str`` pydicom gives a single value (ASCII, or UTF-8 in an ``ISO_IR 192``
    data set), or ``None`` when it is not that simple."""
    if raw is None:
        return ""
    value = raw.rstrip(b"\x00 ")
    if not value:
        return ""
    if value[:1] == b" " or b"\\" in value or (not utf8 and not value.isascii()):
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _asked_once(identity: IdentityProvider | None) -> IdentityProvider | None:
    """``identity``, asked at most once per study within one normalisation (the quick
    decision and the pydicom path ask the same question when a rewrite is needed)."""
    if identity is None:
        return None
    answers: dict[tuple[str, str], Mapping[str, str] | None] = {}

    def ask(accession: str, study_uid: str) -> Mapping[str, str] | None:
        key = (accession, study_uid)
        if key not in answers:
            answers[key] = identity(accession, study_uid)
        return answers[key]

    return ask


def _quick_unchanged(scan: _Scan, identity: IdentityProvider | None) -> bool:
    """True only when the pydicom path's plan would be "nothing to change"."""
    utf8 = scan.top.get(_CHARSET_TAG, b"").rstrip(b"\x00 ").lstrip(b" ") == _UTF8.encode()
    if scan.text and not (utf8 and _is_utf8(scan.text)):
        return False
    if identity is None:
        return True
    accession = _plain(scan.top.get(_ACCESSION_TAG), utf8)
    study = _plain(scan.top.get(_STUDY_UID_TAG), False)
    if accession is None or study is None:
        return False
    wanted = identity(accession, study)
    if not wanted:
        return True
    for key, tag in _IDENTITY_TAGS.items():
        new = wanted.get(key)
        if new is not None and _plain(scan.top.get(tag), utf8) != str(new):
            return False
    return True


# The header of a slice is a few KiB: walked from one read of this much first.
_HEAD_READ = 64 * 1024


def _unchanged_file(path: Path, identity: IdentityProvider | None) -> bool:
    """:func:`_quick_unchanged` for a file: the walk reads its start, or a read-only memory map
    of it when the header goes on past that start (pixel data stays unread either way).

    Why not always the map: mapping and unmapping a file for every forwarded
    slice cost page faults and, with other threads on other cores, a TLB
    shootdown on each unmap, more than copying 64 KiB.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size < 144:
            return False
        head = f.read(_HEAD_READ)
        scan = _quick_scan(head)
        if len(head) < size and (scan is None or not scan.pixels):
            # Unsure, or the data set seemed to end where the read did: walk the whole file.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                scan = _quick_scan(mapped)
    return scan is not None and _quick_unchanged(scan, identity)


def normalise(data: bytes, identity: IdentityProvider | None = None) -> Normalised:
    """Return the instance to upload: the same bytes, or a rewritten copy.

    ``identity(accession_number, study_instance_uid)`` returns the EMR's
    values for :data:`IDENTITY_KEYS` (they win over the modality's) or
    ``None``. Its exceptions propagate: the caller retries later rather than
    upload an instance under the wrong patient.
    """
    identity = _asked_once(identity)
    scan = _quick_scan(data)
    if scan is not None and _quick_unchanged(scan, identity):
        return Normalised(data)
    header = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    plan = _plan(header, identity)
    if not plan.needed:
        return Normalised(data)
    ds = pydicom.dcmread(BytesIO(data))
    changes = _apply(ds, plan)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return Normalised(out.getvalue(), changes)


@dataclass
class NormalisedFile:
    path: Path  # the original file when nothing changed, else ``target``
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def normalise_file(path: Path, target: Path, identity: IdentityProvider | None = None) -> NormalisedFile:
    """:func:`normalise` for a spooled file, in memory proportional to its header.

    Only the elements before Pixel Data are read and, when something must
    change, re-encoded into ``target``; the pixel data (and anything after
    it) is copied across byte for byte. A deflated data set has no such
    boundary and is rewritten in memory.
    """
    identity = _asked_once(identity)
    if _unchanged_file(path, identity):
        return NormalisedFile(path)
    with open(path, "rb") as src:
        header = pydicom.dcmread(src, stop_before_pixels=True)
        pixels_at = src.tell()
        plan = _plan(header, identity)
        if not plan.needed:
            return NormalisedFile(path)
        # _plan read some elements (decoding them with the label's set): start afresh.
        src.seek(0)
        header = pydicom.dcmread(src, stop_before_pixels=True)
        if header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            src.seek(0)
            result = normalise(src.read(), identity=lambda _a, _s: plan.coerce)
            target.write_bytes(result.data)
            return NormalisedFile(target, result.changes)
        changes = _apply(header, plan)
        try:
            with open(target, "xb") as out:
                header.save_as(out, enforce_file_format=True)
                src.seek(pixels_at)
                shutil.copyfileobj(src, out, 1024 * 1024)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return NormalisedFile(target, changes)
