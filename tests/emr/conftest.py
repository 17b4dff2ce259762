"""EMR fixtures: every DB test runs on SQLite and on a throw-away PostgreSQL database.

PostgreSQL: one database per test run (created at 127.0.0.1:5432 as user
postgres, migrated once, dropped at the end); tables are truncated between
tests. SQLite: one migrated template file, copied per test.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from emr import Actor, EmrSettings, create_app, upgrade_database
from emr.access.users import create_token, create_user
from emr.db import make_engine, make_session_factory
from emr.models import Base, Study, User
from emr.patients import encounters as enc_svc
from filmless.wiring import viewer_extension

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_ACTOR = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"


def _pg_available() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    if not _pg_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"filmless_emr_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    upgrade_database(EmrSettings(database_url=url))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production Argon2 parameters cost ≈ 50 ms a hash; tests create many users."""
    from argon2 import PasswordHasher

    import emr.access.users as users

    monkeypatch.setattr(users, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emr-template") / "emr.sqlite3"
    upgrade_database(EmrSettings(database_url=f"sqlite:///{path}"))
    return path


def _truncate_pg(url: str) -> None:
    eng = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "emr.sqlite3"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> EmrSettings:
    return EmrSettings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key_file=tmp_path / "secret_key",
        public_url="http://127.0.0.1:8080",
    )


@pytest.fixture
def engine(settings: EmrSettings) -> Iterator[Any]:
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Any) -> Iterator[Session]:
    with make_session_factory(engine)() as s:
        yield s


@dataclass
class World:
    """Users of every role, a department and a small ICD-10 catalogue."""

    users: dict[str, User]
    department_code: str

    def actor(self, role: str, ip: str = "10.0.0.5") -> Actor:
        u = self.users[role]
        return Actor(u.id, u.username, u.role, ip)


@pytest.fixture
def world(session: Session, tmp_path: Path) -> World:
    users = {}
    # The physician works in K19: orders placed without a visit open one there (how care begins).
    k19 = enc_svc.ensure_department(session, "K19", "Khoa Nội tổng hợp")
    session.commit()
    for role in ("admin", "physician", "radiologist", "technician", "nurse", "records_clerk"):
        users[role] = create_user(
            session,
            ADMIN_ACTOR,
            f"{role}1",
            PASSWORD,
            role,
            f"Nguyễn Văn {role.title()}",
            practising_cert_no=f"00{len(users)}/HCM-CCHN",
            department_id=k19.id if role == "physician" else None,
        )
    catalogue = tmp_path / "icd10.csv"
    catalogue.write_text(
        "code,title\nJ18.9,Viêm phổi không đặc hiệu\nI10,Tăng huyết áp vô căn\nS06.0,Chấn động não\nR51,Đau đầu\n",
        encoding="utf-8",
    )
    enc_svc.load_icd10(session, ADMIN_ACTOR, catalogue)
    return World(users=users, department_code="K19")


@pytest.fixture
def app(settings: EmrSettings, engine: Any) -> Flask:
    return create_app(
        settings, test_config={"TESTING": True, "EMR_ENGINE": engine},
        extensions=[viewer_extension(None)],
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tokens(session: Session, world: World) -> dict[str, str]:
    return {role: create_token(session, ADMIN_ACTOR, u.id, "tests") for role, u in world.users.items()}


def patient_data(**over: Any) -> dict[str, Any]:
    data = {
        "full_name": "Nguyễn Thị Hồng Nhung",
        "birth_date": "1990-05-17",
        "sex": "F",
        "cccd": "079190001234",
        "bhyt_number": "DN4790123456789",
        "bhyt_valid_from": "2026-01-01",
        "bhyt_valid_to": "2026-12-31",
        "bhyt_registered_facility": "79001",
        "address": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
        "province_code": "79",
        "phone": "0901234567",
    }
    data.update(over)
    return data


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    client.get("/login")
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def csrf_token(client: FlaskClient, path: str) -> str:
    import re

    page = client.get(path, follow_redirects=True).get_data(as_text=True)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, f"no CSRF token on {path}"
    return m.group(1)


MakeLogin = Callable[[str], FlaskClient]


def linked_ct_study(session: Session, world: World, procedure_name: str = "CT sọ") -> Study:
    """A patient with a CT order by the physician and its study already arrived and linked (no images)."""
    from emr.imaging import orders
    from emr.patients import service as patients

    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(session, doctor,
                                {"patient_id": p.id, "modality": "CT", "procedure_name": procedure_name})
    study = Study(
        orthanc_id="o-1",
        study_instance_uid=order.study_instance_uid,
        state="linked",
        order_id=order.id,
        patient_id=p.id,
        study_date="20261207",
    )
    session.add(study)
    session.commit()
    return study


def outpatient_visit(session: Session, world: World) -> tuple[Any, Any]:
    """A new patient of the physician's with an open outpatient visit in the physician's department."""
    from emr.patients import service as patients

    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = enc_svc.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code}
    )
    session.commit()
    return p, enc


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    """The test app served over HTTP on a free port (the browser tests)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="emr-test-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
