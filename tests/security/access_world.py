"""A real EMR (SQLite, waitress on a free port) over the session Orthanc, for the access red-team tests.

Two patients in two departments, each with an encounter, a CT order, a CT
study linked to the order, a signed radiology report, and that report stored
in the study as an Encapsulated PDF (DOC series), as the signing workflow
does. Patient A is in the care of physician ``bs_a`` (department K19), of the
radiologist (A's study arrived today) and of the technician (A's order is
scheduled today). Patient B's visit is in K01 with ``bs_b`` as attending; B's
study is old (first seen 60 days ago, report signed) and its order was
scheduled 60 days ago: outside the care of everyone but ``bs_b``. A third
study sits in Orthanc unlinked (another patient the PACS holds).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import requests
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from emr import EmrSettings, create_app, upgrade_database
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.demo.seed import make_ct_series
from emr.documents import service as documents
from emr.imaging import linking, orders
from emr.models import Document, Encounter, ImagingOrder, Study, User, utcnow
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing.dicom_pdf import encapsulate_pdf
from filmless.wiring import viewer_extension
from storage import OrthancStore
from tests import helpers
from tests.helpers import csrf_from, skip_existing_changes
from tests.viewer.server import serve

PASSWORD = "correct horse battery staple"
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
REPORT_TEXT = "Đám mờ thùy dưới phổi phải BÍ-MẬT-KẾT-QUẢ"
ROLES = {
    "bs_a": ("physician", "K19"),
    "bs_b": ("physician", "K01"),
    "bschan": ("radiologist", "K48"),
    "ktv": ("technician", "K48"),
    "luutru": ("records_clerk", None),
    "dieuduong": ("nurse", "K19"),
    "quantri": ("admin", None),
}


@dataclass
class Case:
    patient_id: int
    patient_code: str
    patient_name: str
    order_id: int
    study_id: int
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    doc_id: int
    doc_series_uid: str
    doc_sop_uid: str


@dataclass
class AccessWorld:
    base: str
    app: Any
    sessions: Any
    a: Case
    b: Case
    stranger_study_uid: str
    stranger_patient_id: str




def _case(s: Any, store: OrthancStore, users: dict[str, User], name: str, dep: str, doctor: str) -> Case:
    clerk = Actor(users["luutru"].id, "luutru", "records_clerk", "127.0.0.1")
    reader = Actor(users["bschan"].id, "bschan", "radiologist", "127.0.0.1")
    p = patients.create_patient(s, clerk, {"full_name": name, "birth_date": "1970-02-03", "sex": "M"})
    enc = encounters.create_encounter(
        s, clerk, {"patient_id": p.id, "kind": "outpatient", "department_code": dep, "attending_username": doctor}
    )
    doc_actor = Actor(users[doctor].id, doctor, "physician", "127.0.0.1")
    order = orders.create_order(
        s,
        doc_actor,
        {"patient_id": p.id, "encounter_id": enc.id, "modality": "CT", "procedure_name": "CT ngực"},
    )
    blobs = make_ct_series(
        patient_id=p.code,
        patient_name=name.replace(" ", "^", 1),
        birth_date="19700203",
        sex="M",
        accession_number=order.accession_number,
        study_instance_uid=order.study_instance_uid,
        slices=3,
    )
    for blob in blobs:
        store.upload(blob)
    result = linking.link_new_studies(s, store)
    assert result.linked == 1, result
    study = s.scalars(select(Study).where(Study.study_instance_uid == order.study_instance_uid)).one()
    doc = documents.create_document(
        s,
        reader,
        {
            "encounter_id": enc.id,
            "form_type": "radiology_report",
            "order_id": order.id,
            "content": {"findings": REPORT_TEXT, "conclusion": "Viêm phổi thùy dưới phải."},
        },
    )
    documents.mark_signed(s, reader, doc.id, doc.current_version)
    pdf = encapsulate_pdf(
        b"%PDF-1.4\n% " + REPORT_TEXT.encode("utf-8") + b"\n%%EOF\n",
        {
            "StudyInstanceUID": order.study_instance_uid,
            "PatientID": p.code,
            "PatientName": name.replace(" ", "^", 1),
            "AccessionNumber": order.accession_number,
        },
        title="Kết quả",
    )
    store.upload(pdf)
    skip_existing_changes(s, store)
    pdf_ds = dcmread(BytesIO(pdf))
    ct = [dcmread(BytesIO(b)) for b in blobs]
    return Case(
        p.id,
        p.code,
        name,
        order.id,
        study.id,
        order.study_instance_uid,
        str(ct[0].SeriesInstanceUID),
        [str(d.SOPInstanceUID) for d in ct],
        doc.id,
        str(pdf_ds.SeriesInstanceUID),
        str(pdf_ds.SOPInstanceUID),
    )


def build_world(tmp: Path, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    settings = EmrSettings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'emr.sqlite3'}", secret_key_file=tmp / "secret_key"
    )
    upgrade_database(settings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        deps = {code: encounters.ensure_department(s, code, f"Khoa {code}") for code in ("K01", "K19", "K48")}
        s.commit()
        users: dict[str, User] = {}
        for username, (role, dep) in ROLES.items():
            users[username] = create_user(
                s,
                SETUP,
                username,
                PASSWORD,
                role,
                f"Người dùng {username}",
                practising_cert_no=f"{len(users)}/HCM-CCHN" if role != "admin" else None,
                department_id=deps[dep].id if dep else None,
            )
        skip_existing_changes(s, orthanc)
        a = _case(s, orthanc, users, "Nguyễn Thị Hồng Nhung", "K19", "bs_a")
        b = _case(s, orthanc, users, "Trần Văn Đức", "K01", "bs_b")
        # B's visit and images are old: outside the radiologist's and the technician's care.
        long_ago = utcnow() - timedelta(days=60)
        s.get(Study, b.study_id).first_seen_at = long_ago
        s.get(ImagingOrder, b.order_id).scheduled_at = long_ago
        s.get(ImagingOrder, b.order_id).ordered_at = long_ago
        s.get(Document, b.doc_id).created_at = long_ago
        s.commit()
        # A patient only the PACS knows (never linked).
        stranger_uid = generate_uid()
        for blob in make_ct_series(
            patient_id="NGOAI-999",
            patient_name="Phạm^Người Lạ",
            birth_date="19500101",
            sex="F",
            accession_number="X999",
            study_instance_uid=stranger_uid,
            slices=1,
        ):
            orthanc.upload(blob)
        skip_existing_changes(s, orthanc)
        assert s.scalar(select(Encounter.id).where(Encounter.patient_id == a.patient_id)) is not None
    app = create_app(
        settings, store=orthanc, test_config={"EMR_ENGINE": engine}, extensions=[viewer_extension(orthanc)]
    )
    with serve(app) as base:
        app.extensions["emr.settings"] = replace(settings, public_url=base)
        yield AccessWorld(base, app, sessions, a, b, stranger_uid, "NGOAI-999")
    engine.dispose()


def http_login(base: str, username: str) -> requests.Session:
    return helpers.http_login(base, username, PASSWORD)


def print_slip(world: AccessWorld, http: requests.Session, case: Case) -> requests.Response:
    token = csrf_from(http, f"{world.base}/reading/studies/{case.study_id}/share")
    return http.post(
        f"{world.base}/reading/studies/{case.study_id}/share", data={"csrf_token": token, "days": "5"}, timeout=20
    )


def share_token(world: AccessWorld, slip_pdf: bytes) -> str:
    """Unlock the slip's link with its PIN like the patient's phone does; the viewer token it hands out."""
    import subprocess

    text = subprocess.run(["pdftotext", "-", "-"], input=slip_pdf, capture_output=True, check=True).stdout.decode()
    url = re.search(re.escape(world.base) + r"/s/[a-z0-9]+", text).group(0)  # type: ignore[union-attr]
    pin = re.search(r"Mã PIN: (\d{6})", text).group(1)  # type: ignore[union-attr]
    phone = requests.Session()
    token = csrf_from(phone, url)
    assert phone.post(url, data={"csrf_token": token, "pin": pin}, allow_redirects=False, timeout=10).status_code == 302
    page = phone.get(url, timeout=10).text
    viewer = re.search(r'id="open-viewer" href="([^"]+)"', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    return re.search(r"token=([^&]+)", viewer).group(1)  # type: ignore[union-attr]
