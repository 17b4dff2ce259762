"""Vendor-private storage SOP classes: accepted and stored, unknown ones refused at association."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacs_gateway import Gateway
from storage import OrthancStore
from tests.helpers import wait_for

from .conftest import dcmtk

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
HOSPITAL_PRIVATE = "1.2.826.0.1.3680043.8.498.77.1"  # a class only this hospital's config names
NOBODY_KNOWS = "1.2.826.0.1.3680043.8.498.77.2"


def _private_object(folder: Path, sop_class: str) -> tuple[Path, str]:
    """A non-image object of ``sop_class`` as a vendor workstation writes it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Lê^Thị Thu Hà"
    ds.PatientID = "PRIV-1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER", "CSA REPORT"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, uid


def _storescu(port: int, path: Path, sop_class: str) -> int:
    """storescu proposing ``sop_class``, from an association profile as a modality
    configured for its private objects has (storescu refuses unknown classes otherwise)."""
    profile = path.with_suffix(".cfg")
    profile.write_text(
        "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LittleEndianExplicit\n"
        "TransferSyntax2 = LittleEndianImplicit\n\n"
        f"[[PresentationContexts]]\n[Private]\nPresentationContext1 = {sop_class}\\Uncompressed\n\n"
        "[[Profiles]]\n[Private]\nPresentationContexts = Private\n",
        encoding="ascii",
    )
    return dcmtk("storescu", "-xf", str(profile), "Private", "-aet", "CT01", "-aec", "FILMLESS", "127.0.0.1",
                 str(port), str(path)).returncode


def test_vendor_and_configured_private_classes_are_stored_others_refused(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(orthanc, extra_sop_classes=(HOSPITAL_PRIVATE,))
    siemens, siemens_uid = _private_object(tmp_path, SIEMENS_CSA_NON_IMAGE)
    own, own_uid = _private_object(tmp_path, HOSPITAL_PRIVATE)
    unknown, unknown_uid = _private_object(tmp_path, NOBODY_KNOWS)
    assert _storescu(gw.settings.port, siemens, SIEMENS_CSA_NON_IMAGE) == 0
    assert _storescu(gw.settings.port, own, HOSPITAL_PRIVATE) == 0
    assert _storescu(gw.settings.port, unknown, NOBODY_KNOWS) != 0  # no presentation context for it
    wait_for(lambda: orthanc.find_instance(siemens_uid) is not None and orthanc.find_instance(own_uid) is not None,
             timeout=30, what="private objects in Orthanc")
    assert orthanc.instance_sop_class(siemens_uid) == SIEMENS_CSA_NON_IMAGE
    assert orthanc.instance_sop_class(own_uid) == HOSPITAL_PRIVATE
    assert orthanc.find_instance(unknown_uid) is None
    assert gw.stats.refused == 0 and gw.stats.quarantined == 0  # refused at association, not per instance
