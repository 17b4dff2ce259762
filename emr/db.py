"""Database engine, sessions and migrations: the one module that reaches the database.

Views get a request-scoped session through :func:`session`; background
threads (linker, worklist) build their own sessions from the same factory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_session_factory", "init_app", "session", "singleton_lock", "upgrade", "MIGRATIONS_DIR"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine with SQLite made safe for threads and concurrent readers (WAL, FKs, busy timeout)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if not Path(path).exists():
                # Health data: readable by the service account only (SQLite gives
                # its -wal/-shm files the same mode).
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, start transactions (see _begin).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # IMMEDIATE: take the write lock up front, so two writers queue
            # (busy timeout) instead of one failing on a stale snapshot; the
            # audit chain relies on appends being serialised.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def init_app(app: Flask, factory: sessionmaker[Session]) -> None:
    app.extensions["emr.sessions"] = factory

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        db = g.pop("emr_db", None)
        if db is not None:
            db.rollback()
            db.close()


def session() -> Session:
    """The request's session (created on first use, closed at teardown)."""
    from flask import current_app

    if "emr_db" not in g:
        g.emr_db = current_app.extensions["emr.sessions"]()
    db: Session = g.emr_db
    return db


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations programmatically (``filmless up`` calls this at start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"filmless:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def singleton_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Run a periodic job in one process at a time: ``with singleton_lock(engine, "linker") as held:``.

    Several EMR processes (waitress workers behind nginx, or EMR nodes on one
    PostgreSQL) each start the background jobs; without this every process
    would link the same study, ask the TSA for the same day's anchor, send the
    same outbox message. The lock is tried, never waited for: ``held`` is
    False when another process is running the job now, and the caller skips
    this period (the holder is doing the work).

    PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a
    connection kept for the block, so it is released when the block ends and,
    if the process dies, when PostgreSQL notices the connection is gone; no
    table, no stale lock to clean up. SQLite: an exclusive ``flock`` on
    ``<database>.<name>.lock`` beside the database file (released by the
    kernel when the process dies); an in-memory database is one process, so
    the lock is always held.
    """
    if engine.dialect.name == "postgresql":
        with _pg_advisory_lock(engine, name) as held:
            yield held
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield True
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = Path(f"{database}.{safe}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _pg_advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    key = _advisory_key(name)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        try:
            yield held
        finally:
            if held:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except Exception:  # noqa: BLE001 - a dead connection has released the lock already
                    log.warning("could not release the %s lock; dropping its connection", name)
                    conn.invalidate()
    finally:
        conn.close()
