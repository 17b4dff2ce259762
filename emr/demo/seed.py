"""`filmless demo`: demo accounts, Vietnamese demo patients, orders and their studies.

The only place in filmless with fixed passwords: they are printed and meant
for a first look, not for real use.

The demo tells one coherent story, the same on every run apart from the generated secrets
(keys, certificates) and the day it is seeded on: every exam with a report has its images,
and the clinical times follow each other in the facility's time zone (:data:`emr.demo.records`
for the inpatient stay). Only the signatures carry the real time they were made at: an
RFC 3161 timestamp cannot be dated back, so the papers are signed when the demo runs, in the
order a ward would sign them.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from sqlalchemy import select

from emr.access.audit import Actor
from emr.access.users import create_user
from emr.billing import prices
from emr.billing.prices import PRICE_COLUMNS
from emr.catalogues import (
    Line,
    admin_unit_map_from_package,
    admin_units_from_package,
    has_versions,
    store_version,
)
from emr.core.clock import to_local, utcnow
from emr.core.normalize import split_name
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.documents import service as documents
from emr.imaging import orders
from emr.imaging.linking import link_new_studies
from emr.models import Encounter, ImagingOrder, LinkerState, Patient, Study, User
from emr.patients import encounters
from emr.patients import service as patients
from emr.server import upgrade_database
from storage import Change, ChangesPage, StudySummary

__all__ = [
    "seed",
    "demo_uid",
    "make_ct_series",
    "make_dx_image",
    "orthanc_study_id",
    "DEMO_ACCOUNTS",
    "DEMO_HEADS",
    "DEMO_PRICES",
]

log = logging.getLogger(__name__)

DEMO_ACCOUNTS: list[tuple[str, str, str, str, str | None]] = [
    # username, password, role, full name, practising certificate
    ("quantri", "demo-quantri-2026", "admin", "Quản trị Hệ thống", None),
    ("bacsi", "demo-bacsi-2026", "physician", "Nguyễn Văn An", "001234/HCM-CCHN"),
    ("bschan", "demo-bschan-2026", "radiologist", "Trần Thị Bích Ngọc", "002345/HCM-CCHN"),
    ("ktv", "demo-ktv-2026", "technician", "Lê Minh Khoa", "003456/HCM-CCHN"),
    ("dieuduong", "demo-dieuduong-2026", "nurse", "Phạm Thị Thu Hà", "004567/HCM-CCHN"),
    ("luutru", "demo-luutru-2026", "records_clerk", "Võ Thanh Tùng", None),
    ("truongkhoa", "demo-truongkhoa-2026", "physician", "Hoàng Minh Tuấn", "005678/HCM-CCHN"),
]
# Demo accounts that head a department (username → department code): the second signature of a
# discharge paper is the head's (emr.signing.service.slots_for).
DEMO_HEADS = {"truongkhoa": "K19"}

DEMO_ICD10 = [
    ("J18.9", "Viêm phổi, không đặc hiệu"),
    ("I10", "Tăng huyết áp vô căn (nguyên phát)"),
    ("S06.0", "Chấn động não"),
    ("R51", "Đau đầu"),
    ("K35.8", "Viêm ruột thừa cấp, khác và không đặc hiệu"),
    ("E11.9", "Bệnh đái tháo đường không phụ thuộc insulin, không có biến chứng"),
    ("C34.9", "U ác của phế quản hoặc phổi, không đặc hiệu"),
    ("M54.5", "Đau vùng thắt lưng"),
]

# A small imaging price list (VND; codes in the style of the national DVKT catalogue, for the demo only).
# code, name, unit, hospital price, BHYT price ('' = not covered), valid from
DEMO_PRICES: list[tuple[str, str, str, str, str, str]] = [
    ("18.0043.0002", "Chụp CT ngực không tiêm thuốc cản quang", "Lần", "600000", "522000", "2024-01-01"),
    ("18.0043.0002", "Chụp CT ngực không tiêm thuốc cản quang", "Lần", "650000", "536000", "2025-07-01"),
    ("18.0020.0002", "Chụp CT sọ não không tiêm thuốc cản quang", "Lần", "620000", "536000", "2025-07-01"),
    ("18.0067.0001", "Chụp X-quang ngực thẳng", "Lần", "80000", "65400", "2025-07-01"),
    ("18.0015.0001", "Siêu âm ổ bụng (gan mật, tụy, lách, thận, bàng quang)", "Lần", "150000", "43900", "2025-07-01"),
    ("18.0001.0004", "Siêu âm 4D thai", "Lần", "350000", "", "2025-07-01"),
]

DEMO_PATIENTS: list[dict[str, Any]] = [
    {
        "full_name": "Nguyễn Thị Hồng Nhung",
        "birth_date": "1990-05-17",
        "sex": "F",
        "cccd": "079190001234",
        "bhyt_number": "DN4790123456789",
        "bhyt_valid_from": "2026-01-01",
        "bhyt_valid_to": "2026-12-31",
        "bhyt_registered_facility": "79001",
        "address": "12 Lê Lợi, Phường Sài Gòn, TP. Hồ Chí Minh",
        "province_code": "79",
        "ward_code": "26740",  # the commune after 1 July 2025 (Bến Nghé, Quận 1 before)
        "occupation_code": "00001",
        "phone": "0901234567",
    },
    {
        "full_name": "Trần Văn Đức",
        "birth_date": "1958-11-02",
        "sex": "M",
        "cccd": "001058004321",
        "bhyt_number": "HT3010987654321",
        "bhyt_valid_from": "2026-01-01",
        "bhyt_valid_to": "2030-12-31",
        "bhyt_registered_facility": "01002",
        "address": "45 Phố Huế, Hai Bà Trưng, Hà Nội",
        "province_code": "01",
        "phone": "0912345678",
    },
    {
        "full_name": "Lê Hoàng Phúc",
        "birth_date": "2008-03-21",
        "sex": "M",
        "cccd": "048208007777",
        "bhyt_number": "4812345678",
        "bhyt_valid_from": "2026-09-01",
        "bhyt_valid_to": "2027-08-31",
        "bhyt_registered_facility": "48003",
        "address": "8 Bạch Đằng, Phường Hải Châu, Đà Nẵng",
        "province_code": "48",
        "ward_code": "20242",
        "phone": "0935123456",
        # the inpatient stay of emr.demo.records (XML7/XML8, VN Core religion)
        "health_id": "4812345678",
        "religion_code": "02",  # Công giáo (GSO 2008); a code no list names is refused on entry
        "father_name": "Lê Văn Hải",
        "mother_name": "Nguyễn Thị Thu",
    },
    {
        "full_name": "Phạm Thị Mai Anh",
        "birth_date": "1975-07-30",
        "sex": "F",
        "cccd": "092175005555",
        "bhyt_number": "GD4920000011122",
        "bhyt_valid_from": "2026-01-01",
        "bhyt_valid_to": "2026-12-31",
        "bhyt_registered_facility": "92001",
        "address": "20 Hòa Bình, Ninh Kiều, Cần Thơ",
        "province_code": "92",
        "phone": "0987654321",
    },
    {
        "full_name": "Đặng Quốc Bảo",
        "birth_date": "1984-01-09",
        "sex": "M",
        "cccd": "031084002468",
        "address": "3 Lạch Tray, Ngô Quyền, Hải Phòng",
        "province_code": "31",
        "phone": "0903987654",
    },
]


def make_ct_series(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession_number: str,
    study_instance_uid: str,
    slices: int = 8,
    size: int = 64,
    description: str = "CT demo",
    acquired: datetime | None = None,
    uid_seed: str | None = None,
) -> list[bytes]:
    """A small synthetic CT series (Part 10 bytes), UTF-8 names, one sphere-like phantom.

    ``acquired``: StudyDate/StudyTime as facility wall time (default now, as a modality writes them);
    ``uid_seed``: series and instance UIDs derived from it (the same files on every run), random without."""
    series_uid, frame_uid = _uid(uid_seed, "series"), _uid(uid_seed, "frame")
    now = acquired or to_local(utcnow())
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    patient = {"PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": birth_date,
               "PatientSex": sex, "AccessionNumber": accession_number}
    for i in range(slices):
        ds = _image_header(CTImageStorage, _uid(uid_seed, f"instance-{i}"), study_instance_uid, series_uid,
                           patient, now, description)
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = "Axial 5mm"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, i * 5.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        r = size * 0.4 * (1 - abs(i - slices / 2) / slices)
        body = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < r**2
        pixels = np.where(body, 1064 + (xx % 7) * 3, 24).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        out.append(_part10(ds))
    return out


def _image_header(sop_class: UID, sop_uid: UID, study_uid: str, series_uid: str, patient: dict[str, str],
                  acquired: datetime, description: str) -> Dataset:
    """What every demo image starts with: file meta, UTF-8, its UIDs, the patient and accession
    (``patient``: keyword → value) and the study's date and time (facility wall time)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    ds.StudyDate = ds.SeriesDate = acquired.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = acquired.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.StudyDescription = description
    return ds


