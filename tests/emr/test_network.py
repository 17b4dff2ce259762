"""Provincial network logic (issue 15) on a real database, without HTTP between sites:
patient matching, idempotent receiving, a transfer to a site that does not answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.exceptions import ValidationFailed
from emr.db import make_session_factory
from emr.imaging import orders
from emr.models import AuditEntry, ImagingOrder, NetworkReceived, NetworkSite, NetworkTransfer, Study
from emr.network import delivery, incoming, outgoing
from emr.network.matching import match_patient
from emr.network.sites import SiteIn, create_site
from emr.outbox import run_due
from emr.outbox.delivery import HandlerContext
from emr.patients import encounters
from emr.patients import service as patients
from tests.helpers import free_port

from .conftest import World, csrf_token, login, outpatient_visit, patient_data

SETUP = Actor(None, "setup", "admin", None)


def _site(session: Any, name: str = "Bệnh viện tỉnh B", ae: str = "SITEB", url: str | None = None) -> NetworkSite:
    site, _ = create_site(session, SETUP, SiteIn(name, ae, "127.0.0.1", 11112, url, None, None, "t" * 40),
                          inbound_token=f"{ae}-token-" + "x" * 30)
    return site


def _doctor(session: Any) -> Actor:
    from emr.access.users import create_user

    dep = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
    user = create_user(session, SETUP, "bs_net", "correct horse battery", "physician", "BS Mạng", department_id=dep.id)
    session.commit()
    return Actor(user.id, user.username, "physician", None)


def _patient(session: Any, name: str, born: str, cccd: str | None = None) -> Any:
    # Namesakes on purpose (matching must never guess between them): the desk confirmed each is another person.
    return patients.create_patient(session, SETUP, {"full_name": name, "birth_date": born, "sex": "F", "cccd": cccd,
                                                    "confirm_new_person": True})


def test_matching_by_cccd_then_by_name_and_birth_date_never_a_guess(session: Any) -> None:
    hoa = _patient(session, "Nguyễn Thị Hoa", "1980-02-03", "079180001234")
    lan = _patient(session, "Trần Thị Lan", "1975-06-07")
    assert match_patient(session, "079180001234", "Tên Khác", None) == (hoa, "cccd")
    # Name folded (diacritics, case) + birth date, when exactly one patient has them.
    assert match_patient(session, None, "TRAN THI LAN", dt.date(1975, 6, 7)) == (lan, "name_birth")
    assert match_patient(session, None, "Trần Thị Lan", dt.date(1975, 6, 8)) == (None, None)
    _patient(session, "Trần Thị Lan", "1975-06-07")  # a namesake born the same day: ambiguous
    assert match_patient(session, None, "Trần Thị Lan", dt.date(1975, 6, 7)) == (None, None)
    # A different CCCD on the only name match is another person.
    assert match_patient(session, "079180009999", "Nguyễn Thị Hoa", dt.date(1980, 2, 3)) == (None, None)


def test_a_read_request_is_received_once_and_never_takes_over_a_local_order(session: Any) -> None:
    site = _site(session)
    body = {"ref": "41", "study_instance_uid": "1.2.826.0.1.3680043.8.498.77",
            "patient": {"cccd": "079080004321", "full_name": "Lê Văn Minh", "birth_date": "1980-01-01", "sex": "M"},
            "question": "Xuất huyết não?", "urgency": "stat", "modality": "CT", "procedure_name": "CT sọ não",
            "requested_by": "BS. Phạm Hùng"}
    # The images came earlier as a plain transfer (no order here): the read order takes them.
    session.add(Study(orthanc_id="early", study_instance_uid=body["study_instance_uid"], state="unmatched"))
    session.commit()
    first = incoming.receive_read_request(session, site, body)
    again = incoming.receive_read_request(session, site, body)
    assert first == again
    order = session.scalar(select(ImagingOrder).where(ImagingOrder.study_instance_uid == body["study_instance_uid"]))
    assert order.accession_number == first["accession"] and order.urgency == "stat"
    assert order.clinical_info == "Xuất huyết não?"
    early = session.scalar(select(Study).where(Study.orthanc_id == "early"))
    assert (early.order_id, early.state, order.status) == (order.id, "linked", "images_available")
    assert incoming.read_requests_for(session, [order.id]) == {order.id: "Bệnh viện tỉnh B"}
    # A local order already owns a Study UID: another site's request for it is refused.
    local = orders.create_order(session, _doctor(session), {"patient_id": order.patient_id, "modality": "CT",
                                                 "procedure_name": "CT ngực"})
    with pytest.raises(ValidationFailed):
        incoming.receive_read_request(session, site, body | {"ref": "42",
                                                             "study_instance_uid": local.study_instance_uid})
    with pytest.raises(ValidationFailed):
        incoming.receive_read_request(session, site, body | {"ref": "43", "urgency": "yesterday"})


def test_a_site_that_does_not_answer_leaves_the_transfer_failed_with_the_reason(
    session: Any, engine: Any, settings: Any
) -> None:
    site = _site(session, url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    doctor = _doctor(session)
    patient = _patient(session, "Võ Thị Sáu", "1990-09-09", "079190005555")
    encounters.create_encounter(session, doctor, {"patient_id": patient.id, "kind": "outpatient",
                                                  "department_code": "K01"})
    order = orders.create_order(session, doctor, {"patient_id": patient.id, "modality": "CT",
                                                 "procedure_name": "CT bụng"})
    session.add(Study(orthanc_id="o-1", study_instance_uid=order.study_instance_uid, order_id=order.id,
                      patient_id=patient.id, state="linked"))
    session.commit()
    with pytest.raises(ValidationFailed):  # a read request needs its clinical question
        outgoing.request_read(session, doctor, order.id, site.id, "", "routine")
    transfer = outgoing.request_read(session, doctor, order.id, site.id, "Sỏi thận?", "urgent")
    assert transfer.status == "waiting"
    sent: list[Any] = []

    def send_dicom(instances: Any, **_: Any) -> tuple[int, list[tuple[str, str]]]:
        sent.append(instances)
        return 0, []

    sessions = make_session_factory(engine)
    delivery.register_outbox_handler(sessions, delivery.Transport(store=None, send_dicom=send_dicom))
    run_due(HandlerContext(sessions, settings, None, worker="test"), limit=5)
    session.expire_all()
    row = session.get(NetworkTransfer, transfer.id)
    assert row.status == "failed" and "Bệnh viện tỉnh B" in (row.error or "") and row.attempts == 1
    assert not sent  # the request must be accepted before any image goes
    failure = session.scalar(select(AuditEntry).where(AuditEntry.action == "network.read_request.failed"))
    assert failure is not None and failure.outcome == "failure"
    assert [t.id for t in outgoing.transfers_for_patient(session, patient.id)] == [transfer.id]


def _received(session: Session, site: NetworkSite, ref: str, patient_id: int | None, count: int,
              name: str = "Bùi Văn Xa") -> None:
    """``count`` more studies received from ``site`` (Core inserts: newer than every row before them)."""
    session.execute(insert(NetworkReceived), [
        {"kind": "study", "site_id": site.id, "remote_ref": f"{ref}-{i}", "study_instance_uid": f"1.2.826.0.9.{i}",
         "patient_id": patient_id, "patient_name": name, "patient_birth_date": "1970-01-01",
         "match_method": "cccd" if patient_id else None, "modality": "CT", "procedure_name": "CT sọ não"}
        for i in range(count)])
    session.commit()


def _logout(client: FlaskClient) -> None:
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})


def test_the_received_list_never_drops_a_study_in_care_behind_others(client: FlaskClient, session: Session,
                                                                     world: World) -> None:
    """The list is capped (RECEIVED_LIMIT rows) and the care scope is in its query: more than three times
    that many newer rows of a patient outside the physician's care, and rows not matched to a patient yet,
    never push out an older study of a patient in their care; a role not care-scoped gets the newest rows."""
    site = _site(session)
    mine, _visit = outpatient_visit(session, world)  # an open visit in the physician's department
    first = NetworkReceived(kind="study", site_id=site.id, remote_ref="mine", study_instance_uid="1.2.826.0.8.1",
                            patient_id=mine.id, match_method="cccd", modality="CT", procedure_name="CT ngực")
    session.add(first)
    session.add(Study(orthanc_id="o-mine", study_instance_uid=first.study_instance_uid, state="linked",
                      patient_id=mine.id, link_method="site"))
    session.commit()
    first_id = first.id
    away = patients.create_patient(session, world.actor("records_clerk"),
                                   patient_data(full_name="Bùi Văn Xa", cccd="079190000021", bhyt_number=None))
    session.commit()
    limit = incoming.RECEIVED_LIMIT
    _received(session, site, "away", away.id, 3 * limit + 1)
    _received(session, site, "stranger", None, 3, name="Người Lạ Chưa Khớp")
    session.rollback()
    login(client, "physician1")
    page = client.get("/network/received").get_data(as_text=True)
    assert f'data-received="{first_id}"' in page and page.count("data-received=") == 1
    assert "Nguyễn Thị Hồng Nhung" in page and f"/network/received/{first_id}/view" in page  # images here: a link
    assert "Bùi Văn Xa" not in page and "Người Lạ Chưa Khớp" not in page
    _logout(client)
    login(client, "nurse1")  # not care-scoped: the newest rows, the unmatched ones among them
    page = client.get("/network/received").get_data(as_text=True)
    assert page.count("data-received=") == limit and "Người Lạ Chưa Khớp" in page and "Bùi Văn Xa" in page
    assert f'data-received="{first_id}"' not in page


def test_the_received_list_is_audited_once_per_listing_with_what_it_showed(client: FlaskClient, session: Session,
                                                                          world: World) -> None:
    site = _site(session)
    mine, _visit = outpatient_visit(session, world)
    _received(session, site, "mine", mine.id, 2)
    _received(session, site, "stranger", None, 1, name="Người Lạ Chưa Khớp")
    session.rollback()
    login(client, "physician1")
    assert client.get("/network/received").status_code == 200
    assert client.get("/network/received?all=1&patient_id=1").status_code == 200
    _logout(client)
    login(client, "nurse1")
    assert client.get("/network/received").status_code == 200
    _logout(client)
    login(client, "admin1")
    assert client.get("/network/received").status_code == 403  # a refusal, never a listing
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "network.received.list")
                           .order_by(AuditEntry.id)).all()
    assert [(r.username, r.outcome, r.object_type, r.patient_id) for r in rows] == [
        ("physician1", "success", "network_received", None), ("physician1", "success", "network_received", None),
        ("nurse1", "success", "network_received", None)]  # one row per listing, not one per patient
    assert all('"list": "received"' in r.details for r in rows)
    assert ['"results": 2' in r.details for r in rows] == [True, True, False] and '"results": 3' in rows[2].details
    denied = session.scalars(select(AuditEntry.action).where(AuditEntry.username == "admin1",
                                                             AuditEntry.outcome == "denied")).all()
    assert denied == ["network.received"]
