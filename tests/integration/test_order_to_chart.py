"""End to end: order → findscu sees it in the worklist → MPPS "in progress" →
storescu sends the study → MPPS "completed" → storage commitment → chart shows it.

Real parts only: the EMR (SQLite), the DICOM gateway with the EMR's worklist,
identity and MPPS providers, a real Orthanc, DCMTK findscu/storescu, the
linker. MPPS and storage commitment come from pynetdicom (DCMTK has no SCU
for either), as a modality would send them.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
)

from emr import (
    EmrSettings,
    create_app,
    identity_provider,
    link_new_studies,
    mpps_provider,
    upgrade_database,
    worklist_provider,
)
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.demo.seed import make_ct_series
from emr.imaging import orders
from emr.models import Counter, ImagingOrder, LinkerState
from emr.patients import encounters
from emr.patients import service as patients
from filmless.wiring import viewer_extension
from pacs_gateway import Gateway, GatewaySettings
from storage import OrthancStore
from tests.dicom_factory import commitment_request
from tests.helpers import free_port, wait_for

PASSWORD = "integration-pass-123"


@pytest.fixture
def emr_settings(tmp_path: Path) -> EmrSettings:
    s = EmrSettings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/emr.sqlite3", secret_key_file=tmp_path / "secret_key"
    )
    upgrade_database(s)
    return s


@pytest.fixture
def gateway(emr_settings: EmrSettings, orthanc: OrthancStore, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(
        GatewaySettings(host="127.0.0.1", port=free_port(), spool_dir=tmp_path / "spool", min_free_bytes=0),
        orthanc,
        worklist=worklist_provider(emr_settings),
        identity=identity_provider(emr_settings),
        mpps=mpps_provider(emr_settings),
    )
    gw.start()
    yield gw
    gw.stop()


def _mpps_create(accession: str, study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    step = Dataset()
    step.AccessionNumber = accession
    step.StudyInstanceUID = study_uid
    ds.ScheduledStepAttributesSequence = [step]
    ds.Modality = "CT"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261123"
    ds.PerformedProcedureStepStartTime = "093000"
    return ds


@pytest.mark.slow
def test_order_to_chart(emr_settings: EmrSettings, gateway: Gateway, orthanc: OrthancStore, tmp_path: Path) -> None:
    factory = make_session_factory(make_engine(emr_settings.database_url))
    setup = Actor(None, "setup", "admin", None)
    with factory() as s:
        doctor_user = create_user(s, setup, "bacsi", PASSWORD, "physician", "Nguyễn Văn An")
        doctor = Actor(doctor_user.id, "bacsi", "physician", "127.0.0.1")
        encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        # The session-wide Orthanc holds other tests' studies (other EMR databases count from 1 too).
        start = random.randrange(10**5, 9 * 10**5)
        s.merge(Counter(name="accession", value=start))
        s.merge(Counter(name="patient", value=start))
        s.commit()
        p = patients.create_patient(
            s,
            doctor,
            {"full_name": "Trần Thị Ánh Tuyết", "birth_date": "1962-08-15", "sex": "F", "cccd": "001162000777"},
        )
        order = orders.create_order(
            s, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ não", "station_ae_title": "CT01"}
        )
        # Start the linker at the end of the (shared) Orthanc's feed.
        last = orthanc.changes(since=0, limit=1).last
        while not (page := orthanc.changes(since=last, limit=1000)).done and page.changes:
            last = page.last
        s.merge(LinkerState(id=1, last_seq=page.last))
        s.commit()
        accession, study_uid, patient_code = order.accession_number, order.study_instance_uid, p.code
        order_id = order.id

    # 1. The modality asks the worklist.
    out = tmp_path / "mwl"
    out.mkdir()
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run(
        [
            "findscu",
            "-W",
            "-aet",
            "CT01",
            "-aec",
            gateway.settings.ae_title,
            "--extract",
            "-od",
            str(out),
            "-k",
            "AccessionNumber",
            "-k",
            "PatientName",
            "-k",
            "PatientID",
            "-k",
            "StudyInstanceUID",
            "-k",
            "ScheduledProcedureStepSequence[0].Modality=CT",
            "-k",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
            "-k",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
            "127.0.0.1",
            str(gateway.port),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    answers = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    mine = [a for a in answers if a.AccessionNumber == accession]
    assert len(mine) == 1
    assert str(mine[0].PatientName) == "Trần^Thị Ánh Tuyết" and mine[0].StudyInstanceUID == study_uid

    def order_status() -> str:
        with factory() as s:
            found_order = s.get(ImagingOrder, order_id)
            assert found_order is not None
            return found_order.status

    # 1b. The exam starts: MPPS "IN PROGRESS" moves the order along.
    console = AE(ae_title="CT01")
    console.add_requested_context(ModalityPerformedProcedureStep)
    console.add_requested_context(StorageCommitmentPushModel)
    console.acse_timeout = console.dimse_timeout = console.network_timeout = 15
    reports: list[tuple[int, Dataset]] = []

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information))
        return 0x0000, None

    assoc = console.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    mpps_uid = generate_uid()
    status, _ = assoc.send_n_create(_mpps_create(accession, study_uid), ModalityPerformedProcedureStep, mpps_uid)
    assert int(status.Status) == 0
    wait_for(lambda: order_status() == "in_progress", timeout=30, what="order in progress")

    # 2. The modality sends the study with that accession number (but its own patient ID typing).
    files = tmp_path / "study"
    files.mkdir()
    for i, blob in enumerate(
        make_ct_series(
            patient_id="CT01-TYPO",
            patient_name="TRAN^THI ANH TUYET",
            birth_date="19620815",
            sex="F",
            accession_number=accession,
            study_instance_uid=generate_uid(),
            slices=4,
        )
    ):
        (files / f"{i}.dcm").write_bytes(blob)
    subprocess.run(
        [
            "storescu",
            "-aet",
            "CT01",
            "-aec",
            gateway.settings.ae_title,
            "127.0.0.1",
            str(gateway.port),
            *sorted(str(f) for f in files.iterdir()),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )

    # 2b. The exam ends (MPPS "COMPLETED"); the console asks for storage
    # commitment and hears back, on its association, that all four are kept.
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261123"
    done.PerformedProcedureStepEndTime = "094500"
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
    assert int(status.Status) == 0
    wait_for(lambda: order_status() == "completed", timeout=30, what="order completed")
    sent = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(files.iterdir())]
    transaction = generate_uid()
    request = commitment_request(transaction, [(CTImageStorage, uid) for uid in sent])
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                    "1.2.840.10008.1.20.1.1")
    assert int(status.Status) == 0
    wait_for(lambda: reports, timeout=60, what="the storage commitment report")
    assoc.release()
    event_type, info = reports[0]
    assert event_type == 1 and str(info.TransactionUID) == transaction
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence) == sorted(sent)

    # 3. The linker links it.
    def linked() -> bool:
        with factory() as s:
            return link_new_studies(s, orthanc).linked > 0

    wait_for(linked, timeout=60, interval=0.5, what="the study to be linked")
    found = orthanc.find_studies(accession_number=accession)
    assert len(found) == 1 and found[0].patient_id == patient_code  # identity coerced to the EMR's

    # 4. The chart shows it, with the viewer link.
    app = create_app(emr_settings, store=orthanc, extensions=[viewer_extension(orthanc)])
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert (
        client.post("/login", data={"username": "bacsi", "password": PASSWORD, "csrf_token": token}).status_code == 302
    )
    with factory() as s:
        pid = patients.search_patients(s, doctor, "tran thi anh", audit_search=False)[0].id
    chart = client.get(f"/patients/{pid}").get_data(as_text=True)
    assert f"/viewer/?study={found[0].study_instance_uid}" in chart
    assert "Đã có hình ảnh" in chart
