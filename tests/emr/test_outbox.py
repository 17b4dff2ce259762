"""The durable outbox on a real database: idempotent enqueue, atomic claiming, back-off, dead letters, resend."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from emr import Actor, EmrSettings
from emr.core import clock
from emr.db import make_engine, make_session_factory
from emr.models import AuditEntry, OutboxAttempt, OutboxMessage
from emr.outbox import (
    DeliveryError,
    HandlerContext,
    OutboxWorker,
    backoff_seconds,
    enqueue,
    messages_for_patient,
    overview,
    register_handler,
    resend,
    run_due,
)
from emr.outbox import (
    OutboxMessage as PublicOutboxMessage,
)
from tests.emr.conftest import _truncate_pg
from tests.helpers import wait_for

OPERATOR = Actor(7, "admin1", "admin", "10.0.0.9")


def _settings(url: str, tmp_path: Path, **over: object) -> EmrSettings:
    values: dict[str, object] = {
        "data_dir": tmp_path, "database_url": url, "outbox_max_attempts": 3,
        "outbox_retry_seconds": 30, "outbox_retry_max_seconds": 100, "outbox_lease_seconds": 60,
    }
    values.update(over)
    return EmrSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "emr.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


class Contexts:
    """Handler contexts on their own engines (one per simulated EMR process)."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url, self.tmp_path, self.engines = url, tmp_path, []  # type: list[object]

    def make(self, **over: object) -> HandlerContext:
        engine = make_engine(self.url)
        self.engines.append(engine)
        return HandlerContext(make_session_factory(engine), _settings(self.url, self.tmp_path, **over))


@pytest.fixture
def contexts(sqlite_url: str, tmp_path: Path) -> Iterator[Contexts]:
    made = Contexts(sqlite_url, tmp_path)
    yield made
    for engine in made.engines:
        engine.dispose()  # type: ignore[attr-defined]


class Recorder:
    """A handler that records what it delivered and fails on demand."""

    def __init__(self) -> None:
        self.kind = f"test.{uuid.uuid4().hex[:8]}"
        self.delivered: list[tuple[int, dict[str, object]]] = []
        self.fail: DeliveryError | Exception | None = None
        self.lock = threading.Lock()
        register_handler(self.kind, self)

    def __call__(self, message: OutboxMessage, context: HandlerContext) -> str:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.delivered.append((message.id, dict(message.payload)))
        return f"receipt-{message.id}"


def _enqueue(ctx: HandlerContext, kind: str, key: str, payload: dict[str, object] | None = None) -> int:
    with ctx.session_factory() as session:
        message = enqueue(session, kind, key, payload or {"n": key}, target="http://ehr.test/fhir", subject=key)
        session.commit()
        return message.id


def _message(ctx: HandlerContext, message_id: int) -> OutboxMessage:
    with ctx.session_factory() as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        session.expunge(message)
        return message


def test_public_names_are_the_shared_interface() -> None:
    assert PublicOutboxMessage is OutboxMessage
    assert DeliveryError("x").permanent is False and DeliveryError("x", permanent=True).permanent


def test_enqueue_is_idempotent_on_kind_and_key(contexts: Contexts) -> None:
    ctx = contexts.make()
    rec = Recorder()
    first = _enqueue(ctx, rec.kind, "visit-1", {"v": 1})
    again = _enqueue(ctx, rec.kind, "visit-1", {"v": 2})
    other_kind = _enqueue(ctx, rec.kind + "x", "visit-1", {"v": 3})
    assert again == first and other_kind != first
    with ctx.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2
        assert session.get(OutboxMessage, first).payload == {"v": 1}  # type: ignore[union-attr]
    # the same key after delivery is still the same (delivered) message: nothing is sent twice
    assert [d.outcome for d in run_due(ctx, kinds=[rec.kind])] == ["sent"]
    assert _enqueue(ctx, rec.kind, "visit-1", {"v": 9}) == first
    assert run_due(ctx, kinds=[rec.kind]) == []
    assert rec.delivered == [(first, {"v": 1})]


