"""The clinician's home: the patients under treatment in their department, without searching.

A physician who logs in sees the open visits of their department and those
they attend; never another department's, never a closed or cancelled visit;
the listing is audited like a search. Migration 0018 indexes the query.
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.users import create_user
from emr.models import AuditEntry
from emr.patients import encounters
from emr.patients import service as patients

from . import test_prices as prices
from .conftest import ADMIN_ACTOR, PASSWORD, World, login, patient_data

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)


def _visit(session: Session, world: World, name: str, cccd: str, department: str, attending: str) -> Any:
    p = patients.create_patient(session, world.actor("records_clerk"),
                                patient_data(full_name=name, cccd=cccd, bhyt_number=None))
    return encounters.create_encounter(session, world.actor("records_clerk"), {
        "patient_id": p.id, "kind": "outpatient", "department_code": department, "attending_username": attending})


def _people(session: Session, world: World) -> dict[str, Any]:
    """K19 (physician1's department): two open visits, one closed; K01 (bs_k01's): one open visit,
    and one attended there by physician1 (theirs though the department is not)."""
    other = create_user(session, ADMIN_ACTOR, "bs_k01", PASSWORD, "physician", "Trần Văn Khác",
                        practising_cert_no="099/HCM-CCHN",
                        department_id=encounters.ensure_department(session, "K01", "Khoa Cấp cứu").id)
    session.commit()
    v = {
        "ward_old": _visit(session, world, "Lê Thị Một", "079190000001", "K19", "physician1"),
        "ward_new": _visit(session, world, "Phạm Văn Hai", "079190000002", "K19", "physician1"),
        "ward_closed": _visit(session, world, "Đỗ Thị Ba", "079190000003", "K19", "physician1"),
        "elsewhere": _visit(session, world, "Vũ Văn Bốn", "079190000004", "K01", other.username),
        "attended": _visit(session, world, "Hồ Thị Năm", "079190000005", "K01", "physician1"),
    }
    encounters.close_encounter(session, world.actor("physician"), v["ward_closed"].id, "Khỏi bệnh", main_code="J18.9")
    return v


def test_the_department_and_attended_open_visits_newest_first_audited(session: Session, world: World) -> None:
    v = _people(session, world)
    listed = encounters.current_visits(session, world.actor("physician"))
    assert listed is not None
    assert [x.encounter_id for x in listed] == [v["attended"].id, v["ward_new"].id, v["ward_old"].id]
    assert listed[0].patient_name == "Hồ Thị Năm" and listed[0].department_name == "Khoa Cấp cứu"
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "patient.list")).one()
    assert row.username == "physician1" and '"results": 3' in row.details
    # A desk role with no department has no such list; the other department's physician has theirs.
    assert encounters.current_visits(session, world.actor("records_clerk")) is None
    k01 = [x.patient_name for x in encounters.current_visits(session, _actor(session, "bs_k01")) or []]
    assert sorted(k01) == sorted(["Vũ Văn Bốn", "Hồ Thị Năm"])


def _actor(session: Session, username: str) -> Any:
    from emr.access.audit import Actor
    from emr.models import User

    user = session.scalars(select(User).where(User.username == username)).one()
    return Actor(user.id, user.username, user.role, "10.0.0.5")


def test_the_home_page_lists_them_and_each_opens(client: FlaskClient, session: Session, world: World) -> None:
    v = _people(session, world)
    login(client, "physician1")
    page = client.get("/patients/").get_data(as_text=True)
    assert "Bệnh nhân đang điều trị" in page
    for name in ("Lê Thị Một", "Phạm Văn Hai", "Hồ Thị Năm"):
        assert name in page, name
    for name in ("Đỗ Thị Ba", "Vũ Văn Bốn"):  # closed; another department's
        assert name not in page, name
    for key in ("ward_old", "ward_new", "attended"):
        assert client.get(f"/patients/{v[key].patient_id}").status_code == 200  # in care: each row opens
    # A search replaces the list; a records clerk (no department) gets the search alone.
    assert "Bệnh nhân đang điều trị" not in client.get("/patients/?q=le").get_data(as_text=True)
    client.post("/logout", data={})
    login(client, "records_clerk1")
    assert "Bệnh nhân đang điều trị" not in client.get("/patients/").get_data(as_text=True)


def test_migration_0018_indexes_the_lists_and_matches_the_models(empty_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    engine, _ = prices.at_revision(empty_url, "0017")
    try:
        upgrade(engine)
        names = {ix["name"] for ix in inspect(engine).get_indexes("encounters")}
        assert {"ix_encounters_department_status", "ix_encounters_attending_status"} <= names
        with engine.connect() as c:
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"encounters"})]
            assert diffs == []
    finally:
        engine.dispose()


def test_migration_0019_keys_existing_patients_by_later_words(empty_url: str) -> None:
    """Patients registered before 0019 are found by the last word of their name after it."""
    from datetime import datetime

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import select

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base, PatientNameKey

    engine, t = prices.at_revision(empty_url, "0018")
    try:
        with engine.begin() as c:
            prices.seed_people(c, t, datetime(2026, 12, 1))  # patient 1: Lê Văn Tám
        upgrade(engine)
        with engine.connect() as c:
            assert c.execute(select(PatientNameKey.key, PatientNameKey.patient_id)).all() == [("tam", 1)]
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"patient_name_keys"})]
            assert diffs == []
    finally:
        engine.dispose()
