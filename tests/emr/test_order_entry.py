"""What a person types on an imaging order: a scheduled time a modality can use, a station that exists.

A new-user walkthrough ordered a CT for 01/01/1900 and for 31/12/9999: both were accepted, the modality
worklist answered ScheduledProcedureStepStartDate 19000101 / 99991231 and no technician's list of the
day ever showed them. The station field took ``ct 01 !@#``. Now the web form and the JSON API keep the
scheduled time between the start of today and the same day next year (facility time), the station is a
DICOM AE title (PS3.5 VR AE) and, when the gateway admits its modalities by name
(``FILMLESS_GATEWAY_ALLOWED``), one of them.
"""

from __future__ import annotations

import dataclasses
import html
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.access.users import create_token
from emr.core.clock import local_today, to_local, to_utc
from emr.i18n import t
from emr.imaging import orders
from emr.imaging.worklist import query_worklist
from emr.models import ImagingOrder
from emr.patients import encounters
from emr.patients import service as patients
from filmless.settings import load

from .conftest import ADMIN_ACTOR, World, csrf_token, login, patient_data


def _count(session: Session) -> int:
    session.expire_all()
    n = session.scalar(select(func.count(ImagingOrder.id))) or 0
    session.commit()  # end the read: on SQLite it would hold the app's writers back
    return n


def _patient(session: Session, world: World) -> int:
    """A patient waiting in physician1's care (an open visit of theirs): the order joins that visit."""
    p = patients.create_patient(session, world.actor("physician"), patient_data())
    encounters.create_encounter(
        session,
        world.actor("records_clerk"),
        {"patient_id": p.id, "kind": "outpatient", "department_code": "K19", "attending_username": "physician1"},
    )
    session.commit()
    return p.id


def _post(client: FlaskClient, pid: int, **fields: str) -> tuple[int, str]:
    token = csrf_token(client, f"/orders/new/{pid}")
    r = client.post(f"/orders/new/{pid}", data={"modality": "CT", "procedure_name": "CT sọ não không tiêm",
                                                 "urgency": "routine", "csrf_token": token, **fields})
    return r.status_code, html.unescape(r.get_data(as_text=True))


def _limits(today: date) -> str:
    last = today.replace(year=today.year + 1)
    return t("orders.error.scheduled_range", start=f"00:00 {today:%d/%m/%Y}", end=f"23:59 {last:%d/%m/%Y}")


def test_the_form_refuses_a_scheduled_time_outside_the_window_and_says_the_limits(
    client: FlaskClient, world: World, session: Session
) -> None:
    pid = _patient(session, world)
    login(client, "physician1")
    today = local_today()
    yesterday = today - timedelta(days=1)
    too_far = today.replace(year=today.year + 1) + timedelta(days=1)
    # Year 1 and year 9999 are a zone shift away from what Python can hold (it was a 500).
    for typed in ("1900-01-01T08:00", "9999-12-31T23:59", "0001-01-01T00:00", f"{yesterday}T23:59",
                  f"{too_far}T00:00"):
        before = _count(session)
        status, page = _post(client, pid, scheduled_at=typed)
        assert status == 422, typed
        assert _limits(today) in page, typed  # the Vietnamese message names both limits
        assert f'value="{typed}"' in page  # what was typed is shown again to be corrected
        assert _count(session) == before
    # The start of today (an exam this morning) and the last day next year are accepted, in facility time.
    last = today.replace(year=today.year + 1)
    for typed in (f"{today}T00:00", f"{last}T23:59"):
        status, page = _post(client, pid, scheduled_at=typed)
        assert status == 302, page[:2000]
    session.expire_all()
    placed = sorted(to_local(o.scheduled_at) for o in orders.list_orders(session, pid))
    session.commit()
    assert placed == [datetime.combine(today, datetime.min.time()), datetime.combine(last, datetime.min.time())
                      + timedelta(hours=23, minutes=59)]
    # Nothing from 1900 or 9999 reached the modality worklist.
    dates = {i["ScheduledProcedureStepStartDate"] for i in query_worklist(session, {"Modality": "CT"})}
    session.commit()
    assert dates == {f"{today:%Y%m%d}", f"{last:%Y%m%d}"}