def test_enqueue_rolls_back_with_the_change(contexts: Contexts) -> None:
    ctx = contexts.make()
    with ctx.session_factory() as session:
        enqueue(session, "test.rollback", "k", {}, target="t")
        session.rollback()
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_delivery_records_the_attempt_and_the_receipt(contexts: Contexts) -> None:
    ctx = contexts.make()
    rec = Recorder()
    mid = _enqueue(ctx, rec.kind, "a")
    [delivery] = run_due(ctx)
    assert (delivery.message_id, delivery.outcome) == (mid, "sent")
    message = _message(ctx, mid)
    assert message.status == "sent" and message.result == f"receipt-{mid}" and message.sent_at is not None
    assert message.attempts == 1 and message.lease_token is None
    with ctx.session_factory() as session:
        [attempt] = session.scalars(select(OutboxAttempt).where(OutboxAttempt.message_id == mid)).all()
        assert attempt.outcome == "sent" and attempt.worker == ctx.worker


def test_failures_back_off_then_dead_letter_then_resend(contexts: Contexts) -> None:
    ctx = contexts.make()
    rec = Recorder()
    rec.fail = DeliveryError("HTTP 503 from the EHR")
    mid = _enqueue(ctx, rec.kind, "b")
    before = clock.utcnow()
    assert [d.outcome for d in run_due(ctx)] == ["failed"]
    message = _message(ctx, mid)
    assert message.status == "failed" and message.last_error == "HTTP 503 from the EHR"
    assert message.next_attempt_at >= before + timedelta(seconds=30)
    assert run_due(ctx) == []  # not due yet: the back-off holds

    later = clock.utcnow() + timedelta(seconds=31)
    assert [d.outcome for d in run_due(ctx, now=lambda: later)] == ["failed"]
    # second failure doubles the delay (60 s), still under the cap
    assert _message(ctx, mid).next_attempt_at >= later + timedelta(seconds=59) - timedelta(seconds=31)
    much_later = clock.utcnow() + timedelta(hours=1)
    assert [d.outcome for d in run_due(ctx, now=lambda: much_later)] == ["dead"]  # third of three attempts
    assert _message(ctx, mid).status == "dead"
    assert run_due(ctx, now=lambda: much_later + timedelta(days=1)) == []  # dead stays dead

    with ctx.session_factory() as session:
        resend(session, mid, OPERATOR)
        session.commit()
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "outbox.resend")).one()
        assert audit.object_id == str(mid) and audit.username == "admin1"
    rec.fail = None
    assert [d.outcome for d in run_due(ctx)] == ["sent"]
    message = _message(ctx, mid)
    assert message.status == "sent" and message.last_error is None and message.attempts == 1
    with ctx.session_factory() as session:
        outcomes = session.scalars(
            select(OutboxAttempt.outcome).where(OutboxAttempt.message_id == mid).order_by(OutboxAttempt.id)
        ).all()
    assert outcomes == ["failed", "failed", "dead", "sent"]
    assert rec.delivered == [(mid, {"n": "b"})]


def test_permanent_error_and_crash_of_a_handler(contexts: Contexts) -> None:
    ctx = contexts.make()
    rec = Recorder()
    rec.fail = DeliveryError("Bundle rejected: 422", permanent=True)
    mid = _enqueue(ctx, rec.kind, "c")
    assert [d.outcome for d in run_due(ctx)] == ["dead"]
    rec.fail = RuntimeError("bug in handler")
    other = _enqueue(ctx, rec.kind, "d")
    [delivery] = run_due(ctx)
    assert delivery.message_id == other and delivery.outcome == "failed"
    assert "RuntimeError: bug in handler" in (_message(ctx, other).last_error or "")
    with ctx.session_factory() as session, pytest.raises(Exception, match="is sent|is failed|is dead") as info:
        message = session.get(OutboxMessage, mid)
        assert message is not None
        message.status = "sent"
        session.commit()
        resend(session, mid, OPERATOR)
    assert getattr(info.value, "key", "") == "outbox.errors.not_resendable"


def test_backoff_is_capped() -> None:
    settings = EmrSettings(outbox_retry_seconds=30, outbox_retry_max_seconds=100)
    assert [backoff_seconds(n, settings) for n in (1, 2, 3, 4, 20)] == [30, 60, 100, 100, 100]