def _part10(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def demo_uid(*parts: str) -> UID:
    """A UID under 2.25 from a name-based UUID (PS3.5 B.2): the same demo names give the same UIDs."""
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:filmless:demo:' + '/'.join(parts)).int}")


def _uid(seed: str | None, part: str) -> UID:
    return demo_uid(seed, part) if seed is not None else generate_uid()


def orthanc_study_id(patient_id: str, study_instance_uid: str) -> str:
    """Orthanc's identifier of a study: the SHA-1 of ``PatientID|StudyInstanceUID`` in five groups of 8."""
    digest = hashlib.sha1(f"{patient_id}|{study_instance_uid}".encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def make_dx_image(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession_number: str,
    study_instance_uid: str,
    acquired: datetime,
    size: int = 128,
    description: str = "X-quang ngực thẳng",
) -> bytes:
    """One synthetic chest radiograph (DX, for presentation, PA), Part 10 bytes, UIDs from the study UID."""
    patient = {"PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": birth_date,
               "PatientSex": sex, "AccessionNumber": accession_number}
    ds = _image_header(DigitalXRayImageStorageForPresentation, demo_uid(study_instance_uid, "instance-0"),
                       study_instance_uid, demo_uid(study_instance_uid, "series"), patient, acquired, description)
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.SeriesDescription = "PA"
    ds.Modality = "DX"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PixelSpacing = ds.ImagerPixelSpacing = [2.8, 2.8]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.55) / 0.5) ** 2 < 1
    lungs = (((np.abs(xx - 0.5) - 0.19) / 0.13) ** 2 + ((yy - 0.5) / 0.3) ** 2) < 1
    opacity = ((xx - 0.32) / 0.08) ** 2 + ((yy - 0.68) / 0.07) ** 2 < 1  # the right lower lobe (image left)
    pixels = np.where(body, 2600, 300) - np.where(lungs, 1700, 0) + np.where(lungs & opacity, 900, 0)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return _part10(ds)


