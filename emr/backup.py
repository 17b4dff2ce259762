"""A consistent copy of the EMR database while the EMR runs, and putting it back.

SQLite: the online backup API copies a transactionally consistent snapshot
even while the EMR writes (WAL mode). PostgreSQL: ``pg_dump`` in custom
format, restored with ``pg_restore`` into an empty database. Either way the
audit log comes back with its hash chain, so ``filmless audit verify`` checks
the restored copy as it checked the original.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from .core.exceptions import EmrError
from .core.settings import EmrSettings
from .db import make_engine, make_session_factory

__all__ = ["BackupError", "backup_database", "restore_database", "relink_all_studies", "database_kind"]


class BackupError(EmrError):
    """The EMR database could not be copied or put back."""


def database_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"no SQLite file in {url!r}")
    return Path(database)


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    parsed = make_url(url)
    args = ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)]
    if parsed.username:
        args += ["-U", parsed.username]
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return args + ["-d", str(parsed.database)], env


def backup_database(settings: EmrSettings, dest_dir: Path) -> Path:
    """Write a consistent copy of the EMR database into ``dest_dir``; returns the file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url
    if database_kind(url) == "sqlite":
        source = _sqlite_path(url)
        if not source.exists():
            raise BackupError(f"EMR database {source} does not exist")
        target = dest_dir / "emr.sqlite3"
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # one step: a snapshot under one read transaction
        finally:
            dst.close()
            src.close()
        os.chmod(target, 0o600)
        return target
    if shutil.which("pg_dump") is None:
        raise BackupError("pg_dump is not installed (Debian package postgresql-client)")
    target = dest_dir / "emr.pgdump"
    args, env = _pg_args(url)
    done = subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(target), *args],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
    os.chmod(target, 0o600)
    return target


def restore_database(settings: EmrSettings, dump: Path) -> None:
    """Put a copy written by :func:`backup_database` into an empty EMR database."""
    url = settings.database_url
    if database_kind(url) == "sqlite":
        if dump.suffix != ".sqlite3":
            raise BackupError(f"{dump.name} is not a SQLite backup, but the EMR is configured for SQLite")
        target = _sqlite_path(url)
        if target.exists() and target.stat().st_size > 0:
            raise BackupError(f"{target} already exists; restore only into an empty data directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copyfile(dump, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        return
    if dump.suffix != ".pgdump":
        raise BackupError(f"{dump.name} is not a PostgreSQL backup, but the EMR is configured for PostgreSQL")
    engine = make_engine(url)
    try:
        if inspect(engine).get_table_names():
            raise BackupError("the EMR's PostgreSQL database is not empty; restore only into an empty database")
    finally:
        engine.dispose()
    args, env = _pg_args(url)
    done = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", *args, str(dump)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def relink_all_studies(settings: EmrSettings) -> None:
    """Make the study linker read Orthanc's changes feed from the start again.

    A restored Orthanc numbers its changes anew, so the linker's saved position
    means nothing there; studies the EMR already linked are skipped, and a
    study stored after the database was copied gets linked like a new one.
    """
    from .imaging.linking import reset_position

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            reset_position(session)
            session.commit()
    finally:
        engine.dispose()
