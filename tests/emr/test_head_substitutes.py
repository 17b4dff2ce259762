"""Who may sign in place of the head of department (emr.access.substitutes): a designation names a physician,
a department, a capacity (KT. = deputy signing for the head, Q. = acting head) and its facility days; it is
in force from its first day through its last unless ended, and only an admin records or ends one."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import substitutes
from emr.access.users import create_user
from emr.core.clock import local_today
from emr.core.exceptions import ValidationFailed
from emr.i18n import t
from emr.models import AuditEntry, HeadSubstitute, User
from emr.patients import encounters

from . import test_prices as prices
from .conftest import ADMIN_ACTOR, PASSWORD, World, csrf_token, login

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)

DAY = dt.timedelta(days=1)


def _k19(session: Session) -> int:
    return encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp").id


def _deputy(session: Session, world: World, name: str = "bsphokhoa") -> User:
    return create_user(session, ADMIN_ACTOR, name, PASSWORD, "physician", f"BS. {name}", department_id=_k19(session),
                       practising_cert_no=f"{name}/HCM-CCHN")


def test_a_designation_is_in_force_on_its_days_only(session: Session, world: World) -> None:
    dep, deputy = _k19(session), _deputy(session, world)
    today = local_today()
    assert substitutes.head_capacity(session, deputy, dep) is None  # a physician of the department: not by itself
    substitutes.designate(session, world.actor("admin"), deputy.id, dep, "deputy", today, today + 6 * DAY, "12/QĐ-BV")
    assert substitutes.head_capacity(session, deputy, dep) == "deputy"
    assert substitutes.head_capacity(session, deputy, dep, today + 6 * DAY) == "deputy"  # the last day included
    assert substitutes.head_capacity(session, deputy, dep, today + 7 * DAY) is None
    assert substitutes.head_capacity(session, deputy, dep, today - DAY) is None
    other = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
    assert substitutes.head_capacity(session, deputy, other.id) is None  # that department only
    later = _deputy(session, world, "bsquyen")
    substitutes.designate(session, world.actor("admin"), later.id, dep, "acting", today + DAY, None, "")
    assert substitutes.head_capacity(session, later, dep) is None  # not yet
    assert substitutes.head_capacity(session, later, dep, today + 400 * DAY) == "acting"  # no last day
    assert [c.capacity for c in substitutes.candidates(session, dep)] == ["deputy"]


def test_ended_demoted_or_locked_substitutes_may_not_sign(session: Session, world: World) -> None:
    dep, deputy = _k19(session), _deputy(session, world)
    row = substitutes.designate(session, world.actor("admin"), deputy.id, dep, "acting", local_today(), None)
    assert substitutes.head_capacity(session, deputy, dep) == "acting"
    deputy.role = "nurse"
    assert substitutes.head_capacity(session, deputy, dep) is None
    deputy.role, deputy.active = "physician", False
    assert substitutes.head_capacity(session, deputy, dep) is None
    deputy.active = True
    substitutes.end(session, world.actor("admin"), row.id, deputy.id)
    assert substitutes.head_capacity(session, deputy, dep) is None
    actions = session.scalars(select(AuditEntry.action).where(AuditEntry.object_id == str(deputy.id))).all()
    assert "user.head_substitute" in actions and "user.head_substitute_end" in actions


def test_the_head_signs_as_head(session: Session, world: World) -> None:
    head = world.users["physician"]
    head.is_department_head = True
    session.commit()
    assert substitutes.head_capacity(session, head, _k19(session)) == "head"
    assert [c.capacity for c in substitutes.candidates(session, _k19(session))] == ["head"]


@pytest.mark.parametrize(("change", "field", "key"), [
    ({"user": "nurse"}, "user", "substitutes.error.not_physician"),
    ({"capacity": "director"}, "capacity", "substitutes.error.capacity"),
    ({"department_id": 0}, "department_id", "substitutes.error.department"),
    ({"valid_from": ""}, "valid_from", "substitutes.error.valid_from"),
    ({"valid_from": "31/12/2026"}, "valid_from", "substitutes.error.date"),
    ({"valid_to": "-1"}, "valid_to", "substitutes.error.reversed"),
    ({"valid_from": "-9", "valid_to": "-2"}, "valid_to", "substitutes.error.past"),
    ({"reference": "x" * 201}, "reference", "substitutes.error.reference"),
])
def test_designations_are_checked_field_by_field(
    session: Session, world: World, change: dict[str, Any], field: str, key: str
) -> None:
    deputy, today = _deputy(session, world), local_today()
    values: dict[str, Any] = {"user": deputy.id, "department_id": _k19(session), "capacity": "deputy",
                              "valid_from": today, "valid_to": None, "reference": ""}
    for name, value in change.items():
        if name == "user":
            values["user"] = world.users[value].id
        elif name in ("valid_from", "valid_to") and value.lstrip("-").isdigit():
            values[name] = today + int(value) * DAY
        else:
            values[name] = value
    with pytest.raises(ValidationFailed) as refused:
        substitutes.designate(session, world.actor("admin"), values["user"], values["department_id"],
                              values["capacity"], values["valid_from"], values["valid_to"], values["reference"])
    assert refused.value.fields.get(field) == key
    session.rollback()
    assert session.scalars(select(HeadSubstitute)).all() == []


def test_overlapping_designations_and_the_head_are_refused(session: Session, world: World) -> None:
    dep, deputy, today = _k19(session), _deputy(session, world), local_today()
    substitutes.designate(session, world.actor("admin"), deputy.id, dep, "deputy", today, today + 9 * DAY)
    with pytest.raises(ValidationFailed) as refused:
        substitutes.designate(session, world.actor("admin"), deputy.id, dep, "acting", today + 5 * DAY, None)
    assert refused.value.fields == {"valid_from": "substitutes.error.overlap"}
    substitutes.designate(session, world.actor("admin"), deputy.id, dep, "acting", today + 10 * DAY, None)
    head = world.users["physician"]
    head.is_department_head = True
    session.commit()
    with pytest.raises(ValidationFailed) as refused:
        substitutes.designate(session, world.actor("admin"), head.id, dep, "deputy", today, None)
    assert refused.value.fields == {"user": "substitutes.error.already_head"}


def test_the_admin_designates_and_ends_on_the_signing_page(session: Session, world: World, client: Any) -> None:
    dep, deputy = _k19(session), _deputy(session, world).id
    session.rollback()  # SQLite: the test's session must not hold the write lock while the app answers
    login(client, "admin1")
    path = f"/signing/users/{deputy}"
    page = client.get(path).get_data(as_text=True)
    assert t("substitutes.title") in page and t("substitutes.none") in page
    today = local_today()
    r = client.post(path, data={"csrf_token": csrf_token(client, path), "kind": "substitute", "department_id": str(dep),
                                "capacity": "deputy", "valid_from": today.isoformat(),
                                "valid_to": (today + 3 * DAY).isoformat(), "reference": "25/QĐ-BV"})
    assert r.status_code == 200, r.get_data(as_text=True)
    text = r.get_data(as_text=True)
    assert t("signing.capacity.deputy") in text and "25/QĐ-BV" in text and t("substitutes.state.in_force") in text
    session.expire_all()
    row = session.scalars(select(HeadSubstitute)).one()
    assert (row.user_id, row.department_id, row.capacity, row.valid_to) == (deputy, dep, "deputy", today + 3 * DAY)
    assert row.created_by == world.users["admin"].id
    row_id = row.id
    session.rollback()
    r = client.post(path, data={"csrf_token": csrf_token(client, path), "kind": "substitute", "department_id": str(dep),
                                "capacity": "deputy", "valid_from": today.isoformat(),
                                "valid_to": (today - DAY).isoformat()})
    assert r.status_code == 422 and t("substitutes.error.reversed") in r.get_data(as_text=True)
    r = client.post(path, data={"csrf_token": csrf_token(client, path), "kind": "substitute_end",
                                "substitute_id": str(row_id)})
    assert r.status_code == 200
    session.expire_all()
    assert session.get(HeadSubstitute, row_id).ended_at is not None  # type: ignore[union-attr]
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "user.head_substitute")).one()
    assert json.loads(audit.details)["capacity"] == "deputy"
    assert t("audit.action.user.head_substitute") != "audit.action.user.head_substitute"


def test_a_physician_cannot_designate_anyone(session: Session, world: World, client: Any) -> None:
    dep, deputy = _k19(session), _deputy(session, world).id
    session.rollback()
    login(client, "physician1")
    token = csrf_token(client, "/signing/keys")
    data = {"csrf_token": token, "kind": "substitute", "department_id": str(dep), "capacity": "acting",
            "valid_from": local_today().isoformat()}
    assert client.post("/signing/keys", data=data).status_code == 422  # not a kind their own page takes
    assert client.get(f"/signing/users/{deputy}").status_code == 403
    assert client.post(f"/signing/users/{deputy}", data=data).status_code == 403
    assert session.scalars(select(HeadSubstitute)).all() == []


def test_migration_0024_matches_the_models_and_goes_back(empty_url: str) -> None:
    """Existing signatures keep no capacity (all were the head's own); the new table and column read back as
    the models declare them; the downgrade removes both."""
    from datetime import datetime

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    from .test_partially_signed import _downgrade

    engine, _tables = prices.at_revision(empty_url, "0023")
    try:
        upgrade(engine)
        with engine.connect() as c:
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"head_substitutes", "document_signatures"})]
            assert diffs == []
            c.execute(Base.metadata.tables["departments"].insert().values(id=1, code="K19", name="Khoa Nội"))
            c.execute(Base.metadata.tables["users"].insert().values(
                id=1, username="bs", full_name="BS", role="physician", password_hash="x", active=True,
                failed_logins=0, session_version=1, created_at=datetime(2026, 12, 1), is_department_head=False))
            c.execute(Base.metadata.tables["head_substitutes"].insert().values(
                department_id=1, user_id=1, capacity="acting", valid_from=datetime(2026, 12, 1).date(),
                created_at=datetime(2026, 12, 1)))
            c.commit()
        _downgrade(engine, "0023")
        names = inspect(engine).get_table_names()
        assert "head_substitutes" not in names
        assert "capacity" not in {col["name"] for col in inspect(engine).get_columns("document_signatures")}
    finally:
        engine.dispose()
