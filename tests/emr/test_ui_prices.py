"""The price and benefit-level parts of the web UI: order form, chart, encounter forms."""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.billing import prices
from emr.i18n import t
from emr.models import Encounter, ImagingOrder
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import ADMIN_ACTOR, World, csrf_token, login, patient_data
from .test_prices import GOOD, write


def test_order_form_offers_the_catalogue_and_the_chart_shows_the_snapshot_price(
    client: FlaskClient, world: World, session: Session, tmp_path: Path
) -> None:
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, GOOD))
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    login(client, "physician1")
    form = client.get(f"/orders/new/{p.id}").get_data(as_text=True)
    assert 'list="price-catalogue"' in form
    assert re.search(r'<option value="18\.0043\.0002">Chụp CT ngực[^<]*650\.000 đ[^<]*536\.000 đ</option>', form)
    assert re.search(r'<option value="18\.0001\.0004">Siêu âm 4D thai[^<]*' + t("orders.price.not_covered"), form)
    token = csrf_token(client, f"/orders/new/{p.id}")
    for code in ("18.0043.0002", ""):
        r = client.post(
            f"/orders/new/{p.id}",
            data={
                "modality": "CT",
                "procedure_name": "CT ngực không tiêm",
                "procedure_code": code,
                "urgency": "routine",
                "csrf_token": token,
            },
        )
        assert r.status_code == 302
    placed = session.scalars(select(ImagingOrder).where(ImagingOrder.patient_id == p.id).order_by(ImagingOrder.id))
    assert [o.price_hospital for o in placed] == [650000, None]
    session.commit()  # SQLite: leave no transaction (and its write lock) open while the app works
    chart = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert "650.000 đ" in chart and f"{t('orders.price.insurance')} 536.000 đ" in chart
    assert t("orders.price.none") in chart  # the order without a code
    assert t("orders.price.apply") not in chart  # only the records clerk prepares claims, and only for coded orders


def test_clerk_prices_an_order_placed_before_the_price_list(
    client: FlaskClient, world: World, session: Session, tmp_path: Path
) -> None:
    from emr.imaging import orders

    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    o = orders.create_order(
        session,
        world.actor("physician"),
        {"patient_id": p.id, "modality": "CT", "procedure_name": "CT ngực", "procedure_code": "18.0043.0002"},
    )
    pid, oid = p.id, o.id
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, GOOD))
    login(client, "records_clerk1")
    chart = client.get(f"/patients/{pid}").get_data(as_text=True)
    assert t("orders.price.apply") in chart and f"/orders/{oid}/price" in chart
    token = csrf_token(client, f"/patients/{pid}")
    assert client.post(f"/orders/{oid}/price", data={"csrf_token": token}).status_code == 302
    assert "650.000 đ" in client.get(f"/patients/{pid}").get_data(as_text=True)
    again = client.post(f"/orders/{oid}/price", data={"csrf_token": token})
    assert again.status_code == 409 and t("orders.error.already_priced") in again.get_data(as_text=True)


def test_benefit_level_on_the_encounter_forms(client: FlaskClient, world: World, session: Session) -> None:
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data(bhyt_number="7912345678"))
    login(client, "records_clerk1")
    path = f"/patients/{p.id}/encounters/new"
    assert 'name="benefit_level"' in client.get(path).get_data(as_text=True)
    token = csrf_token(client, path)
    base = {"kind": "outpatient", "department_code": world.department_code, "attending_username": "physician1"}
    base["csrf_token"] = token
    r = client.post(path, data={**base, "benefit_level": "50"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert re.search(r'id="err-benefit_level">' + re.escape(t("encounters.error.benefit_level")), page)
    assert 'value="50"' in page  # what was typed is kept
    assert session.scalar(select(Encounter).where(Encounter.patient_id == p.id)) is None
    session.commit()  # SQLite: no transaction left open while the app writes
    assert client.post(path, data=base).status_code == 302  # the level can be left for later
    enc = session.scalars(select(Encounter).where(Encounter.patient_id == p.id)).one()
    assert enc.benefit_level is None
    session.commit()
    chart = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert t("encounters.benefit_level.unknown") in chart
    edit = f"/patients/{p.id}/encounters/{enc.id}/benefit-level"
    assert edit in chart
    token = csrf_token(client, edit)
    assert client.post(edit, data={"benefit_level": "95", "csrf_token": token}).status_code == 302
    saved = session.scalar(select(Encounter.benefit_level).where(Encounter.id == enc.id))
    session.commit()  # no transaction left open (SQLite write lock) while the app works
    assert saved == 95
    assert "95%" in client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert 'value="95"' in client.get(edit).get_data(as_text=True)
    # another patient's visit through this patient's page: not found
    other = patients.create_patient(
        session, world.actor("records_clerk"), patient_data(cccd=None, bhyt_number=None, full_name="Lê Văn Tám")
    )
    assert client.get(f"/patients/{other.id}/encounters/{enc.id}/benefit-level").status_code == 404
    # a role without encounter.write cannot change it
    encounters.set_benefit_level(session, world.actor("records_clerk"), enc.id, {"benefit_level": 80})
    radiologist = FlaskClient(client.application, use_cookies=True)
    login(radiologist, "radiologist1")
    assert radiologist.get(edit).status_code == 403
