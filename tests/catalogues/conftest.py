"""Catalogue fixtures: the EMR's SQLite + PostgreSQL fixtures and the sample Ministry files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session

from emr.catalogues import CatalogueLoad, load_catalogue
from tests.emr.conftest import (  # noqa: F401  (fixtures re-exported for this folder)
    ADMIN_ACTOR,
    World,
    _cheap_argon2,
    app,
    client,
    database_url,
    engine,
    patient_data,
    pg_database,
    session,
    settings,
    sqlite_template,
    tokens,
    world,
)

DATA = Path(__file__).with_name("data")
ALL_KINDS = ("icd10", "dvkt", "facility", "department", "admin_unit", "admin_unit_map")


def load(session: Session, kind: str, name: str | None = None, *, since: date = date(2020, 1, 1)) -> CatalogueLoad:  # noqa: F811
    return load_catalogue(session, ADMIN_ACTOR, kind, DATA / (name or f"{kind}.csv"), valid_from=since)


def load_all(session: Session, since: date = date(2020, 1, 1)) -> None:  # noqa: F811
    for kind in ALL_KINDS:
        load(session, kind, since=since)
