"""Make an instance what Orthanc should store: UTF-8 text and the EMR's identity.

Runs in the forwarders, off the acknowledgement path. Instances that need
nothing (the usual case: ASCII-only or already ``ISO_IR 192``, identity
unchanged) are returned byte for byte, so the common path costs one header
parse.

Character sets: modalities send ``ISO_IR 100`` (Latin-1), other single- and
multi-byte sets, or no Specific Character Set at all while writing UTF-8 or
Latin-1 anyway. Orthanc would then mangle Vietnamese names, so non-ASCII
text is decoded here and the instance rewritten as ``ISO_IR 192``. With no
declared character set we try UTF-8 first (a stray Latin-1 byte sequence is
almost never valid UTF-8) and fall back to Latin-1.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
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


def _non_ascii_text(ds: Dataset, found: list[bytes], depth: int = 0) -> None:
    """Collect raw non-ASCII text values, converting only the sequences."""
    for tag, elem in list(ds._dict.items()):
        if isinstance(elem, RawDataElement):
            vr = elem.VR
            if vr == "SQ" or (vr in (None, "UN") and elem.length == 0xFFFFFFFF):
                try:
                    seq = ds[tag].value
                except Exception:  # noqa: BLE001 - an unreadable private SQ is left alone
                    continue
                if depth < 16 and isinstance(seq, pydicom.sequence.Sequence):
                    for item in seq:
                        _non_ascii_text(item, found, depth + 1)
            elif vr in _TEXT_VRS and elem.value and not bytes(elem.value).isascii():
                found.append(bytes(elem.value))
        elif elem.VR == "SQ" and depth < 16:
            for item in elem.value or []:
                _non_ascii_text(item, found, depth + 1)


def _is_utf8(values: list[bytes]) -> bool:
    try:
        for v in values:
            v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class _Plan:
    charset: list[str]
    non_ascii: list[bytes]
    coerce: dict[str, str]

    @property
    def needed(self) -> bool:
        return bool(self.non_ascii or self.coerce)


def _plan(header: Dataset, identity: IdentityProvider | None) -> _Plan:
    wanted = None
    if identity is not None:
        wanted = identity(str(header.get("AccessionNumber", "") or ""), str(header.get("StudyInstanceUID", "") or ""))
    charset = _charset(header)
    non_ascii: list[bytes] = []
    if charset != [_UTF8]:
        _non_ascii_text(header, non_ascii)
    coerce: dict[str, str] = {}
    for key in IDENTITY_KEYS:
        if wanted and wanted.get(key) is not None:
            new = str(wanted[key])
            old = header.get(key)
            if str(old if old is not None else "") != new:
                coerce[key] = new
    return _Plan(charset, non_ascii, coerce)


def _apply(ds: Dataset, plan: _Plan) -> list[str]:
    changes: list[str] = []
    needs_utf8 = plan.non_ascii or any(not v.isascii() for v in plan.coerce.values())
    if needs_utf8 and plan.charset != [_UTF8]:
        if not plan.charset:
            source = _UTF8 if _is_utf8(plan.non_ascii) else "ISO_IR 100"
            ds.SpecificCharacterSet = source
            changes.append(f"charset (none, read as {source}) -> {_UTF8}")
        else:
            declared = "\\".join(plan.charset)
            changes.append(f"charset {declared} -> {_UTF8}")
        ds.decode()
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
