"""Declarative base and shared column helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

__all__ = ["Base", "utcnow", "LOCAL_OFFSET"]

# Vietnam (ICT) is UTC+7 all year (no daylight saving): times typed by users and
# dates sent to modalities are local.
LOCAL_OFFSET = timedelta(hours=7)

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    """Naive UTC: both SQLite and PostgreSQL store it unchanged (display converts to ICT)."""
    return datetime.now(UTC).replace(tzinfo=None)
