"""HL7 message bytes are kept FILMLESS_HL7_KEEP_DAYS, then emptied; the log row stays.

Every message a HIS sends carries a patient's identity; once applied, the
record holds what it said. Keeping the bytes for ever is personal data kept
longer than needed, so after the set days they are emptied: the row (type,
control ID, sender, status, patient) stays for the trail, a purged message
cannot be replayed, and outbound messages not yet delivered keep theirs.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.exceptions import InvalidState
from emr.core.settings import EmrSettings
from emr.hl7.messages import purge_raw, replay
from emr.i18n import t
from emr.models import Hl7Message, utcnow

from . import test_prices as prices
from .conftest import World, login

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)

ADT = b"MSH|^~\\&|HIS|BVDKT|FILMLESS|BVDKT|20260801120000||ADT^A04|MSG1|P|2.5\rPID|1||BN1^^^BVDKT||Nguyen^An\r"


def _message(session: Session, *, age_days: int, direction: str = "in", status: str = "processed") -> int:
    row = Hl7Message(direction=direction, at=utcnow() - timedelta(days=age_days), message_type="ADT^A04",
                     control_id=f"MSG-{age_days}-{status}", charset="utf-8", raw=ADT, status=status,
                     ack_code="AA", ack=b"MSH|...\rMSA|AA|MSG1\r", sending_facility="BVDKT")
    session.add(row)
    session.commit()
    return row.id


def test_old_bytes_are_emptied_and_the_row_stays(session: Session) -> None:
    old = _message(session, age_days=100)
    old_error = _message(session, age_days=95, status="error")
    recent = _message(session, age_days=10)
    queued = _message(session, age_days=200, direction="out", status="queued")
    failed = _message(session, age_days=200, direction="out", status="failed")

    assert purge_raw(session, 90) == 2
    session.commit()
    rows = {r.id: r for r in session.scalars(select(Hl7Message))}
    for pid in (old, old_error):
        assert rows[pid].raw == b"" and rows[pid].ack is None and rows[pid].raw_purged_at is not None
        assert rows[pid].control_id and rows[pid].message_type == "ADT^A04" and rows[pid].status  # the trail
    for kept in (recent, queued, failed):
        assert rows[kept].raw == ADT and rows[kept].raw_purged_at is None
    assert purge_raw(session, 90) == 0  # idempotent: several EMR processes run it


def test_a_purged_message_cannot_be_replayed(session: Session, world: World, settings: EmrSettings) -> None:
    old = _message(session, age_days=100)
    purge_raw(session, 90)
    session.commit()
    with pytest.raises(InvalidState) as err:
        replay(session, world.actor("admin"), old, settings)
    assert err.value.key == "hl7.error.purged"


def test_the_message_page_says_the_bytes_were_purged(app: Flask, world: World, session: Session) -> None:
    old = _message(session, age_days=100)
    purge_raw(session, 90)
    session.commit()
    admin = app.test_client()
    login(admin, "admin1")
    page = admin.get(f"/admin/hl7/{old}").get_data(as_text=True)
    assert t("hl7.purged", time="@").split("@")[0].strip() in page and "ADT^A04" in page and "PID|" not in page


def test_the_emr_process_purges_in_the_background(session: Session, settings: EmrSettings) -> None:
    """emr.server hands purge_raw to the outbox worker, whose hourly purge runs it (at once on start)."""
    from emr.outbox import OutboxWorker

    old = _message(session, age_days=100)
    worker = OutboxWorker(settings, poll_interval=0.05, hourly=[lambda s: purge_raw(s, 30)]).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            session.expire_all()
            if session.get(Hl7Message, old).raw_purged_at is not None:  # type: ignore[union-attr]
                break
            session.rollback()
            time.sleep(0.05)
        assert session.get(Hl7Message, old).raw == b""  # type: ignore[union-attr]
        session.rollback()
    finally:
        worker.stop()


def test_migration_0020_matches_the_models(empty_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    engine, _ = prices.at_revision(empty_url, "0019")
    try:
        upgrade(engine)
        with engine.connect() as c:
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"hl7_messages"})]
            assert diffs == []
    finally:
        engine.dispose()
