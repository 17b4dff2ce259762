"""Which version of a catalogue was in force on a day, and what it says about a code.

A kind that was never loaded is not enforced (a site starts with the lists
it has; the admin page shows which are missing). Once a kind has a version,
a code is valid on a day only if the version in force that day lists it; a
day no version covers (before the first one) is an error too, so nothing is
checked against a list that did not yet exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from emr.core.normalize import fold

from ..models import CatalogueEntry, CatalogueVersion, Icd10Code
from .packaged import SHIPPED, shipped_name

__all__ = [
    "CodeCheck",
    "version_on",
    "has_versions",
    "codes_on",
    "entry_on",
    "check_code",
    "code_name",
    "unknown_icd10",
    "new_communes",
    "search_entries",
    "list_versions",
]


@dataclass(frozen=True)
class CodeCheck:
    """A refused code: i18n key and its parameters."""

    key: str
    params: dict[str, object]


def has_versions(session: Session, kind: str) -> bool:
    return session.scalar(select(CatalogueVersion.id).where(CatalogueVersion.kind == kind).limit(1)) is not None


def version_on(session: Session, kind: str, on: date) -> CatalogueVersion | None:
    return session.scalar(
        select(CatalogueVersion)
        .where(
            CatalogueVersion.kind == kind,
            CatalogueVersion.valid_from <= on,
            or_(CatalogueVersion.valid_to.is_(None), CatalogueVersion.valid_to >= on),
        )
        .order_by(CatalogueVersion.valid_from.desc())
        .limit(1)
    )


def codes_on(session: Session, kind: str, on: date) -> set[str]:
    version = version_on(session, kind, on)
    if version is None:
        return set()
    return set(session.scalars(select(CatalogueEntry.code).where(CatalogueEntry.version_id == version.id)))


def entry_on(session: Session, kind: str, code: str, on: date) -> CatalogueEntry | None:
    version = version_on(session, kind, on)
    if version is None:
        return None
    return session.scalar(
        select(CatalogueEntry).where(CatalogueEntry.version_id == version.id, CatalogueEntry.code == code).limit(1)
    )


def code_name(session: Session, kind: str, code: str, on: date) -> str | None:
    """The name ``code`` has in the ``kind`` version in force on ``on``; a kind never loaded: in the list
    shipped with filmless (ethnicity, religion), so a name shows before a site loads anything. None: unknown."""
    if not code:
        return None
    if has_versions(session, kind):
        entry = entry_on(session, kind, code, on)
        return entry.name if entry is not None else None
    return shipped_name(kind, code)


def new_communes(session: Session, old_code: str, on: date) -> list[str]:
    """The communes an old (before 1 July 2025) commune code became, by the mapping in force on ``on``."""
    version = version_on(session, "admin_unit_map", on)
    if version is None:
        return []
    return list(
        session.scalars(
            select(CatalogueEntry.parent)
            .where(CatalogueEntry.version_id == version.id, CatalogueEntry.code == old_code)
            .order_by(CatalogueEntry.parent)
        )
    )


def check_code(session: Session, kind: str, code: str, on: date, *, parent: str | None = None) -> CodeCheck | None:
    """None when ``code`` is valid on ``on`` (or the kind was never loaded); else why not.

    A kind with a list shipped with filmless (ethnicity, religion: :data:`~.packaged.SHIPPED`) and no
    loaded version is checked against the shipped list, the one whose names the chart shows.
    ``parent``: the commune must lie in this province (admin_unit).
    """
    if not has_versions(session, kind):
        if kind in SHIPPED and shipped_name(kind, code) is None:
            return CodeCheck(
                f"catalogues.check.unknown_{kind}",
                {"code": code, "date": f"{on:%d/%m/%Y}", "version": SHIPPED[kind][1]},
            )
        return None
    version = version_on(session, kind, on)
    if version is None:
        return CodeCheck("catalogues.check.no_version", {"kind": kind, "date": f"{on:%d/%m/%Y}"})
    query = select(CatalogueEntry).where(CatalogueEntry.version_id == version.id, CatalogueEntry.code == code)
    entry = session.scalar(query.limit(1))
    if entry is None:
        if kind == "admin_unit" and len(code) == 5:
            new = new_communes(session, code, on)
            if new:
                return CodeCheck("catalogues.check.old_commune", {"code": code, "new": ", ".join(new)})
        return CodeCheck(
            f"catalogues.check.unknown_{kind}", {"code": code, "date": f"{on:%d/%m/%Y}", "version": version.source}
        )
    if parent is not None and entry.parent != parent:
        return CodeCheck(
            "catalogues.check.wrong_province", {"code": code, "province": parent, "actual": entry.parent or ""}
        )
    return None


def unknown_icd10(session: Session, codes: list[str], on: date) -> list[str]:
    """The ICD-10 codes among ``codes`` (upper case, as the schemas make them) that may not be entered on
    ``on``, each once, in the order given: not in the loaded ICD-10 list (``Icd10Code``), or not in the
    Ministry's ICD-10 version in force that day (issue 15 §4). One rule for every door that takes
    diagnosis codes: the visit form and API, the diagnosis paper."""
    return [
        code
        for code in dict.fromkeys(codes)
        if session.get(Icd10Code, code) is None or check_code(session, "icd10", code, on) is not None
    ]


def list_versions(session: Session, kind: str | None = None) -> list[CatalogueVersion]:
    query = select(CatalogueVersion).order_by(CatalogueVersion.kind, CatalogueVersion.valid_from.desc())
    if kind is not None:
        query = query.where(CatalogueVersion.kind == kind)
    return list(session.scalars(query))


def search_entries(
    session: Session, version_id: int, text: str = "", *, page: int = 1, per_page: int = 50
) -> tuple[list[CatalogueEntry], int]:
    """One page of a version's entries, by code; ``text`` matches code or name, with or without
    diacritics. A code prefix search uses the (version, code) index; a word search scans one version
    (≈40k rows for ICD-10), which stays in the tens of milliseconds."""
    query = select(CatalogueEntry).where(CatalogueEntry.version_id == version_id)
    needle = fold(text)[:100]
    if needle:
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(
                CatalogueEntry.code.startswith(text.strip().upper()[:30], autoescape=True),
                CatalogueEntry.folded.like(f"%{escaped}%", escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    kind = session.scalar(select(CatalogueVersion.kind).where(CatalogueVersion.id == version_id))
    # By code, which the (version_id, code) index serves; administrative units: provinces, then their communes.
    order = (
        (CatalogueEntry.parent.nulls_first(), CatalogueEntry.code) if kind == "admin_unit" else (CatalogueEntry.code,)
    )
    rows = session.scalars(query.order_by(*order).offset((max(page, 1) - 1) * per_page).limit(per_page))
    return list(rows), int(total)
