"""Trusted-timestamp anchors make a rewrite of the whole audit chain detectable.

Real parts only: SQLite and PostgreSQL (the ``session`` fixture runs every
test on both), the local RFC 3161 TSA of the development PKI, and a DBA who
bypasses the application (and, on PostgreSQL, the append-only triggers).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from emr import EmrSettings, verify_audit_chain
from emr.access.anchor_scheduler import AnchorScheduler
from emr.access.audit import (
    _HASHED,
    GENESIS,
    SYSTEM,
    AnchorError,
    AnchorTrust,
    _row_hash,
    anchor_statement,
    anchor_trust,
    anchors_file,
    create_anchor,
)
from emr.models import AuditAnchor, AuditEntry, Patient
from emr.patients import service as patients
from emr.signing import DevPki, DevPkiServer, import_trust_anchor
from tests.helpers import free_port

from .conftest import World, patient_data


@pytest.fixture
def tsa_settings(settings: EmrSettings, pki: DevPki, pki_server: DevPkiServer) -> EmrSettings:
    """The test settings with the local TSA and the development CA in the trust store."""
    import_trust_anchor(pki.ca_cert_path.read_bytes(), settings.data_dir / "pki" / "trust-anchors")
    return replace(settings, tsa_url=pki_server.tsa_url)


def _activity(session: Session, world: World, reads: int = 3) -> None:
    """Audited work: a patient created (the first time) and read."""
    clerk = world.actor("records_clerk")
    patient_id = session.scalar(select(Patient.id).order_by(Patient.id).limit(1))
    if patient_id is None:
        patient_id = patients.create_patient(session, clerk, patient_data()).id
    for _ in range(reads):
        patients.get_patient(session, clerk, patient_id)
    session.commit()


def _anchor(session: Session, settings: EmrSettings) -> AuditAnchor:
    anchor = create_anchor(session, SYSTEM, settings.tsa_url, anchors_file(settings), timeout=10)
    assert anchor is not None
    return anchor


def _verify(session: Session, settings: EmrSettings, *, with_file: bool = False) -> Any:
    result = verify_audit_chain(
        session, trust=anchor_trust(settings), anchors_path=anchors_file(settings) if with_file else None
    )
    session.rollback()
    return result


def _dba(session: Session, sql: str, params: dict[str, Any] | None = None) -> None:
    """Run SQL as a database superuser would: past the application and the append-only triggers."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL session_replication_role = replica"))
    session.execute(text(sql), params or {})


