"""Issue 15 §3: who may decide an identity mismatch, and that nobody can put words in the
national database's mouth.

Real parts: the EMR on SQLite and PostgreSQL through the Flask test client
with CSRF on, the population-database stand-in over real HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import EmrSettings, create_app
from emr.access.login_guard import LoginGuard
from emr.identity import adapter, checks
from emr.models import AuditEntry, IdentityCheck, Patient
from emr.patients import service as pats
from tests.emr.conftest import (  # noqa: F401  (fixtures)
    World,
    _cheap_argon2,
    database_url,
    engine,
    login,
    patient_data,
    pg_database,
    session,
    settings,
    sqlite_template,
    world,
)
from tests.standins.population import PopulationStandIn, configure_for_test, standin  # noqa: F401  (fixture)

BINH = "001085004321"


@pytest.fixture
def app(settings: EmrSettings, engine: Any, standin: PopulationStandIn, tmp_path: Path) -> Iterator[Flask]:  # noqa: F811
    cred = configure_for_test(standin, tmp_path)
    app = create_app(
        replace(settings, identity_url=standin.url, identity_credential_file=cred, identity_timeout=5.0),
        test_config={"TESTING": True, "EMR_ENGINE": engine},
    )
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    yield app
    adapter.configure(None)


@dataclass(frozen=True)
class Item:
    id: int
    patient_id: int


@pytest.fixture
def item(session: Session, world: World, standin: PopulationStandIn) -> Item:  # noqa: F811
    """Trần Văn Binh at the desk, Trần Văn Bình in the national database: one open mismatch."""
    standin.add(BINH, "Trần Văn Bình", "1985-03-02", "M")
    p = pats.create_patient(
        session,
        world.actor("records_clerk"),
        patient_data(full_name="Trần Văn Binh", birth_date="1985-03-02", sex="M", cccd=BINH, bhyt_number=None),
    )
    check = session.scalars(select(IdentityCheck).where(IdentityCheck.patient_id == p.id)).one()
    assert checks.run_check(session, check.id) == "mismatch"
    found = Item(check.id, check.patient_id)
    session.rollback()  # plain ids: reading an expired ORM row later would hold SQLite's write lock
    return found


def _client(app: Flask, role: str) -> FlaskClient:
    c = app.test_client()
    assert login(c, f"{role}1").status_code == 302
    return c


def _decide(c: FlaskClient, check_id: int, decision: str, reason: str = "Đã đối chiếu", **extra: str) -> Any:
    page = c.get("/identity/").get_data(as_text=True)  # the logout form's token (on the 403 page too)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    data = {"decision": decision, "reason": reason, "csrf_token": token, **extra}
    return c.post(f"/identity/{check_id}/decide", data=data)


def _state(session: Session, check_id: int) -> tuple[str | None, bool, str]:  # noqa: F811
    session.expire_all()
    check = session.get(IdentityCheck, check_id)
    assert check is not None
    patient = session.get(Patient, check.patient_id)
    assert patient is not None
    state = (check.decision, check.resolved, patient.full_name)
    session.rollback()  # SQLite: let the app's requests write
    return state


def test_clinical_roles_can_neither_see_nor_decide(app: Flask, session: Session, item: Item) -> None:  # noqa: F811
    for role in ("physician", "nurse"):  # every role × route: tests/emr/test_authorization_matrix.py
        c = _client(app, role)
        assert c.get("/identity/").status_code == 403
        assert _decide(c, item.id, "accept_national").status_code == 403
    assert _state(session, item.id) == (None, False, "Trần Văn Binh")
    denied = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied")).all()
    assert {d.username for d in denied} == {"physician1", "nurse1"}


def test_only_an_admin_closes_an_escalated_item(app: Flask, session: Session, item: Item) -> None:  # noqa: F811
    clerk = _client(app, "records_clerk")
    assert _decide(clerk, item.id, "escalated", "Cần xác minh thêm").status_code == 302
    for decision in ("accept_national", "keep_local", "escalated"):
        assert _decide(clerk, item.id, decision).status_code == 403
    assert _state(session, item.id) == ("escalated", False, "Trần Văn Binh")
    refused = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "identity.decide", AuditEntry.outcome == "failure")
    ).all()
    assert len(refused) == 3 and all(r.username == "records_clerk1" for r in refused)
    session.rollback()
    admin = _client(app, "admin")
    assert _decide(admin, item.id, "escalated").status_code == 403  # admins decide, they do not escalate
    assert _decide(admin, item.id, "keep_local", "Giấy khai sinh khớp hồ sơ bệnh viện").status_code == 302
    assert _state(session, item.id) == ("keep_local", True, "Trần Văn Binh")
    assert _decide(admin, item.id, "accept_national").status_code == 409  # decided once, for good


def test_the_national_values_cannot_be_injected(app: Flask, session: Session, item: Item) -> None:  # noqa: F811
    clerk = _client(app, "records_clerk")
    forged = {
        "full_name": "Kẻ Mạo Danh",
        "national_name": "Kẻ Mạo Danh",
        "birth_date": "2001-01-01",
        "national_birth": "2001-01-01",
        "sex": "F",
        "national_sex": "F",
        "status": "matched",
    }
    # Through the query string and the form: the page and the decision read only the stored answer.
    assert "Kẻ Mạo Danh" not in clerk.get("/identity/", query_string=forged).get_data(as_text=True)
    assert _decide(clerk, item.id, "accept_national", "Theo CCCD gốc", **forged).status_code == 302
    session.expire_all()
    patient = session.get(Patient, item.patient_id)
    assert patient is not None
    assert (patient.full_name, patient.birth_date.isoformat(), patient.sex) == ("Trần Văn Bình", "1985-03-02", "M")
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "identity.accept_national")).one()
    details = json.loads(row.details)
    assert details["after"]["full_name"] == "Trần Văn Bình" and row.username == "records_clerk1"


def test_a_decision_needs_a_reason_a_known_choice_and_the_csrf_token(
    app: Flask, session: Session, item: Item  # noqa: F811
) -> None:
    clerk = _client(app, "records_clerk")
    assert _decide(clerk, item.id, "keep_local", "   ").status_code == 422
    assert _decide(clerk, item.id, "delete_patient").status_code == 422
    no_token = clerk.post(f"/identity/{item.id}/decide", data={"decision": "keep_local", "reason": "x"})
    assert no_token.status_code == 400
    assert _decide(clerk, 999999, "keep_local").status_code == 404
    assert _state(session, item.id) == (None, False, "Trần Văn Binh")
    shown = session.scalars(select(AuditEntry).where(AuditEntry.action == "identity.queue")).all()
    assert shown and json.loads(shown[-1].details)["shown"] == [item.id]  # every look at the queue audited
