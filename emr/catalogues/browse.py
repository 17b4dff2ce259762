"""What the catalogue pages show, as plain functions (the views only render): the versions of
each kind and one page of a version's entries, each view audited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import local_today
from emr.core.exceptions import NotFoundError

from ..models import CatalogueEntry, CatalogueVersion
from .kinds import KINDS
from .lookup import list_versions, search_entries, version_on

__all__ = ["EntryPage", "catalogue_overview", "entry_page", "PER_PAGE"]

PER_PAGE = 50


@dataclass(frozen=True)
class EntryPage:
    version: CatalogueVersion
    rows: list[CatalogueEntry]
    total: int
    page: int
    pages: int
    query: str
    parent_names: dict[str, str]  # province of a commune or facility, new commune of an old one


def catalogue_overview(session: Session, actor: Actor) -> dict[str, list[CatalogueVersion]]:
    """Every kind (in the order of KINDS) with its versions, newest first; [] = never loaded."""
    out: dict[str, list[CatalogueVersion]] = {kind: [] for kind in KINDS}
    for version in list_versions(session):
        out.setdefault(version.kind, []).append(version)
    audit.record(session, actor, "catalog.view", object_type="catalogue")
    session.commit()
    return out


def entry_page(session: Session, actor: Actor, version_id: int, query: str = "", page: int = 1) -> EntryPage:
    # An id past a 32-bit integer cannot exist (and would be an error in the database, not a 404).
    version = session.get(CatalogueVersion, version_id) if 0 < version_id < 2**31 else None
    if version is None:
        raise NotFoundError("catalogue version", version_id)
    # Control characters (NUL ends a pattern in SQLite's LIKE and would match every row) are dropped.
    query = " ".join("".join(c for c in query[:1000] if c.isprintable()).split())[:100]
    rows, total = search_entries(session, version.id, query, page=page, per_page=PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:
        page = pages
        rows, total = search_entries(session, version.id, query, page=page, per_page=PER_PAGE)
    audit.record(
        session,
        actor,
        "catalog.view",
        object_type="catalogue",
        object_id=version.id,
        details={"kind": version.kind, "query": query, "page": page},
    )
    session.commit()
    return EntryPage(version, rows, total, page, pages, query, _parent_names(session, version, rows))


def _parent_names(session: Session, version: CatalogueVersion, rows: list[CatalogueEntry]) -> dict[str, str]:
    """Names of the page's parent codes from the unit list (the same version for units, else the one in force)."""
    codes = {r.parent for r in rows if r.parent}
    if not codes:
        return {}
    units = version if version.kind == "admin_unit" else version_on(session, "admin_unit", local_today())
    if units is None:
        return {}
    found = session.execute(
        select(CatalogueEntry.code, CatalogueEntry.name).where(
            CatalogueEntry.version_id == units.id, CatalogueEntry.code.in_(codes)
        )
    )
    return {code: name for code, name in found}