def _rewrite_chain(session: Session, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit rows and recompute every hash and the head: what the chain alone cannot catch."""
    session.rollback()
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL session_replication_role = replica"))
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    prev = GENESIS
    columns = [k for k in _HASHED if k != "id"]
    for entry in entries:
        values = {k: getattr(entry, k) for k in _HASHED}
        edit(values)
        digest = _row_hash(prev, values)
        assignments = ", ".join(f"{k} = :{k}" for k in columns)
        session.execute(
            text(f"UPDATE audit_log SET {assignments}, prev_hash = :prev, hash = :hash WHERE id = :id"),
            {**values, "prev": prev, "hash": digest},
        )
        prev = digest
    session.execute(text("UPDATE audit_head SET last_hash = :h WHERE id = 1"), {"h": prev})
    session.commit()
    session.expunge_all()


def _mallory(row_id: int) -> Callable[[dict[str, Any]], None]:
    def edit(values: dict[str, Any]) -> None:
        if values["id"] == row_id:
            values["username"] = "mallory"

    return edit


def _anchor_rows(session: Session) -> int:
    count = session.scalar(select(func.count()).select_from(AuditAnchor))
    session.rollback()
    return int(count or 0)


def _cli(settings: EmrSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "FILMLESS_DATA_DIR": str(settings.data_dir),
        "FILMLESS_DATABASE_URL": settings.database_url,
        "PATH": "/usr/bin:/bin",
    }
    if settings.tsa_url:
        env["FILMLESS_TSA_URL"] = settings.tsa_url
    return subprocess.run([sys.executable, "-m", "filmless", *args], env=env, capture_output=True, text=True)


# -- anchoring a clean chain -----------------------------------------------------


def test_anchor_and_verify_a_clean_chain(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    first = _anchor(session, tsa_settings)
    head = session.scalars(select(AuditEntry).where(AuditEntry.id == first.last_id)).one()
    assert first.last_hash == head.hash
    # the anchor is audited as its own action, after the row it anchors
    audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.anchor")).one()
    assert audited.id == first.last_id + 1 and audited.outcome == "success"
    assert json.loads(audited.details)["last_hash"] == first.last_hash
    session.rollback()

    path = anchors_file(tsa_settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["id"] == first.id and json.loads(line)["last_hash"] == first.last_hash

    _activity(session, world, reads=1)
    second = _anchor(session, tsa_settings)
    assert second.last_id > first.last_id and len(path.read_text().splitlines()) == 2

    result = _verify(session, tsa_settings, with_file=True)
    assert result.ok, result.problems
    assert result.anchors == 2 and result.tokens_checked
    assert result.newest_anchor == second.created_at


def test_anchoring_an_empty_log_makes_no_anchor(session: Session, tsa_settings: EmrSettings) -> None:
    assert create_anchor(session, SYSTEM, tsa_settings.tsa_url, anchors_file(tsa_settings)) is None
    assert _anchor_rows(session) == 0 and not anchors_file(tsa_settings).exists()


def test_without_a_tsa_there_is_a_clear_error(session: Session, world: World, settings: EmrSettings) -> None:
    _activity(session, world)
    with pytest.raises(AnchorError) as caught:
        create_anchor(session, SYSTEM, None, anchors_file(settings))
    assert caught.value.key == "audit.anchor.no_tsa"
    out = _cli(settings, "audit", "anchor")
    assert out.returncode == 1 and "FILMLESS_TSA_URL" in out.stderr


# -- what the anchors catch ------------------------------------------------------


def test_a_full_rewrite_with_recomputed_hashes_and_head_is_caught(
    session: Session, world: World, tsa_settings: EmrSettings
) -> None:
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    _activity(session, world, reads=1)
    _rewrite_chain(session, _mallory(3))

    plain = verify_audit_chain(session)  # without anchors' tokens the rewrite is consistent
    session.rollback()
    assert not any(p.startswith("row ") or "head" in p for p in plain.problems), plain.problems

    result = _verify(session, tsa_settings)
    assert not result.ok
    (problem,) = result.problems
    assert f"anchor #{anchor.id} of {anchor.created_at}" in problem
    assert f"row {anchor.last_id} now has hash" in problem and "rewritten" in problem


def test_rewriting_only_rows_after_the_newest_anchor_is_beyond_its_reach(
    session: Session, world: World, tsa_settings: EmrSettings
) -> None:
    """An anchor vouches for the rows up to it: the daily anchor bounds what can be rewritten unnoticed."""
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    _activity(session, world, reads=1)
    _rewrite_chain(session, _mallory(anchor.last_id + 3))
    assert _verify(session, tsa_settings).ok
    _rewrite_chain(session, _mallory(anchor.last_id))
    assert not _verify(session, tsa_settings).ok


def test_a_truncated_and_rewritten_chain_is_caught(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    _dba(session, f"DELETE FROM audit_log WHERE id >= {anchor.last_id - 1}")
    session.commit()
    last = anchor.last_id - 2
    _dba(
        session,
        f"UPDATE audit_head SET last_id = {last}, count = {last}, "
        f"last_hash = (SELECT hash FROM audit_log WHERE id = {last}) WHERE id = 1",
    )
    session.commit()
    result = _verify(session, tsa_settings)
    assert not result.ok
    assert any(f"anchor #{anchor.id}" in p and f"row {anchor.last_id} no longer exists" in p for p in result.problems)


def test_a_tampered_token_is_caught(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    token = bytes(anchor.token)

    def with_token(value: bytes) -> list[str]:
        _dba(session, "UPDATE audit_anchors SET token = :t WHERE id = :i", {"t": value, "i": anchor.id})
        session.commit()
        result = _verify(session, tsa_settings)
        assert not result.ok
        return [p for p in result.problems if f"anchor #{anchor.id}" in p]

    # the last bytes are the TSA's signature value
    flipped = token[:-1] + bytes([token[-1] ^ 0x01])
    assert any("signature invalid" in p for p in with_token(flipped))
    # a genuine token, but over another statement (row 1)
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

    first = session.scalars(select(AuditEntry).where(AuditEntry.id == 1)).one()
    session.rollback()
    other = asyncio.run(
        RequestsHTTPTimeStamper(tsa_settings.tsa_url).async_timestamp(
            hashlib.sha256(anchor_statement(1, first.hash)).digest(), "sha256"
        )
    ).dump()
    problems = with_token(other)
    assert any("does not certify this row id and hash" in p for p in problems)
    assert not any("signature invalid" in p for p in problems)  # the signature itself is fine
    # not a token at all
    assert any("unreadable" in p for p in with_token(b"\x30\x03\x02\x01\x00"))
    # the original again: all good
    _dba(session, "UPDATE audit_anchors SET token = :t WHERE id = :i", {"t": token, "i": anchor.id})
    session.commit()
    result = _verify(session, tsa_settings)
    assert result.ok, result.problems


def test_an_edited_anchor_hash_is_caught(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    """Rewriting the chain AND the anchor's stored hash: the token still certifies the old hash."""
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    _rewrite_chain(session, _mallory(2))
    new_hash = session.scalars(select(AuditEntry.hash).where(AuditEntry.id == anchor.last_id)).one()
    _dba(session, "UPDATE audit_anchors SET last_hash = :h WHERE id = :i", {"h": new_hash, "i": anchor.id})
    session.commit()
    result = _verify(session, tsa_settings)
    assert any("does not certify this row id and hash" in p for p in result.problems), result.problems


def test_a_token_from_an_untrusted_tsa_is_refused(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    _anchor(session, tsa_settings)
    result = verify_audit_chain(session, trust=AnchorTrust(trust_anchors=[]))
    session.rollback()
    assert not result.ok and any("does not chain to a configured trust anchor" in p for p in result.problems)


def test_re_anchoring_a_rewritten_chain_after_the_fact_is_caught(
    session: Session, world: World, tsa_settings: EmrSettings
) -> None:
    """The DBA deletes the anchors and asks the TSA anew for the rewritten chain's old heads."""
    _activity(session, world)
    anchor = _anchor(session, tsa_settings)
    _activity(session, world, reads=1)
    old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _dba(session, "DELETE FROM audit_anchors")
    session.commit()
    edit_row = _mallory(2)

    def rewrite(values: dict[str, Any]) -> None:  # the original rows were written days ago
        edit_row(values)
        values["at"] = old

    _rewrite_chain(session, rewrite)
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    row = next(e for e in entries if e.id == anchor.last_id)
    session.rollback()
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

    token = asyncio.run(
        RequestsHTTPTimeStamper(tsa_settings.tsa_url).async_timestamp(
            hashlib.sha256(anchor_statement(row.id, row.hash)).digest(), "sha256"
        )
    ).dump()
    from emr.access.audit import _token_info

    info = _token_info(token)
    assert info is not None
    session.add(
        AuditAnchor(
            created_at=info.gen_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            last_id=row.id,
            last_hash=row.hash,
            token=token,
            tsa_url=str(tsa_settings.tsa_url),
        )
    )
    session.commit()
    assert verify_audit_chain(session).rows == len(entries)
    session.rollback()
    result = _verify(session, tsa_settings)
    assert any("after the fact" in p for p in result.problems), result.problems


def test_deleted_anchor_rows_are_caught_with_the_anchors_file(
    session: Session, world: World, tsa_settings: EmrSettings
) -> None:
    _activity(session, world)
    first = _anchor(session, tsa_settings)
    first_id, first_time = first.id, first.created_at
    _activity(session, world, reads=1)
    _anchor(session, tsa_settings)
    _rewrite_chain(session, _mallory(2))
    _dba(session, "DELETE FROM audit_anchors")
    session.commit()

    # the database alone now looks clean: that is why the file is kept off the machine
    assert _verify(session, tsa_settings).ok
    result = _verify(session, tsa_settings, with_file=True)
    assert not result.ok
    assert any(
        f"anchor #{first_id} of {first_time}" in p and "missing from the database" in p for p in result.problems
    )
    assert any(f"anchor #{first_id}" in p and "rewritten" in p for p in result.problems)

    session.rollback()
    out = _cli(tsa_settings, "audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    copy = tsa_settings.data_dir / "offsite-copy.jsonl"
    copy.write_bytes(anchors_file(tsa_settings).read_bytes())
    out = _cli(tsa_settings, "audit", "verify", "--anchors", str(copy))
    assert out.returncode == 1 and "missing from the database" in out.stdout, out.stdout + out.stderr


def test_an_edited_anchors_file_is_reported(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    _anchor(session, tsa_settings)
    path = anchors_file(tsa_settings)
    record = json.loads(path.read_text())
    record["last_hash"] = "f" * 64
    path.write_text(json.dumps(record) + "\nnot json\n")
    result = _verify(session, tsa_settings, with_file=True)
    assert any("differs from its copy" in p for p in result.problems)
    assert any("line 2: not an anchor record" in p for p in result.problems)


def test_cli_anchor_then_verify(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    session.rollback()
    out = _cli(tsa_settings, "audit", "anchor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _anchor_rows(session) == 1 and len(anchors_file(tsa_settings).read_text().splitlines()) == 1
    out = _cli(tsa_settings, "audit", "verify", "--anchors", str(anchors_file(tsa_settings)))
    assert out.returncode == 0 and "1 anchor" in out.stdout, out.stdout + out.stderr
    missing = _cli(tsa_settings, "audit", "verify", "--anchors", str(tsa_settings.data_dir / "nope.jsonl"))
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr


def test_anchor_rows_are_append_only_on_postgresql(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    _anchor(session, tsa_settings)
    if session.bind.dialect.name != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("DELETE FROM audit_anchors"))
    session.rollback()
    assert _anchor_rows(session) == 1


def test_migration_matches_the_model(engine: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from emr.models import Base

    def touches(diff: Any) -> bool:
        text_ = repr(diff)
        return "audit_anchors" in text_

    with engine.connect() as c:
        diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata) if touches(d)]
    assert diffs == []


# -- the daily scheduler -----------------------------------------------------------


def test_the_scheduler_anchors_at_most_once_a_day(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    session.rollback()
    scheduler = AnchorScheduler(tsa_settings)
    try:
        assert scheduler.run_once() == "created"
        assert scheduler.run_once() == "not_due"
        assert scheduler.run_once() == "not_due"
        assert _anchor_rows(session) == 1
    finally:
        scheduler.stop()
    # a later day: due again
    tomorrow = AnchorScheduler(tsa_settings, clock=lambda: datetime.now(UTC) + timedelta(days=2))
    try:
        assert tomorrow.run_once() == "created"
    finally:
        tomorrow.stop()
    assert _anchor_rows(session) == 2
    assert _verify(session, tsa_settings, with_file=True).ok


def _wait_for(condition: Callable[[], bool]) -> bool:
    """Poll a background thread's progress (bounded); the result is asserted, not the time taken."""
    pause = threading.Event()
    for _ in range(3000):
        if condition():
            return True
        pause.wait(0.01)
    return False


def test_the_scheduler_thread_anchors_in_the_background(
    session: Session, world: World, tsa_settings: EmrSettings
) -> None:
    _activity(session, world)
    session.rollback()
    scheduler = AnchorScheduler(tsa_settings, initial_delay=0, check_interval=0.01).start()
    try:
        # checked again after anchoring: today is done
        assert _wait_for(lambda: scheduler.attempts >= 1 and scheduler.last_outcome == "not_due")
    finally:
        scheduler.stop()
    assert _anchor_rows(session) == 1 and scheduler.attempts == 1
    assert _verify(session, tsa_settings, with_file=True).ok


def test_an_anchor_made_by_hand_counts_for_the_day(session: Session, world: World, tsa_settings: EmrSettings) -> None:
    _activity(session, world)
    _anchor(session, tsa_settings)
    scheduler = AnchorScheduler(tsa_settings)
    try:
        assert scheduler.run_once() == "not_due" and scheduler.attempts == 0
    finally:
        scheduler.stop()


@pytest.mark.parametrize("where", ["closed port", "not a TSA"])
def test_the_scheduler_survives_a_tsa_that_is_down(
    session: Session, world: World, tsa_settings: EmrSettings, pki_server: DevPkiServer, where: str
) -> None:
    _activity(session, world)
    session.rollback()
    url = f"http://127.0.0.1:{free_port()}/tsa" if where == "closed port" else pki_server.url + "/crl"
    down = replace(tsa_settings, tsa_url=url)
    scheduler = AnchorScheduler(down, timeout=5)
    try:
        assert scheduler.run_once() == "failed"  # returned, not raised
    finally:
        scheduler.stop()
    assert _anchor_rows(session) == 0 and not anchors_file(down).exists()
    failed = session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.anchor")).one()
    assert failed.outcome == "failure" and json.loads(failed.details)["tsa_url"] == url
    session.rollback()
    assert _verify(session, down).ok

    # the thread keeps retrying and stays alive; once the TSA is back it anchors
    scheduler = AnchorScheduler(down, initial_delay=0, check_interval=0.01, retry_interval=0, timeout=5).start()
    try:
        assert _wait_for(lambda: scheduler.attempts >= 3)
        assert scheduler.alive and scheduler.last_outcome == "failed"
    finally:
        scheduler.stop()
    assert not scheduler.alive and _anchor_rows(session) == 0
    recovered = AnchorScheduler(tsa_settings)
    try:
        assert recovered.run_once() == "created"
    finally:
        recovered.stop()
