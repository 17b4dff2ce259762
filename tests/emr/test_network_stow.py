"""Issue 15 §1: a facility reached only by DICOMweb gets the study and its signed report by STOW-RS,
through the same outbox delivery as C-STORE; 5xx and connection errors are retried, a 4xx goes to the
dead letters at once with a reason an operator can act on.

Real parts: the receiving archive is a real Orthanc with its DICOMweb plugin and HTTP Basic
credentials (the site's), the sending archive the session's Orthanc, the outbox's run_due on SQLite.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from emr import EmrSettings, upgrade_database
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.core.exceptions import ValidationFailed
from emr.db import make_engine, make_session_factory
from emr.imaging import orders
from emr.models import NetworkTransfer, OutboxMessage, Study
from emr.network import delivery, outgoing
from emr.network.sites import SiteIn, create_site, uses_stow
from emr.outbox import run_due
from emr.outbox.delivery import HandlerContext
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing.dicom_pdf import encapsulate_pdf, extract_pdf
from storage import OrthancProcess, OrthancStore
from tests.conftest import make_orthanc_settings
from tests.dicom_factory import ct_instance
from tests.helpers import free_port

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """The other facility's archive: DICOMweb at /dicom-web/, HTTP Basic (generated credentials)."""
    proc = OrthancProcess(make_orthanc_settings(tmp_path_factory.mktemp("stow-receiver")))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("stow-emr")
    settings = EmrSettings(data_dir=tmp, database_url=f"sqlite:///{tmp}/emr.sqlite3", secret_key_file=tmp / "key")
    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings.database_url))
    delivery.register_outbox_handler(factory, delivery.Transport(store=orthanc, send_dicom=_no_dicom))
    return {"settings": settings, "factory": factory, "store": orthanc}


def _no_dicom(*_: Any, **__: Any) -> tuple[int, list[tuple[str, str]]]:
    raise AssertionError("a STOW-RS site must not get C-STORE")


def _url(proc: OrthancProcess) -> str:
    return f"http://127.0.0.1:{proc.settings.http_port}/dicom-web"


def _order_with_study(world: dict[str, Any], name: str, cccd: str, slices: int = 2,
                      report: bytes | None = None) -> tuple[Actor, int, str]:
    with world["factory"]() as s:
        dep = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        user = create_user(s, SETUP, f"bs_{cccd}", "correct horse battery", "physician", "BS", department_id=dep.id)
        doctor = Actor(user.id, user.username, "physician", None)
        patient = patients.create_patient(s, SETUP, {"full_name": name, "birth_date": "1970-01-01",
                                                     "sex": "M" if cccd[3] == "0" else "F",
                                                     "cccd": cccd})
        encounters.create_encounter(s, doctor, {"patient_id": patient.id, "kind": "outpatient",
                                                "department_code": "K01"})
        order = orders.create_order(s, doctor, {"patient_id": patient.id, "modality": "CT",
                                                "procedure_name": "CT sọ não"})
        uid = order.study_instance_uid
        for n in range(slices):
            result = world["store"].upload(ct_instance(patient_id=patient.code, accession=order.accession_number,
                                                       study_uid=uid, instance_number=n + 1))
        if report is not None:  # the signed report, as the signing workflow archives it
            world["store"].upload(encapsulate_pdf(report, {"StudyInstanceUID": uid, "PatientID": patient.code,
                                                           "PatientName": name, "AccessionNumber": ""}))
        s.add(Study(orthanc_id=result.study_id, study_instance_uid=uid, order_id=order.id, patient_id=patient.id,
                    state="linked"))
        s.commit()
        return doctor, order.id, uid


def _site(world: dict[str, Any], name: str, ae: str, url: str, user: str, password: str) -> int:
    with world["factory"]() as s:
        site, _ = create_site(s, SETUP, SiteIn(name, ae, "127.0.0.1", "", None, url, None, None,
                                               dicomweb_username=user, dicomweb_password=password))
        assert site.port == 0 and site.send_by == "stow" and uses_stow(site)
        return site.id


def _run(world: dict[str, Any]) -> None:
    run_due(HandlerContext(world["factory"], world["settings"], world["store"], worker="test"), limit=10)


def _message(world: dict[str, Any], transfer_id: int) -> tuple[NetworkTransfer, OutboxMessage]:
    with world["factory"]() as s:
        transfer = s.get(NetworkTransfer, transfer_id)
        message = next(m for m in s.scalars(select(OutboxMessage))
                       if (m.payload or {}).get("transfer_id") == transfer_id)
        s.expunge_all()
        return transfer, message