class HeadersOnly:
    """The demo's image sink without an image store (``filmless demo --no-study``): the studies of the files
    the demo made, answered as Orthanc's changes feed would (no pixels kept), so the linker gives every
    exam the demo reports a study record, as it would with the images."""

    def __init__(self) -> None:
        self._studies: dict[str, StudySummary] = {}

    def upload(self, blob: bytes) -> None:
        ds = dcmread(BytesIO(blob), stop_before_pixels=True)
        oid = orthanc_study_id(str(ds.PatientID), str(ds.StudyInstanceUID))
        seen = self._studies.get(oid)
        self._studies[oid] = StudySummary(
            orthanc_id=oid,
            study_instance_uid=str(ds.StudyInstanceUID),
            patient_id=str(ds.PatientID),
            patient_name=str(ds.PatientName),
            accession_number=str(ds.AccessionNumber),
            study_date=str(ds.StudyDate),
            study_description=str(ds.StudyDescription),
            modalities=(str(ds.Modality),),
            series_count=1,
            instance_count=(seen.instance_count or 0) + 1 if seen else 1,
        )

    def changes(self, since: int = 0, limit: int = 100) -> ChangesPage:
        found = [Change(n, "NewStudy", "Study", oid, "") for n, oid in enumerate(self._studies, start=1) if n > since]
        return ChangesPage(changes=tuple(found[:limit]), last=len(self._studies), done=True)

    def get_study(self, orthanc_id: str) -> StudySummary:
        return self._studies[orthanc_id]

    def set_study_metadata(self, orthanc_id: str, name: str, value: str) -> None:
        """Nothing to tag: no PACS."""


