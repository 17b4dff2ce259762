"""The quick "nothing to change" decision of normalise (issue 12 §5).

The forwarders first walk an instance's header without pydicom; only files
that need a rewrite (or that the walk is not sure about) are parsed. The
walk must never answer "unchanged" for a file the pydicom path would
rewrite: checked here on every file pydicom ships (all transfer syntaxes,
character sets, odd encodings) and on the cases the gateway's corpus holds.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pacs_gateway.normalise import IdentityProvider, normalise, normalise_file
from tests.corpus import make_ct_series

# The module (the package exports its function of the same name).
norm = importlib.import_module("pacs_gateway.normalise")


def _slow_needed(data: bytes, identity: IdentityProvider | None) -> bool | None:
    """The pydicom path's decision (None when pydicom cannot read the header)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
            return norm._plan(header, identity).needed
    except Exception:  # noqa: BLE001 - the pydicom path would then upload the file as received
        return None


def _quick_unchanged(data: bytes, identity: IdentityProvider | None) -> bool | None:
    scan = norm._quick_scan(data)
    return None if scan is None else norm._quick_unchanged(scan, identity)


def _own_identity(data: bytes) -> Mapping[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        return {key: str(ds.get(key, "") or "") for key in norm.IDENTITY_KEYS if key in ds}


def _providers(data: bytes) -> list[IdentityProvider | None]:
    try:
        own = _own_identity(data)
    except Exception:  # noqa: BLE001
        own = {}
    return [
        None,
        lambda _a, _s: None,
        lambda _a, _s: own,  # the EMR agrees with the modality: nothing to coerce
        lambda _a, _s: {"PatientID": "EMR-0001"},
        lambda _a, _s: {"PatientName": "Nguyễn^Văn A", "PatientSex": "M", "PatientBirthDate": "19700101"},
    ]


def _pydicom_files() -> list[Path]:
    files = []
    for name in sorted(set(get_testdata_files()) | set(get_charset_files())):
        path = Path(name)
        if path.is_file() and path.stat().st_size <= 8_000_000:
            files.append(path)
    return files


def test_quick_decision_never_skips_a_rewrite_on_pydicoms_files() -> None:
    sure = 0
    for path in _pydicom_files():
        data = path.read_bytes()
        for identity in _providers(data):
            quick = _quick_unchanged(data, identity)
            slow = _slow_needed(data, identity)
            if quick:
                assert slow is not True, f"{path.name}: the quick walk skipped a rewrite pydicom would make"
                sure += 1
    assert sure > 100  # most of them are decided without pydicom


def _instance(path: Path, *, syntax: str = ExplicitVRLittleEndian, charset: str | None = None,
              name: bytes = b"Nguyen^Van An", nested: bytes = b"plain", private: bytes | None = None,
              accession: bytes = b"ACC1") -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PID1"
    ds.PatientName = name
    ds.AccessionNumber = accession
    item = Dataset()
    item.RequestedProcedureDescription = nested
    inner = Dataset()
    inner.CodeMeaning = nested
    item.ConceptNameCodeSequence = [inner]
    ds.RequestAttributesSequence = [item]
    if private is not None:
        ds.add_new(0x00091010, "LO", private)
    ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return path.read_bytes()


LATIN1 = "Hà^Thúy Vân".encode("latin-1")
UTF8 = "Hà^Thúy Vân".encode()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(("why", "kwargs"), [
    ("latin-1 under ISO_IR 100", dict(charset="ISO_IR 100", name=LATIN1)),
    ("utf-8 under ISO_IR 100", dict(charset="ISO_IR 100", name=UTF8)),
    ("latin-1 under ISO_IR 192", dict(charset="ISO_IR 192", name=LATIN1)),
    ("utf-8 without a label", dict(name=UTF8)),
    ("latin-1 without a label, two sequences deep", dict(nested=LATIN1)),
    ("utf-8 in a nested item under ISO_IR 100", dict(charset="ISO_IR 100", nested=UTF8)),
    ("ISO 2022 escape sequences in 7-bit text", dict(charset="\\ISO 2022 IR 87", name=b"Yamada^\x1b$B;3ED\x1b(B")),
    ("latin-1 in a private LO", dict(private=LATIN1)),
])
def test_a_file_needing_a_charset_fix_never_takes_the_quick_path(tmp_path: Path, syntax: str, why: str,
                                                                   kwargs: dict[str, object]) -> None:
    if "private" in kwargs and syntax == ImplicitVRLittleEndian:
        pytest.skip("a private element has no VR in implicit VR: neither path takes it for text")
    data = _instance(tmp_path / "x.dcm", syntax=syntax, **kwargs)  # type: ignore[arg-type]
    assert _slow_needed(data, None) is True, why
    assert _quick_unchanged(data, None) is not True, why
    result = normalise_file(tmp_path / "x.dcm", tmp_path / "out.dcm")
    assert result.changed and result.path == tmp_path / "out.dcm"
    assert pydicom.dcmread(result.path).SpecificCharacterSet == "ISO_IR 192"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_usual_instances_are_decided_without_pydicom(tmp_path: Path, syntax: str) -> None:
    for n, kwargs in enumerate([dict(), dict(charset="ISO_IR 192", name=UTF8, nested=UTF8, private=UTF8),
                                dict(charset="ISO_IR 100"), dict(charset="ISO_IR 192 ")]):
        data = _instance(tmp_path / f"{n}.dcm", syntax=syntax, **kwargs)  # type: ignore[arg-type]
        asked: list[tuple[str, str]] = []

        def same(accession: str, study: str, asked: list[tuple[str, str]] = asked) -> Mapping[str, str]:
            asked.append((accession, study))
            return {"PatientID": "PID1"}

        assert _quick_unchanged(data, None) is True
        assert _quick_unchanged(data, same) is True
        assert asked == [("ACC1", "1.2.3.4")]  # the very values the pydicom path would ask with
        assert _slow_needed(data, same) is False
        assert normalise(data, same).data is data


def test_identity_coercion_never_takes_the_quick_path(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path / "ct", 2, rows=16, cols=16, charset="ISO_IR 192", patient_id="VN0001")
    data = paths[0].read_bytes()
    own = _own_identity(data)
    assert _quick_unchanged(data, lambda _a, _s: own) is True
    changes = [("PatientID", "EMR-1"), ("IssuerOfPatientID", "BV01"), ("PatientName", "Nguyễn^Văn B"),
               ("PatientBirthDate", "19800102"), ("PatientSex", "M"), ("PatientName", own["PatientName"] + " ")]
    for n, (key, value) in enumerate(changes):
        wanted = {**own, key: value}
        calls: list[str] = []

        def emr(accession: str, _study: str, wanted: Mapping[str, str] = wanted,
                calls: list[str] = calls) -> Mapping[str, str]:
            calls.append(accession)
            return wanted

        assert _quick_unchanged(data, emr) is False, key
        calls.clear()
        result = normalise_file(paths[0], tmp_path / f"{n}.dcm", emr)
        assert result.changed, key
        assert calls == ["ACC0001"]  # asked once although both paths looked
        assert str(pydicom.dcmread(result.path).get(key)) == value.rstrip()  # padding is not kept


def test_odd_values_are_left_to_pydicom(tmp_path: Path) -> None:
    """Leading spaces, backslashes, non-ASCII identity values: the walk is not sure, pydicom decides."""
    for accession in (b" ACC1", b"ACC\\1", "Ã".encode("latin-1")):
        data = _instance(tmp_path / "odd.dcm", accession=accession, charset="ISO_IR 192", name=UTF8)
        assert _quick_unchanged(data, lambda _a, _s: {"PatientID": "PID1"}) is False
    # UTF-8 under ISO_IR 192 is read as pydicom reads it.
    data = _instance(tmp_path / "utf8.dcm", accession="Ã".encode(), charset="ISO_IR 192", name=UTF8)
    asked: list[str] = []
    assert _quick_unchanged(data, lambda a, _s: asked.append(a) or {"PatientName": "Hà^Thúy Vân"}) is True
    assert asked == ["Ã"]
    assert norm._quick_scan(b"DICM") is None and norm._quick_scan(b"\0" * 200) is None


def _long_header_file(path: Path, boundary: int, pixels: bool) -> Path:
    """Latin-1 Patient's Name starting exactly at byte ``boundary``, after a long private element."""
    pad = 70_000
    # One UID for every attempt: generated UIDs differ in length, which moved the element between attempts
    # (a rare failure: "could not place the element").
    uid = generate_uid()
    for _ in range(3):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = uid
        ds.add_new(0x00090010, "LO", "FILMLESS TEST")
        ds.add_new(0x00091001, "OB", b"\0" * pad)
        ds.PatientName = "Lê^Văn"[:2] + "^Ren\xe9"  # Latin-1 é under ISO_IR 100
        if pixels:
            ds.Rows = ds.Columns = 4
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.PixelData = b"\1" * 16
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
        at = path.read_bytes().index(b"\x10\x00\x10\x00PN")
        if at == boundary:
            return path
        pad += boundary - at
    raise AssertionError("could not place the element")


@pytest.mark.parametrize("pixels", [True, False])
def test_text_past_the_first_read_is_still_seen(tmp_path: Path, pixels: bool) -> None:
    """The walk reads a file's first 64 KiB first: a header longer than that (the name to re-encode
    starting right where that read ends) must still be rewritten, with or without pixel data after it."""
    path = _long_header_file(tmp_path / "long.dcm", norm._HEAD_READ, pixels)
    assert _slow_needed(path.read_bytes(), None) is True
    result = normalise_file(path, tmp_path / "out.dcm", None)
    assert result.changed and result.path == tmp_path / "out.dcm"
    assert pydicom.dcmread(result.path).SpecificCharacterSet == "ISO_IR 192"