def test_site_form_rules_for_stow(world: dict[str, Any]) -> None:
    with world["factory"]() as s:
        with pytest.raises(ValidationFailed) as err:  # no DICOM port and no DICOMweb: nowhere to send
            create_site(s, SETUP, SiteIn("Nơi không gửi được", "NOWHERE", "127.0.0.1", "", None, None))
        assert "port" in err.value.fields
        with pytest.raises(ValidationFailed) as err:
            create_site(s, SETUP, SiteIn("STOW thiếu URL", "NOURL", "127.0.0.1", 104, None, None, send_by="stow"))
        assert "dicomweb_url" in err.value.fields
        site, _ = create_site(s, SETUP, SiteIn("Chọn STOW", "CHOSEN", "127.0.0.1", 104, None, "http://h/dicom-web",
                                               send_by="stow"))
        assert site.port == 104 and uses_stow(site)


def test_a_study_goes_by_stow_rs_with_the_sites_credentials(world: dict[str, Any], receiver: OrthancProcess) -> None:
    creds = receiver.credentials
    site_id = _site(world, "Bệnh viện tỉnh D (DICOMweb)", "SITED", _url(receiver), creds.username, creds.password)
    pdf = b"%PDF-1.4\n% signed report stand-in\n%%EOF\n"
    doctor, order_id, uid = _order_with_study(world, "Phan Văn Đức", "079070009001", slices=3, report=pdf)
    with world["factory"]() as s:
        transfer_id = outgoing.send_study(s, doctor, order_id, site_id).id
    _run(world)
    transfer, message = _message(world, transfer_id)
    assert transfer.status == "sent" and transfer.instances_sent == 4, transfer.error
    assert message.status == "sent"
    store = receiver.store()
    found = store.find_studies(study_instance_uid=uid, limit=5)
    assert len(found) == 1
    series = store.study_series(found[0].orthanc_id)
    by_modality: dict[str, list[str]] = {}
    for x in series:
        by_modality.setdefault(x["MainDicomTags"]["Modality"], []).extend(x["Instances"])
    assert len(by_modality["CT"]) == 3 and len(by_modality["DOC"]) == 1
    assert extract_pdf(store.instance_file(by_modality["DOC"][0])) == pdf  # the report, byte for byte
    ds = dcmread(io.BytesIO(store.instance_file(by_modality["CT"][0])))
    assert str(ds.AccessionNumber) == ""  # our accession numbers mean nothing there
    # Sending again (a crash after the POST) stores nothing twice.
    with world["factory"]() as s:
        s.get(NetworkTransfer, transfer_id).status = "waiting"  # type: ignore[union-attr]
        s.commit()
        delivery.deliver(s, transfer_id, delivery.Transport(store=world["store"], send_dicom=_no_dicom))
    assert sum(len(x["Instances"]) for x in store.study_series(found[0].orthanc_id)) == 4


def test_wrong_credentials_go_to_the_dead_letters_with_the_reason(world: dict[str, Any],
                                                                 receiver: OrthancProcess) -> None:
    site_id = _site(world, "Bệnh viện tỉnh E", "SITEE", _url(receiver), receiver.credentials.username, "sai-mat-khau")
    doctor, order_id, _ = _order_with_study(world, "Lý Thị Mai", "079170009002", slices=1)
    with world["factory"]() as s:
        transfer_id = outgoing.send_study(s, doctor, order_id, site_id).id
    _run(world)
    transfer, message = _message(world, transfer_id)
    assert message.status == "dead", message.last_error
    assert "HTTP 401" in (message.last_error or "") and "credentials refused" in (message.last_error or "")
    assert transfer.status == "failed" and "STOW-RS" in (transfer.error or "")


def test_an_archive_that_does_not_answer_is_retried(world: dict[str, Any]) -> None:
    site_id = _site(world, "Bệnh viện tỉnh F", "SITEF", f"http://127.0.0.1:{free_port()}/dicom-web", "u", "p")
    doctor, order_id, _ = _order_with_study(world, "Đinh Văn Tú", "079070009003", slices=1)
    with world["factory"]() as s:
        transfer_id = outgoing.send_study(s, doctor, order_id, site_id).id
    _run(world)
    transfer, message = _message(world, transfer_id)
    assert message.status == "failed" and message.attempts == 1  # will retry with back-off
    assert "ConnectionError" in (message.last_error or "")
    assert transfer.status == "failed"