def link_demo_studies(session: Any, images: Any, order_ids: list[int]) -> int:
    """Link what the demo sent (``images``: the image store, or :class:`HeadersOnly`); the studies of the
    demo's orders ``order_ids`` arrived minutes after their exam was performed, as from a modality."""
    state = session.get(LinkerState, 1)
    seq = state.last_seq if state is not None else 0
    if isinstance(images, HeadersOnly) and state is not None:
        state.last_seq = 0  # its own feed: numbered from 1, whatever Orthanc's numbers were
        session.commit()
    result = link_new_studies(session, images)
    if isinstance(images, HeadersOnly):  # the linker keeps its place in Orthanc's feed
        state = session.get(LinkerState, 1)
        if state is not None:
            state.last_seq = seq
    for study, performed in session.execute(
        select(Study, ImagingOrder.performed_at)
        .join(ImagingOrder, ImagingOrder.id == Study.order_id)
        .where(Study.order_id.in_(order_ids or [0]), ImagingOrder.performed_at.is_not(None))
    ):
        arrived = performed + timedelta(minutes=3)
        if study.linked_at is not None and arrived < study.linked_at:
            study.first_seen_at = study.linked_at = arrived
    session.commit()
    return result.linked


def _ensure_user(
    session: Any, username: str, password: str, role: str, name: str, cert: str | None, department_id: int | None
) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = create_user(
            session,
            Actor(None, "demo", "admin", None),
            username,
            password,
            role,
            name,
            practising_cert_no=cert,
            department_id=department_id,
        )
    return user


def _seed_signing(
    settings: EmrSettings, session: Any, users: dict[str, User], patient: Patient, store: Any, steps: list[Any]
) -> None:
    """Signing keys on the demo token; the papers of ``steps`` signed with it; the first patient's CT
    visit reported, signed and closed."""
    from emr.demo.records import written_at
    from emr.demo.signing import export_config_updates, register_demo_keys, run_token_step
    from emr.exports import save_config
    from emr.models import Document
    from emr.signing import service as signatures

    register_demo_keys(session, {u.username: u for u in users.values()})
    save_config(settings, export_config_updates(settings))
    order = session.scalar(
        select(ImagingOrder).where(ImagingOrder.patient_id == patient.id, ImagingOrder.encounter_id.is_not(None))
    )
    if order is None or session.scalar(select(Document.id).where(Document.order_id == order.id)) is not None:
        run_token_step(settings, steps)  # the PKI and token exist (idempotent)
        session.expire_all()
        return
    reader = Actor(users["radiologist"].id, users["radiologist"].username, "radiologist", None)
    doctor = Actor(users["physician"].id, users["physician"].username, "physician", None)
    report = documents.create_document(
        session,
        reader,
        {
            "encounter_id": order.encounter_id,
            "form_type": "radiology_report",
            "order_id": order.id,
            "content": {
                "technique": "CT xoắn ốc, lát cắt 5 mm, không tiêm thuốc cản quang",
                "findings": "Đám mờ thùy dưới phổi phải, có hình phế quản hơi. Không tràn dịch màng phổi.",
                "conclusion": "Viêm phổi thùy dưới phải.",
                "recommendation": "Đối chiếu lâm sàng.",
            },
        },
    )
    if order.performed_at is not None:
        written_at(report, order.performed_at + timedelta(minutes=50))  # read once the images were in
    session.commit()  # the child process signs through its own connection
    run_token_step(settings, [*steps, (report.id, reader)])
    session.expire_all()
    if store is not None:
        signatures.store_in_pacs(session, reader, report.id, signatures.signing_config(settings, store))
    enc = session.get(Encounter, order.encounter_id)
    if enc is not None and enc.status == "open":
        encounters.close_encounter(session, doctor, enc.id, "Viêm phổi thùy dưới phải")