def test_the_form_input_carries_the_window(client: FlaskClient, world: World, session: Session) -> None:
    pid = _patient(session, world)
    login(client, "physician1")
    page = client.get(f"/orders/new/{pid}").get_data(as_text=True)
    today = local_today()
    assert f'min="{today}T00:00"' in page and f'max="{today.replace(year=today.year + 1)}T23:59"' in page
    assert 'list="stations"' not in page  # the gateway admits any AE title: no list to offer


@pytest.mark.parametrize("station", ["CT\\01", "CT\x0701", "CT\n01", "   ", "CT0123456789ABCDE", "CT01é"])
def test_the_station_must_be_a_dicom_ae_title(
    client: FlaskClient, world: World, session: Session, station: str
) -> None:
    pid = _patient(session, world)
    login(client, "physician1")
    status, page = _post(client, pid, station_ae_title=station)
    if not station.strip():  # only spaces: the field is empty, the order is for any station of its kind
        assert status == 302
        assert orders.list_orders(session, pid)[0].station_ae_title is None
        session.commit()
        return
    assert status == 422, station
    assert t("orders.error.station_format") in page
    assert _count(session) == 0


def test_the_station_is_one_the_gateway_knows_when_it_names_them(
    app: Flask, client: FlaskClient, world: World, session: Session
) -> None:
    app.extensions["emr.settings"] = dataclasses.replace(app.extensions["emr.settings"],
                                                         modality_stations=("CT01", "MR01"))
    pid = _patient(session, world)
    login(client, "physician1")
    page = client.get(f"/orders/new/{pid}").get_data(as_text=True)
    assert '<datalist id="stations"><option value="CT01"></option><option value="MR01"></option>' in page
    for station in ("ct 01 !@#", "CT02", "ct01"):  # valid AE titles, but no machine of this gateway's
        status, page = _post(client, pid, station_ae_title=station)
        assert status == 422
        assert t("orders.error.station_unknown", station=station, stations="CT01, MR01") in page
    assert _count(session) == 0
    assert _post(client, pid, station_ae_title="CT01")[0] == 302
    assert _post(client, pid)[0] == 302  # left empty: any CT may perform it
    assert sorted(o.station_ae_title or "" for o in orders.list_orders(session, pid)) == ["", "CT01"]
    session.commit()


def test_the_api_checks_the_same(app: Flask, client: FlaskClient, world: World, session: Session) -> None:
    app.extensions["emr.settings"] = dataclasses.replace(app.extensions["emr.settings"],
                                                         modality_stations=("CT01",))
    pid = _patient(session, world)
    token = create_token(session, ADMIN_ACTOR, world.users["physician"].id, "tests")
    session.commit()
    h = {"Authorization": f"Bearer {token}"}
    body: dict[str, Any] = {"patient_id": pid, "modality": "CT", "procedure_name": "CT sọ não"}
    today = local_today()
    # Offsets count: half an hour before today's facility midnight, written in UTC, is before the window.
    early = (to_utc(datetime.combine(today, time.min)) - timedelta(minutes=30)).isoformat() + "+00:00"
    for bad, field in (({"scheduled_at": "1900-01-01T00:00:00"}, "scheduled_at"),
                       ({"scheduled_at": "0001-01-01T00:00:00"}, "scheduled_at"),
                       ({"scheduled_at": "9999-12-31T00:00:00+07:00"}, "scheduled_at"),
                       ({"scheduled_at": early}, "scheduled_at"),
                       ({"station_ae_title": "ct 01 !@#"}, "station_ae_title"),
                       ({"station_ae_title": "CT\\01"}, "station_ae_title")):
        r = client.post("/api/orders", json={**body, **bad}, headers=h)
        answer: Any = r.json
        assert r.status_code == 422, (bad, answer)
        assert field in answer["fields"], answer
    answer = client.post("/api/orders", json={**body, "scheduled_at": "1900-01-01T00:00:00"}, headers=h).json
    assert answer["params"]["scheduled_at"]["start"] == f"00:00 {today:%d/%m/%Y}"
    assert _count(session) == 0
    r = client.post("/api/orders", json={**body, "station_ae_title": " CT01 "}, headers=h)
    answer = r.json
    assert r.status_code == 201 and answer["station_ae_title"] == "CT01"  # non-significant spaces dropped


