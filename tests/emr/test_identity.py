"""Identity by CCCD against the national population database (issue 15 §3).

The gateway is the real HTTP stand-in (tests/standins/population.py); the EMR
runs on SQLite and PostgreSQL. The queued check is run here as the outbox
worker runs it (``run_check`` by id).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import EmrSettings, create_app
from emr.access.login_guard import LoginGuard
from emr.core.identity_match import NationalRecord, differences
from emr.db import make_session_factory
from emr.identity import adapter, checks, reconcile
from emr.models import AuditEntry, IdentityCheck, Patient, utcnow
from emr.outbox import HandlerContext, messages_for_patient, run_due
from emr.patients import service as pats
from tests.standins.population import PopulationStandIn, gateway, standin  # noqa: F401  (fixtures)

from .conftest import World, csrf_token, login, patient_data

NHUNG = "079190001234"  # Nguyễn Thị Hồng Nhung, F, 1990-05-17 (patient_data's default)
BINH = "001085004321"  # Trần Văn Bình, M, 1985


def _checks(session: Session, patient_id: int) -> list[IdentityCheck]:
    session.expire_all()
    return list(session.scalars(select(IdentityCheck).where(IdentityCheck.patient_id == patient_id)))


def _register(session: Session, world: World, **over: Any) -> Patient:
    return pats.create_patient(session, world.actor("records_clerk"), patient_data(**over))


def _binh(session: Session, world: World, gateway: PopulationStandIn, national_name: str = "Trần Văn Bình") -> Patient:  # noqa: F811
    gateway.add(BINH, national_name, "1985-03-02", "M")
    return _register(
        session, world, full_name="Trần Văn Binh", birth_date="1985-03-02", sex="M", cccd=BINH, bhyt_number=None
    )


# -- the comparison rule (no I/O) ---------------------------------------------------


def test_names_compare_the_vietnamese_way() -> None:
    def diff(name: str, born: date = date(1990, 5, 17), sex: str = "F", year_only: bool = False) -> list[str]:
        national = NationalRecord(NHUNG, "Nguyễn Thị Hồng Nhung", date(1990, 5, 17), 1990, "F")
        return differences(full_name=name, birth_date=born, birth_year_only=year_only, sex=sex, national=national)

    assert diff("NGUYỄN  THỊ hồng Nhung ") == []  # case and spaces
    assert diff("Nguye\u0302\u0303n Thi\u0323 Ho\u0302\u0300ng Nhung") == []  # decomposed (NFD) input
    assert diff("Nguyen Thi Hong Nhung") == []  # typed without diacritics
    assert diff("Nguyên Thị Hồng Nhung") == ["full_name"]  # different marks: a different name
    assert diff("Nguyễn Thị Hồng Nhu") == ["full_name"]
    assert diff("Nguyễn Thị Hồng Nhung", born=date(1990, 5, 18), sex="M") == ["birth_date", "sex"]
    assert diff("Nguyễn Thị Hồng Nhung", born=date(1990, 1, 1), year_only=True) == []  # year-only: years compared


# -- the adapter's contract against the stand-in ---------------------------------------


def test_adapter_contract(gateway: PopulationStandIn, tmp_path: Path) -> None:  # noqa: F811
    gw = adapter.configured()
    assert gw is not None
    found = gw.lookup(NHUNG)
    assert found == NationalRecord(NHUNG, "Nguyễn Thị Hồng Nhung", date(1990, 5, 17), 1990, "F")
    assert gw.lookup(BINH) is None  # 404: no such citizen
    with pytest.raises(adapter.GatewayError) as wrong:
        replace(gw, credential="not-the-credential").lookup(NHUNG)
    assert wrong.value.transient and "401" in wrong.value.reason
    gateway.people[BINH] = {"cccd": NHUNG, "full_name": "X Y", "birth_date": "1990", "sex": "M"}
    with pytest.raises(adapter.GatewayError) as other:  # an answer about another CCCD is refused
        gw.lookup(BINH)
    assert not other.value.transient
    loose = tmp_path / "loose"
    loose.write_text("secret")
    loose.chmod(0o644)
    with pytest.raises(ValueError, match="0600"):
        adapter.gateway_from_settings(gateway.url, loose, 2.0)
    assert adapter.gateway_from_settings(None, None, 2.0) is None  # unset: checks off


def test_checks_are_off_without_an_endpoint(session: Session, world: World) -> None:
    adapter.configure(None)
    p = _register(session, world)
    assert _checks(session, p.id) == []


# -- registration → queued check → match / mismatch → decisions -----------------------


def test_match_and_mismatch(session: Session, world: World, gateway: PopulationStandIn) -> None:  # noqa: F811
    nhung = _register(session, world)
    [check] = _checks(session, nhung.id)
    assert (check.status, check.trigger, gateway.asked[NHUNG]) == ("queued", "registration", 0)  # nothing waited
    assert checks.run_check(session, check.id) == "matched"
    binh = _binh(session, world, gateway)
    [bcheck] = _checks(session, binh.id)
    assert checks.run_check(session, bcheck.id) == "mismatch"
    session.refresh(bcheck)
    assert (bcheck.differences, bcheck.national_name) == ("full_name", "Trần Văn Bình")
    assert bcheck.local_name == "Trần Văn Binh"
    items = reconcile.queue(session, world.actor("records_clerk"))
    assert [i.patient.id for i in items] == [binh.id]
    assert checks.run_check(session, bcheck.id) == "mismatch"  # run again: not asked again
    assert gateway.asked[BINH] == 1


def test_each_decision_is_applied_and_audited(session: Session, world: World, gateway: PopulationStandIn) -> None:  # noqa: F811
    clerk, admin = world.actor("records_clerk"), world.actor("admin")
    binh = _binh(session, world, gateway)
    [c1] = _checks(session, binh.id)
    checks.run_check(session, c1.id)
    reconcile.decide(session, clerk, c1.id, "accept_national", "Khớp với CCCD bản gốc người bệnh xuất trình")
    session.refresh(binh)
    assert binh.full_name == "Trần Văn Bình" and binh.search_name == "tran van binh"
    update = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "patient.update", AuditEntry.patient_id == binh.id)
    ).one()
    assert json.loads(update.details)["before"]["full_name"] == "Trần Văn Binh"  # the earlier version kept
    assert _checks(session, binh.id)[0].resolved and len(_checks(session, binh.id)) == 1  # no re-check queued

    # keep local: a later export finds the national record spelled differently (a known error there)
    binh_data = {**patient_data(), "full_name": "Trần Văn Bình", "birth_date": "1985-03-02", "sex": "M",
                 "cccd": BINH, "bhyt_number": None}
    pats.update_patient(session, clerk, binh.id, {**binh_data, "address": "Hà Nội"})
    assert len(_checks(session, binh.id)) == 1  # an address change is not checked again
    gateway.add(BINH, "Trần Văn Bính", "1985-03-02", "M")
    c2 = checks.check_now(session, clerk, binh, "export")
    session.commit()
    assert c2 is not None and (c2.status, c2.trigger) == ("mismatch", "export")
    reconcile.decide(session, clerk, c2.id, "keep_local", "Cơ sở dữ liệu dân cư ghi sai dấu, đã báo công an xã")
    session.refresh(binh)
    assert binh.full_name == "Trần Văn Bình"

    # escalate: stays open; a clerk may no longer close it, an admin may
    gateway.add(BINH, "Trần Văn Bình", "1984-03-02", "M")
    pats.update_patient(session, clerk, binh.id, {**binh_data, "birth_date": "1985-03-03"})
    c3 = _checks(session, binh.id)[-1]
    checks.run_check(session, c3.id)
    reconcile.decide(session, clerk, c3.id, "escalated", "Người bệnh khai năm sinh khác, cần xác minh")
    assert [i.check.id for i in reconcile.queue(session, admin, escalated_only=True)] == [c3.id]
    reconcile.decide(session, admin, c3.id, "keep_local", "Đã xác minh giấy khai sinh")
    assert reconcile.queue(session, admin) == []
    actions = [
        (a.action, a.username, json.loads(a.details).get("reason"))
        for a in session.scalars(
            select(AuditEntry).where(AuditEntry.object_type == "identity_check", AuditEntry.action.not_in(
                ("identity.check", "identity.queue", "identity.view")
            )).order_by(AuditEntry.id)
        )
    ]
    assert actions == [
        ("identity.accept_national", "records_clerk1", "Khớp với CCCD bản gốc người bệnh xuất trình"),
        ("identity.keep_local", "records_clerk1", "Cơ sở dữ liệu dân cư ghi sai dấu, đã báo công an xã"),
        ("identity.escalated", "records_clerk1", "Người bệnh khai năm sinh khác, cần xác minh"),
        ("identity.keep_local", "admin1", "Đã xác minh giấy khai sinh"),
    ]


# -- the endpoint down or slow at registration -----------------------------------------


@pytest.fixture
def id_app(settings: EmrSettings, engine: Any, gateway: PopulationStandIn, tmp_path: Path) -> Flask:  # noqa: F811
    cred = tmp_path / "identity-credential"
    app = create_app(
        replace(settings, identity_url=gateway.url, identity_credential_file=cred, identity_timeout=5.0),
        test_config={"TESTING": True, "EMR_ENGINE": engine},
    )
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    return app


def _register_on_the_form(client: FlaskClient, **over: Any) -> Any:
    data = {k: v for k, v in patient_data(**over).items() if v is not None}
    data["csrf_token"] = csrf_token(client, "/patients/new")
    return client.post("/patients/new", data=data)


def test_endpoint_down_at_registration_then_back(
    id_app: Flask, settings: EmrSettings, engine: Any, session: Session, world: World, gateway: PopulationStandIn  # noqa: F811
) -> None:
    """Registration goes on at once; the outbox worker's attempts fail while the gateway is down,
    and the check runs exactly once when it is back."""
    client = id_app.test_client()
    login(client, "records_clerk1")
    gateway.down()
    resp = _register_on_the_form(client)
    assert resp.status_code == 302  # registered at once
    patient = session.scalars(select(Patient).where(Patient.cccd == NHUNG)).one()
    [check] = _checks(session, patient.id)
    assert check.status == "queued"
    worker = HandlerContext(make_session_factory(engine), settings)
    session.commit()  # SQLite: the worker writes from its own connection
    [attempt] = run_due(worker, kinds=[checks.OUTBOX_KIND])
    assert attempt.outcome == "failed"  # transient: the outbox retries with back-off
    session.refresh(check)
    assert (check.status, check.attempts, check.last_error) == ("queued", 1, "unreachable")
    gateway.up()
    session.commit()
    later = lambda: utcnow() + timedelta(days=1)  # noqa: E731 - past the back-off
    [delivered] = run_due(worker, kinds=[checks.OUTBOX_KIND], now=later)
    assert delivered.outcome == "sent"
    assert run_due(worker, kinds=[checks.OUTBOX_KIND], now=later) == []  # nothing left, nothing twice
    session.refresh(check)
    assert check.status == "matched"
    assert checks.run_check(session, check.id) == "matched"  # a repeated delivery asks nothing
    assert gateway.asked[NHUNG] == 1
    [message] = messages_for_patient(session, patient.id)
    assert message.status == "sent"


def test_slow_endpoint_never_holds_the_export_check(session: Session, world: World, gateway: PopulationStandIn) -> None:  # noqa: F811
    adapter.configure(replace(adapter.configured(), timeout=0.3))  # type: ignore[arg-type]
    gateway.slow = 2.0
    p = _register(session, world)
    assert checks.check_now(session, world.actor("records_clerk"), p, "export") is None  # timed out
    session.commit()
    [check] = _checks(session, p.id)
    assert (check.status, check.last_error) == ("queued", "timeout")


def test_queue_page_in_vietnamese(
    id_app: Flask, session: Session, world: World, gateway: PopulationStandIn  # noqa: F811
) -> None:
    binh = _binh(session, world, gateway)
    checks.run_check(session, _checks(session, binh.id)[0].id)
    client = id_app.test_client()
    login(client, "records_clerk1")
    page = client.get("/identity/").get_data(as_text=True)
    assert "Đối chiếu danh tính" in page and "Trần Văn Binh" in page and "Trần Văn Bình" in page
    assert 'class="differs"' in page
    chart = client.get(f"/patients/{binh.id}").get_data(as_text=True)
    assert "không khớp dữ liệu dân cư" in chart  # the chart shows where the patient's CCCD check stands


def test_settings_from_the_environment(tmp_path: Path) -> None:
    from filmless.settings import SettingsError, load

    env = {"FILMLESS_DATA_DIR": str(tmp_path)}
    (tmp_path / "cred").write_text("x")
    off = load(env).emr
    assert (off.identity_url, off.identity_timeout, off.identity_recheck_days) == (None, 3.0, 30)
    on = load({**env, "FILMLESS_IDENTITY_URL": "https://cccd.example.vn/v1/lookup", "FILMLESS_IDENTITY_TIMEOUT": "5",
               "FILMLESS_IDENTITY_CREDENTIAL_FILE": str(tmp_path / "cred")}).emr
    assert (on.identity_url, on.identity_timeout, on.identity_credential_file) == (
        "https://cccd.example.vn/v1/lookup", 5.0, tmp_path / "cred"
    )
    for bad in ({"FILMLESS_IDENTITY_URL": "cccd.example.vn"}, {"FILMLESS_IDENTITY_TIMEOUT": "600"}):
        with pytest.raises(SettingsError):
            load({**env, **bad})