DEMO_FACILITIES: list[tuple[str, str, str | None]] = [
    ("79001", "Bệnh viện filmless (demo)", "79"),
    ("01002", "Bệnh viện Hữu nghị (demo)", "01"),
    ("48003", "Bệnh viện Đà Nẵng (demo)", "48"),
    ("92001", "Bệnh viện Đa khoa Cần Thơ (demo)", "92"),
]
DEMO_DEPARTMENTS = [("K01", "Khoa Khám bệnh"), ("K19", "Khoa Nội tổng hợp"), ("K48", "Khoa Chẩn đoán hình ảnh")]


def _seed_catalogues(session: Any, system: Actor, settings: EmrSettings) -> None:
    """Demo versions of the Ministry catalogues (the real administrative units from the
    vietnam-provinces package) so entry and the pre-submission check run as at a hospital."""
    first_day = date(2020, 1, 1)
    facilities = list(DEMO_FACILITIES)
    if settings.facility_code not in {c for c, _n, _p in facilities}:  # this site's MA_CSKCB (XML1)
        facilities.append((settings.facility_code, settings.hospital_name[:500] or "filmless", None))
    newest = {code: (name, bh) for code, name, _unit, _hospital, bh, _from in DEMO_PRICES}  # last row wins
    demo: dict[str, list[Line]] = {
        "icd10": [Line(i, c, t) for i, (c, t) in enumerate(DEMO_ICD10, start=1)],
        "dvkt": [
            Line(i, code, name, price=Decimal(bh) if bh else None)
            for i, (code, (name, bh)) in enumerate(newest.items(), start=1)
        ],
        "facility": [Line(i, c, n, p) for i, (c, n, p) in enumerate(facilities, start=1)],
        "department": [Line(i, c, n) for i, (c, n) in enumerate(DEMO_DEPARTMENTS, start=1)],
    }
    for kind, lines in demo.items():
        if not has_versions(session, kind):
            digest = hashlib.sha256(repr(lines).encode()).hexdigest()
            store_version(session, system, kind, lines, valid_from=first_day, source="demo", sha256=digest)
    for kind, packaged in (("admin_unit", admin_units_from_package), ("admin_unit_map", admin_unit_map_from_package)):
        if not has_versions(session, kind):
            lines, source, digest = packaged()
            store_version(session, system, kind, lines, valid_from=date(2025, 7, 1), source=source, sha256=digest)


def _happened(enc: Encounter, order: ImagingOrder, opened: datetime, *, ordered: int, performed: int) -> None:
    """A visit opened at ``opened`` (naive UTC), its exam ordered ``ordered`` and performed ``performed``
    minutes later: the times of a morning at the hospital, not the seconds the demo takes."""
    enc.admitted_at = opened
    order.ordered_at = order.scheduled_at = opened + timedelta(minutes=ordered)
    order.performed_at = opened + timedelta(minutes=performed)
    order.study_instance_uid = demo_uid("study", order.accession_number)  # the same study on every run


