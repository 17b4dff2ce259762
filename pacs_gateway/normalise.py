"""Make an instance what Orthanc should store: UTF-8 text and the EMR's identity.

Runs in the forwarders, off the acknowledgement path. Instances that need
nothing (the usual case: ASCII-only or already ``ISO_IR 192``, identity
unchanged) are returned byte for byte, so the common path costs one header
parse.

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
"""

from __future__ import annotations

import logging
import shutil
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
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = ["IdentityProvider", "Normalised", "NormalisedFile", "normalise", "normalise_file", "IDENTITY_KEYS"]

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


def normalise(data: bytes, identity: IdentityProvider | None = None) -> Normalised:
    """Return the instance to upload: the same bytes, or a rewritten copy.

    ``identity(accession_number, study_instance_uid)`` returns the EMR's
    values for :data:`IDENTITY_KEYS` (they win over the modality's) or
    ``None``. Its exceptions propagate: the caller retries later rather than
    upload an instance under the wrong patient.
    """
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
