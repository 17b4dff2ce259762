"""Throw-away PostgreSQL databases on the local server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PG_HOST", "PG_PORT", "throwaway_database"]

PG_HOST = "127.0.0.1"
PG_PORT = 5432


def _psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1",
         "-tAc", sql],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout


def pg_available() -> bool:
    try:
        _psql("select 1")
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return True


@contextmanager
def throwaway_database(prefix: str = "filmless_test") -> Iterator[str]:
    """Create a database, yield its name, drop it afterwards (even if in use)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(db: str, sql: str) -> str:
    return _psql(sql, db)