def seed(settings: EmrSettings, store: Any = None, *, signing: bool = True) -> list[tuple[str, str, str]]:
    """Seed the demo data (idempotent); returns (username, password, role) of the demo accounts.

    ``signing``: also the development PKI, the SoftHSM demo token, one imaging visit that is
    closed with a signed radiology report, ready for the insurance export, and an inpatient stay
    whose papers are signed with the token (without it no document is created, and none is
    shown signed without a signature).

    ``store``: the image store the demo's studies are sent to; None (``filmless demo --no-study``): they
    are made all the same and linked from their headers (:class:`HeadersOnly`), so no exam is ever
    reported without a study, even where the images themselves are not kept.
    """
    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings.database_url))
    system = Actor(None, "demo", "admin", None)
    with factory() as session:
        _seed_catalogues(session, system, settings)
        outpatient = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
        ward = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
        imaging = encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh")
        session.commit()
        heads = {"K19": ward.id}
        users = {}  # by role; the department head as "head"
        for username, password, role, name, cert in DEMO_ACCOUNTS:
            dep = imaging.id if role in ("radiologist", "technician") else outpatient.id
            if username in DEMO_HEADS:
                user = _ensure_user(session, username, password, role, name, cert, heads[DEMO_HEADS[username]])
                user.is_department_head = True
                session.commit()
                users["head"] = user
                continue
            users[role] = _ensure_user(session, username, password, role, name, cert, dep)
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "icd10.csv"
            path.write_text("\n".join(f"{c}\t{t}" for c, t in DEMO_ICD10), encoding="utf-8")
            encounters.load_icd10(session, system, path)
            path = Path(tmp) / "prices.csv"
            with path.open("w", encoding="utf-8", newline="") as fh:
                csv.writer(fh).writerows([PRICE_COLUMNS, *DEMO_PRICES])  # quoted: names hold commas
            prices.load_prices(session, system, path)
        doctor = Actor(users["physician"].id, users["physician"].username, "physician", None)
        clerk = Actor(users["records_clerk"].id, users["records_clerk"].username, "records_clerk", None)
        created: list[Patient] = []
        for data in DEMO_PATIENTS:
            existing = session.scalar(select(Patient).where(Patient.cccd == data["cccd"]))
            created.append(existing or patients.create_patient(session, clerk, data))
        has_orders = session.scalar(select(ImagingOrder.id).where(ImagingOrder.patient_id == created[0].id))
        images = store if store is not None else HeadersOnly()  # every exam with a report has its images
        if has_orders is None:
            # This morning's visits, told backwards from now (facility time): the chest CT visit opened three
            # hours ago (imaged, reported and closed below), the emergency head CT half an hour ago (unread).
            now = utcnow()
            e1 = encounters.create_encounter(
                session,
                doctor,
                {
                    "patient_id": created[0].id,
                    "kind": "outpatient",
                    "department_code": "K01",
                    "reason": "Ho, sốt 3 ngày",
                    "admission_diagnosis": "Theo dõi viêm phổi",
                    "diagnoses": ["J18.9"],
                    "insurance_object": "1",
                    "benefit_level": 80,  # checked on the card (DN4…: 80 %)
                },
            )
            sent = orders.create_order(
                session,
                doctor,
                {
                    "patient_id": created[0].id,
                    "encounter_id": e1.id,
                    "modality": "CT",
                    "procedure_name": "CT ngực không tiêm thuốc cản quang",
                    "body_part": "CHEST",
                    "urgency": "urgent",
                    "clinical_info": "Ho, sốt, ran nổ đáy phổi phải",
                    "procedure_code": "18.0043.0002",
                    "station_ae_title": "CT01",
                },
            )
            _happened(e1, sent, now - timedelta(hours=3), ordered=10, performed=30)
            e2 = encounters.create_encounter(
                session,
                doctor,
                {
                    "patient_id": created[1].id,
                    "kind": "emergency",
                    "department_code": "K19",
                    "reason": "Đau đầu sau ngã",
                    "diagnoses": ["S06.0", "I10"],
                    "benefit_level": 95,  # HT3…: 95 %
                },
            )
            head_ct = orders.create_order(
                session,
                doctor,
                {
                    "patient_id": created[1].id,
                    "encounter_id": e2.id,
                    "modality": "CT",
                    "procedure_name": "CT sọ não không tiêm",
                    "procedure_code": "18.0020.0002",
                    "body_part": "HEAD",
                    "urgency": "stat",
                    "clinical_info": "Chấn thương đầu, tăng huyết áp",
                },
            )
            _happened(e2, head_ct, now - timedelta(minutes=50), ordered=5, performed=20)
            # The README walk-through has the physician order a CT for Đặng Quốc Bảo: he is
            # waiting in the physician's department (care scope, issue 10).
            e3 = encounters.create_encounter(
                session,
                doctor,
                {
                    "patient_id": created[4].id,
                    "kind": "outpatient",
                    "department_code": "K01",
                    "reason": "Đau đầu kéo dài",
                    "diagnoses": ["R51"],
                },
            )
            e3.admitted_at = now - timedelta(minutes=20)
            tomorrow = to_local(now).date() + timedelta(days=1)  # the facility's tomorrow, 09:00
            spine = orders.create_order(
                session,
                doctor,
                {
                    "patient_id": created[2].id,
                    "modality": "MR",
                    "procedure_name": "MRI cột sống thắt lưng",
                    "body_part": "LSPINE",
                    "scheduled_at": datetime.combine(tomorrow, datetime.min.time()).replace(hour=9).isoformat(),
                },
            )
            abdomen = orders.create_order(
                session,
                doctor,
                {
                    "patient_id": created[3].id,
                    "modality": "US",
                    "procedure_name": "Siêu âm ổ bụng tổng quát",
                    "procedure_code": "18.0015.0001",
                    "body_part": "ABDOMEN",
                },
            )
            for waiting in (spine, abdomen):
                waiting.study_instance_uid = demo_uid("study", waiting.accession_number)
            session.commit()
            # The chest CT gets a signed report below; the head CT stays unread, for the radiologist.
            for p, order, description in (
                (created[0], sent, "CT ngực không tiêm"),
                (created[1], head_ct, "CT sọ não không tiêm"),
            ):
                family, given = split_name(p.full_name)
                assert order.performed_at is not None
                for blob in make_ct_series(
                    patient_id=p.code,
                    patient_name=f"{family}^{given}",
                    birth_date=p.birth_date.strftime("%Y%m%d"),
                    sex=p.sex,
                    accession_number=order.accession_number,
                    study_instance_uid=order.study_instance_uid,
                    description=description,
                    acquired=to_local(order.performed_at),
                    uid_seed=order.study_instance_uid,
                ):
                    images.upload(blob)
        demo_orders = select(ImagingOrder.id).where(ImagingOrder.patient_id.in_([p.id for p in created]))
        if signing:
            from .records import close_record_demo, seed_record_demo, write_demo_exports

            # Drafts written on their day (signed below); the stay's X-ray is imaged on admission.
            steps = seed_record_demo(session, users, created[0], created[2], images)
            log.info("demo: linked %d studies", link_demo_studies(session, images, list(session.scalars(demo_orders))))
            # Discharged before the discharge paper is written: it prints the discharge time.
            steps += close_record_demo(session, users, created[2])
            _seed_signing(settings, session, users, created[0], store, steps)
            write_demo_exports(settings, session)
        else:
            log.info("demo: linked %d studies", link_demo_studies(session, images, list(session.scalars(demo_orders))))
    factory.kw["bind"].dispose()
    return [(u, pw, role) for u, pw, role, _n, _c in DEMO_ACCOUNTS]