def test_a_dead_workers_lease_expires_and_its_late_outcome_is_ignored(contexts: Contexts) -> None:
    ctx = contexts.make(outbox_lease_seconds=60)
    rec = Recorder()
    mid = _enqueue(ctx, rec.kind, "e")
    slow_ctx = contexts.make()
    seen = threading.Event()
    release = threading.Event()

    def stuck(message: OutboxMessage, _context: HandlerContext) -> None:
        seen.set()
        release.wait(10)

    stuck_kind = rec.kind + ".stuck"
    register_handler(stuck_kind, stuck)
    with ctx.session_factory() as session:
        session.get(OutboxMessage, mid).kind = stuck_kind  # type: ignore[union-attr]
        session.commit()
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.extend(run_due(slow_ctx, kinds=[stuck_kind])))
    worker.start()
    assert seen.wait(10)
    assert _message(ctx, mid).status == "sending"
    assert run_due(ctx, kinds=[stuck_kind]) == []  # leased: nobody else takes it
    register_handler(stuck_kind, rec)
    after_lease = clock.utcnow() + timedelta(seconds=61)
    assert [d.outcome for d in run_due(ctx, kinds=[stuck_kind], now=lambda: after_lease)] == ["sent"]
    release.set()
    worker.join(10)
    assert [d.outcome for d in results] == ["lost"]  # type: ignore[attr-defined]
    message = _message(ctx, mid)
    assert message.status == "sent" and message.attempts == 2
    assert rec.delivered == [(mid, {"n": "e"})]


def test_kinds_without_a_handler_here_are_left_alone(contexts: Contexts) -> None:
    ctx = contexts.make()
    mid = _enqueue(ctx, f"unhandled.{uuid.uuid4().hex[:6]}", "f")
    run_due(ctx)
    assert _message(ctx, mid).status == "waiting"


def test_chart_status_and_overview(contexts: Contexts) -> None:
    from emr.patients import service as patients

    ctx = contexts.make()
    rec = Recorder()
    with ctx.session_factory() as session:
        patient = patients.create_patient(session, OPERATOR, _patient_form())
        session.flush()
        first = enqueue(session, rec.kind, "p1", {}, target="t", patient_id=patient.id, subject="Tóm tắt 1")
        second = enqueue(session, rec.kind, "p2", {}, target="t", patient_id=patient.id, subject="Tóm tắt 2")
        enqueue(session, rec.kind, "other", {}, target="t")
        session.commit()
        pid = patient.id
    rec.fail = DeliveryError("down")
    run_due(ctx, limit=1)
    with ctx.session_factory() as session:
        shown = messages_for_patient(session, pid)
        assert [m.id for m in shown] == [second.id, first.id]
        assert {m.status for m in shown} == {"waiting", "failed"}
        seen = overview(session)
        assert seen.counts["failed"] == 1 and seen.counts["waiting"] == 2 and rec.kind in seen.kinds
        assert seen.oldest_pending_at is not None


def _patient_form() -> dict[str, object]:
    from tests.emr.conftest import patient_data

    return patient_data()


def _race(ctx_a: HandlerContext, ctx_b: HandlerContext, rec: Recorder, n: int) -> None:
    ids = [_enqueue(ctx_a, rec.kind, f"race-{i}") for i in range(n)]
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda c=c: results.extend(run_due(c, kinds=[rec.kind])))  # type: ignore[misc]
        for c in (ctx_a, ctx_b, ctx_a, ctx_b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(i for i, _ in rec.delivered) == sorted(ids)  # each once, none lost
    assert len(results) == n


def test_two_processes_never_deliver_one_message_twice_sqlite(contexts: Contexts) -> None:
    _race(contexts.make(), contexts.make(), Recorder(), 30)


def test_two_processes_never_deliver_one_message_twice_postgresql(pg_database: str, tmp_path: Path) -> None:
    _truncate_pg(pg_database)
    made = Contexts(pg_database, tmp_path)
    try:
        _race(made.make(), made.make(), Recorder(), 30)
        ctx = made.make()
        rec = Recorder()
        assert _enqueue(ctx, rec.kind, "same") == _enqueue(ctx, rec.kind, "same")
    finally:
        for engine in made.engines:
            engine.dispose()  # type: ignore[attr-defined]


def test_worker_thread_sends_after_commit(sqlite_url: str, tmp_path: Path) -> None:
    rec = Recorder()
    settings = _settings(sqlite_url, tmp_path, outbox_poll_seconds=30.0)
    worker = OutboxWorker(settings).start()
    try:
        ctx = HandlerContext(worker.context.session_factory, settings)
        mid = _enqueue(ctx, rec.kind, "w")  # the commit wakes the worker: no 30 s poll wait
        wait_for(lambda: rec.delivered, timeout=10)
        wait_for(lambda: _message(ctx, mid).status == "sent", timeout=10)
        assert worker.alive
    finally:
        worker.stop()
    assert not worker.alive
