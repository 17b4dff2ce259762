"""The hash-chained audit log detects edited, inserted and deleted rows."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from emr import verify_audit_chain
from emr.patients import service as patients

from .conftest import World, patient_data


def _raw(session: Session, sql: str) -> None:
    """Tamper as a DBA would: bypassing the app (and, on PostgreSQL, the append-only trigger)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL session_replication_role = replica"))
    session.execute(text(sql))
    session.commit()


def _setup(session: Session, world: World) -> int:
    clerk = world.actor("records_clerk")
    p = patients.create_patient(session, clerk, patient_data())
    for _ in range(3):
        patients.get_patient(session, clerk, p.id)
    result = verify_audit_chain(session)
    assert result.ok, result.problems
    return result.rows


def test_intact_chain_verifies(session: Session, world: World) -> None:
    assert _setup(session, world) >= 10


def test_edited_row_is_found(session: Session, world: World) -> None:
    _setup(session, world)
    _raw(session, "UPDATE audit_log SET client_ip = '1.2.3.4' WHERE id = 5")
    result = verify_audit_chain(session)
    assert not result.ok and any("row 5" in p and "edited" in p for p in result.problems)


def test_deleted_middle_row_is_found(session: Session, world: World) -> None:
    _setup(session, world)
    _raw(session, "DELETE FROM audit_log WHERE id = 4")
    result = verify_audit_chain(session)
    assert not result.ok and any("row 5" in p for p in result.problems)


def test_deleted_last_rows_are_found(session: Session, world: World) -> None:
    rows = _setup(session, world)
    _raw(session, f"DELETE FROM audit_log WHERE id >= {rows - 1}")
    result = verify_audit_chain(session)
    assert not result.ok and any("head" in p for p in result.problems)


def test_inserted_row_is_found(session: Session, world: World) -> None:
    _setup(session, world)
    _raw(session, "UPDATE audit_log SET id = id + 1000 WHERE id >= 6")
    _raw(
        session,
        "INSERT INTO audit_log (id, at, action, outcome, details, prev_hash, hash) "
        "SELECT 6, at, action, outcome, details, prev_hash, hash FROM audit_log WHERE id = 5",
    )
    result = verify_audit_chain(session)
    assert not result.ok


def test_cli_audit_verify_exits_nonzero_on_tampering(session: Session, world: World, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _setup(session, world)
    session.rollback()  # end the read transaction (SQLite: release the lock for the subprocess)
    env = {"FILMLESS_DATA_DIR": str(tmp_path), "FILMLESS_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "filmless", "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    _raw(session, "UPDATE audit_log SET username = 'mallory' WHERE id = 3")
    session.rollback()
    bad = subprocess.run([sys.executable, "-m", "filmless", "audit", "verify"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "row 3" in bad.stdout


def test_concurrent_appends_keep_one_chain(engine: Any, world: World) -> None:
    """Appends from several threads at once (each its own session and transaction) queue on
    the head row: every row is kept, ids follow each other, the chain verifies."""
    from concurrent.futures import ThreadPoolExecutor

    from emr.access import audit
    from emr.db import make_session_factory

    factory = make_session_factory(engine)
    with factory() as session:
        before = verify_audit_chain(session).rows

    def append(worker: int) -> list[int]:
        ids = []
        for n in range(15):
            with factory() as session:
                ids.append(audit.record(session, audit.SYSTEM, "test.append", details={"worker": worker, "n": n}))
                session.commit()
        return ids

    with ThreadPoolExecutor(4) as pool:
        ids = [i for chunk in pool.map(append, range(4)) for i in chunk]
    assert sorted(ids) == list(range(before + 1, before + 61))
    with factory() as session:
        result = verify_audit_chain(session)
        assert result.ok, result.problems
        assert result.rows == before + 60


def test_an_append_flushes_what_the_caller_added_first(session: Session, world: World) -> None:
    """As the ORM's autoflush did: an object added before the audit row is written has its id after."""
    from emr.access import audit
    from emr.models import Patient

    clerk = world.actor("records_clerk")
    patient = patients.create_patient(session, clerk, patient_data())
    twin = Patient(**{c.key: getattr(patient, c.key) for c in Patient.__table__.columns
                      if not (c.primary_key or c.unique)}, code="AUDIT-FLUSH")
    session.add(twin)
    row = audit.record(session, clerk, "patient.create", patient_id=None, object_type="patient")
    assert twin.id is not None and row > 0
    session.commit()