def test_the_window_is_the_facility_day() -> None:
    # 20:00 UTC on 7 Dec is 03:00 on 8 Dec in Vietnam: the window starts at 8 Dec 00:00 there (7 Dec 17:00 UTC).
    start, end = orders.schedule_window(datetime(2026, 12, 7, 20, 0))
    assert (start, end) == (datetime(2026, 12, 7, 17, 0), datetime(2027, 12, 8, 17, 0))
    # From 29 February the last day is 28 February next year.
    start, end = orders.schedule_window(datetime(2028, 2, 29, 3, 0))
    assert (start, end) == (datetime(2028, 2, 28, 17, 0), datetime(2029, 2, 28, 17, 0))


def test_orders_not_typed_by_a_person_keep_their_time(world: World, session: Session) -> None:
    """The demo places orders with the time they carry (the HIS's are held to the window: tests/emr/test_hl7.py)."""
    pid = _patient(session, world)
    o = orders.create_order(session, world.actor("physician"),
                            {"patient_id": pid, "modality": "CT", "procedure_name": "CT ngực",
                             "scheduled_at": "2026-11-23T09:30:00"})
    assert to_local(o.scheduled_at) == datetime(2026, 11, 23, 9, 30)


@pytest.mark.parametrize(("allowed", "stations"), [
    ("CT01@10.1.2.3,MR01@10.1.2.4,CT01@10.1.2.5", ("CT01", "MR01")),
    ("US01", ("US01",)),
    ("CT01@10.1.2.3,*@127.0.0.0/8", ()),  # a "*" entry admits any AE title: any station may exist
    (None, ()),  # the default: any AE title from this machine
])
def test_the_settings_take_the_stations_from_the_gateway(allowed: str | None, stations: tuple[str, ...]) -> None:
    env = {"FILMLESS_DATA_DIR": "/tmp/filmless-test-stations"}
    if allowed is not None:
        env["FILMLESS_GATEWAY_ALLOWED"] = allowed
    assert load(env).emr.modality_stations == stations


def test_the_worklist_never_offers_a_far_date(client: FlaskClient, world: World, session: Session) -> None:
    """The walkthrough's check, through the form: findscu's date key finds nothing from 1900 or 9999."""
    pid = _patient(session, world)
    login(client, "physician1")
    for typed in ("1900-01-01T08:00", "9999-12-31T08:00"):
        assert _post(client, pid, scheduled_at=typed)[0] == 422
    for day in ("19000101", "99991231"):
        assert query_worklist(session, {"ScheduledProcedureStepStartDate": day}) == []
    session.commit()


def test_a_worklist_query_for_the_last_dicom_day_answers(world: World, session: Session) -> None:
    """findscu -k ScheduledProcedureStepStartDate=99991231 made the EMR's worklist provider raise
    OverflowError (the day after 31/12/9999); it now answers, with nothing scheduled that day."""
    pid = _patient(session, world)
    orders.create_order(session, world.actor("physician"),
                        {"patient_id": pid, "modality": "CT", "procedure_name": "CT"})
    assert query_worklist(session, {"ScheduledProcedureStepStartDate": "99991231"}) == []
    assert len(query_worklist(session, {"ScheduledProcedureStepStartDate": "-99991231"})) == 1


def test_the_chart_shows_when_each_order_is_scheduled(client: FlaskClient, world: World, session: Session) -> None:
    pid = _patient(session, world)
    login(client, "physician1")
    when = f"{local_today() + timedelta(days=2)}T09:30"
    assert _post(client, pid, scheduled_at=when)[0] == 302
    page = html.unescape(client.get(f"/patients/{pid}").get_data(as_text=True))
    day = local_today() + timedelta(days=2)
    assert f'<small class="scheduled">{t("orders.scheduled_on", at=f"{day:%d/%m/%Y} 09:30")}</small>' in page
