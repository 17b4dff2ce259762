"""Issue 15 §1, "filmless and any PACS": a registered facility's PACS pushes a study by C-STORE with no
announcement from a filmless EMR. It lands in "received from other facilities", named by its sender,
matched by CCCD (PatientID or OtherPatientIDs) or by name + birth date when exactly one patient has
them; a local modality's study stays in reconciliation.

Real parts: DCMTK storescu calling as the site's AE, a real gateway admitting it from the EMR's
registry, a real Orthanc of this module, the EMR's study linker, the Flask app on SQLite.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from emr import EmrSettings, create_app, network_peer_provider, upgrade_database
from emr.access.audit import Actor
from emr.access.login_guard import LoginGuard
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.imaging import orders
from emr.imaging.linker import Linker
from emr.models import AuditEntry, NetworkReceived, Study
from emr.network.from_pacs import dicom_identity
from emr.network.sites import SiteIn, create_site
from emr.patients import encounters
from emr.patients import service as patients
from pacs_gateway import Gateway
from storage import OrthancProcess
from tests.conftest import make_orthanc_settings
from tests.dicom_factory import ct_instance
from tests.helpers import wait_for
from tests.pacs_gateway.conftest import dcmtk, gateway_settings

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed")

PASSWORD = "correct horse battery staple"
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
SITE = "Bệnh viện Đa khoa tỉnh B"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("from-pacs")
    settings = EmrSettings(data_dir=tmp, database_url=f"sqlite:///{tmp}/emr.sqlite3", secret_key_file=tmp / "key")
    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings.database_url))
    with factory() as s:
        create_user(s, SETUP, "hoso", PASSWORD, "records_clerk", "Văn thư")
        create_user(s, SETUP, "bs_khac", PASSWORD, "physician", "BS Khác")
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        doctor = create_user(s, SETUP, "bs_k01", PASSWORD, "physician", "BS Khoa Khám", department_id=k01.id)
        hoa = patients.create_patient(s, SETUP, {"full_name": "Nguyễn Thị Hoa", "birth_date": "1980-02-03",
                                                 "sex": "F", "cccd": "079180001234"})
        lan = patients.create_patient(s, SETUP, {"full_name": "Trần Thị Lan", "birth_date": "1975-06-07", "sex": "F"})
        for _ in range(2):  # two patients with one name and birth date: never a guess
            patients.create_patient(s, SETUP, {"full_name": "Lê Văn Nam", "birth_date": "1990-01-01", "sex": "M",
                                               "confirm_new_person": True})
        site, _ = create_site(s, SETUP, SiteIn(SITE, "PACSB", "127.0.0.1", 104, None, None, None, None))
        as_doctor = Actor(doctor.id, doctor.username, "physician", None)
        encounters.create_encounter(s, as_doctor, {"patient_id": hoa.id, "kind": "outpatient",
                                                   "department_code": "K01"})
        # A tele-radiology read this site was asked for (as incoming.receive_read_request leaves it).
        order = orders.create_order(s, as_doctor, {"patient_id": hoa.id, "modality": "CT",
                                                   "procedure_name": "CT ngực"})
        study = Study(orthanc_id="x" * 44, study_instance_uid=order.study_instance_uid, state="linked",
                      order_id=order.id, patient_id=hoa.id, link_method="study_uid")
        s.add(study)
        s.add(NetworkReceived(kind="read_request", site_id=site.id, remote_ref="5", patient_id=hoa.id,
                              study_instance_uid=order.study_instance_uid, order_id=order.id, question="?"))
        s.commit()
        ids = {"hoa": hoa.id, "lan": lan.id, "read_study": study.id}
    orthanc = OrthancProcess(make_orthanc_settings(tmp / "orthanc"))
    orthanc.start()
    store = orthanc.store()
    gw = Gateway(gateway_settings(spool_dir=tmp / "spool", allowed_peers=("CT01@127.0.0.1",)), store,
                 extra_peers=network_peer_provider(settings))
    gw.start()
    app = create_app(settings, test_config={"TESTING": True})
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    try:
        yield {"settings": settings, "factory": factory, "store": store, "gw": gw, "app": app,
               "linker": Linker(settings, store), "tmp": tmp, **ids}
    finally:
        gw.stop()
        orthanc.stop()


def _send(world: dict[str, Any], aet: str, name: str, **tags: Any) -> str:
    uid = generate_uid()
    path = world["tmp"] / f"{uid}.dcm"
    path.write_bytes(ct_instance(patient_id=tags.pop("patient_id", "BN-0001"), patient_name=name, accession="",
                                 study_uid=uid))
    if tags:
        from pydicom import dcmread

        ds = dcmread(path)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)
    done = dcmtk("storescu", "-aet", aet, "-aec", "FILMLESS", "127.0.0.1", str(world["gw"].port), str(path),
                 timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return uid


def _received(world: dict[str, Any], uid: str) -> NetworkReceived | None:
    with world["factory"]() as s:
        return s.scalar(select(NetworkReceived).where(NetworkReceived.study_instance_uid == uid))


def _login(world: dict[str, Any], username: str) -> FlaskClient:
    app = world["app"]
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 302
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    return client


def test_dicom_identity_reads_cccd_from_patient_id_or_other_ids() -> None:
    assert dicom_identity({"PatientID": "079180001234", "PatientName": "NGUYEN^HOA^THI",
                           "PatientBirthDate": "19800203", "PatientSex": "F"})[:2] == ("079180001234", "NGUYEN THI HOA")
    assert dicom_identity({"PatientID": "BN1", "OtherPatientIDs": "X9\\079180001234"})[0] == "079180001234"
    assert dicom_identity({"PatientID": "BN1", "OtherPatientIDsSequence": [{"PatientID": "079180001234"}]})[0] \
        == "079180001234"
    assert dicom_identity({"PatientID": "0791800012345", "PatientBirthDate": "1980"})[0:3:2] == (None, None)


def test_a_study_pushed_by_a_registered_pacs_lands_in_the_received_list(world: dict[str, Any]) -> None:
    by_cccd = _send(world, "PACSB", "NGUYEN^HOA", patient_id="HIS-77", OtherPatientIDs="079180001234",
                    PatientBirthDate="19800203")
    by_name = _send(world, "PACSB", "TRAN^LAN^THI", patient_id="HIS-78", PatientBirthDate="19750607")
    ambiguous = _send(world, "PACSB", "LE^NAM^VAN", patient_id="HIS-79", PatientBirthDate="19900101")
    local = _send(world, "CT01", "TRAN^LAN^THI", patient_id="HIS-80", PatientBirthDate="19750607")

    def settled() -> bool:
        world["linker"].run_once()
        with world["factory"]() as s:
            known = set(s.scalars(select(Study.study_instance_uid)))
        # The local study too: the gateway forwards it to Orthanc after acknowledging it.
        return all(_received(world, u) is not None for u in (by_cccd, by_name, ambiguous)) and {
            by_cccd, by_name, ambiguous, local} <= known

    wait_for(settled, timeout=40, interval=0.5, what="the three studies from PACSB received, all four linked")

    row = _received(world, by_cccd)
    assert row is not None and row.patient_id == world["hoa"] and row.match_method == "cccd"
    assert row.patient_cccd == "079180001234"
    row = _received(world, by_name)
    assert row is not None and row.patient_id == world["lan"] and row.match_method == "name_birth"
    row = _received(world, ambiguous)
    assert row is not None and row.patient_id is None and row.match_method is None
    assert _received(world, local) is None  # a local modality is not another facility

    expected = {str(r.id) for r in (_received(world, by_cccd), _received(world, by_name)) if r is not None}
    with world["factory"]() as s:
        studies = {st.study_instance_uid: st for st in s.scalars(select(Study))}
        assert studies[by_cccd].state == "linked" and studies[by_cccd].patient_id == world["hoa"]
        assert studies[by_cccd].link_method == "site"
        assert studies[ambiguous].state == "unmatched" and studies[local].state == "unmatched"
        audits = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "network.study.receive")))
        assert {a.object_id for a in audits} >= expected and len(expected) == 2
        assert all(a.username == f"site:{SITE}"[:64] for a in audits)

    page = _login(world, "hoso").get("/network/received")
    assert page.status_code == 200
    assert page.text.count(SITE) >= 3 and "Nguyễn Thị Hoa" in page.text and "LE VAN NAM" in page.text
    # The unmatched row says its images are here and waiting for a patient, with the way to match them.
    unmatched = _received(world, ambiguous)
    assert unmatched is not None
    row_html = re.search(rf'<tr data-received="{unmatched.id}".*?</tr>', page.text, re.S)
    assert row_html and "chờ đối chiếu bệnh nhân" in row_html.group(0) and "Đang chờ ảnh đến" not in row_html.group(0)
    assert "/reconcile/" in row_html.group(0)
    # Care scope as for the rest of the list: a physician with none of these patients in care sees none.
    other = _login(world, "bs_khac").get("/network/received")
    assert other.status_code == 200 and "Nguyễn Thị Hoa" not in other.text and SITE not in other.text

    # A second pass (StableStudy) adds nothing twice.
    world["linker"].run_once()
    with world["factory"]() as s:
        assert len(list(s.scalars(select(NetworkReceived).where(NetworkReceived.kind == "study")))) == 3
    world["pushed"] = _received(world, by_cccd)


def test_the_viewer_page_names_the_facility_that_sent_the_study(world: dict[str, Any]) -> None:
    row = world.get("pushed")
    if row is None:
        pytest.skip("needs the received study of the test above")
    doctor = _login(world, "bs_k01")
    page = doctor.get(f"/network/received/{row.id}/view")
    assert page.status_code == 200
    assert f"Nhận từ {SITE}" in page.text and f"/viewer/?study={row.study_instance_uid}" in page.text
    # The received list opens this page, not the bare viewer.
    assert f"/network/received/{row.id}/view" in doctor.get("/network/received").text
    with world["factory"]() as s:
        seen = s.scalar(select(AuditEntry).where(AuditEntry.action == "network.received.view",
                                                 AuditEntry.object_id == row.study_instance_uid))
        assert seen is not None and seen.patient_id == world["hoa"]
    # Out of care, another role, an unmatched row: refused.
    assert _login(world, "bs_khac").get(f"/network/received/{row.id}/view").status_code == 403
    assert _login(world, "hoso").get(f"/network/received/{row.id}/view").status_code == 403
    with world["factory"]() as s:
        unmatched = s.scalar(select(NetworkReceived.id).where(NetworkReceived.patient_id.is_(None)))
    assert doctor.get(f"/network/received/{unmatched}/view").status_code == 404
    # The reading page of a study another facility sent for a read names it too.
    reading = doctor.get(f"/reading/studies/{world['read_study']}")
    assert reading.status_code == 200 and f"Nhận từ {SITE}" in reading.text
