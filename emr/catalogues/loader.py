"""Loading a catalogue file as a new version: every line or none.

Every bad line is reported (line number and reason, in Vietnamese) and
nothing is written; the refusal is audited. A version starts on
``valid_from`` and the version in force before it is closed the day before,
so earlier claims keep being checked against the list they were made under.
A version never starts on or before the newest one of its kind: history is
not rewritten (a wrong list is replaced by a corrected one from a later day).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.exceptions import FileRejected
from emr.core.normalize import fold

from ..models import CatalogueEntry, CatalogueVersion, Icd10Code
from .kinds import KINDS, Kind
from .reader import TableError, read_table

__all__ = ["CatalogueLoad", "Line", "load_catalogue", "store_version"]

Problem = tuple[int, str, dict[str, object]]
_AMOUNT = re.compile(r"\d{1,13}(\.\d{1,2})?")  # VND, QĐ 130 money: at most 15 characters, 2 decimals
_ICD_MARKS = "*†+"  # dagger/asterisk marks some ICD lists print after a code


@dataclass(frozen=True)
class Line:
    line: int
    code: str
    name: str
    parent: str | None = None
    parent_name: str | None = None
    price: Decimal | None = None


@dataclass(frozen=True)
class CatalogueLoad:
    version_id: int
    kind: str
    entries: int
    valid_from: date
    closed_version_id: int | None  # the version this one ended


def _code(kind: Kind, field: str, raw: str) -> str:
    col = kind.column(field)
    value = raw.strip()
    if kind.name == "icd10" and field == "code":
        value = value.rstrip(_ICD_MARKS).upper()
    elif kind.name in ("dvkt", "department"):
        value = value.upper()
    if col is not None and col.pad and value.isdigit() and len(value) < col.pad:
        value = value.zfill(col.pad)
    return value


def _parse(kind: Kind, fields: dict[str, int], line: int, cells: list[str], problems: list[Problem]) -> Line | None:
    before = len(problems)

    def cell(field: str) -> str:
        i = fields.get(field)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    values: dict[str, str | None] = {}
    for col in kind.columns:
        raw = cell(col.field)
        if col.field == "price":
            continue
        if not raw:
            if col.required:
                problems.append((line, "catalogues.error.missing", {"column": col.aliases[0].upper()}))
            values[col.field] = None
            continue
        value = _code(kind, col.field, raw) if col.pattern else " ".join(raw.split())
        if col.pattern and not re.fullmatch(col.pattern, value):
            problems.append((line, "catalogues.error.format", {"column": col.aliases[0].upper(), "value": raw[:40]}))
        elif len(value) > 500 or "\x00" in value:
            problems.append((line, "catalogues.error.too_long", {"column": col.aliases[0].upper()}))
        values[col.field] = value
    price: Decimal | None = None
    raw_price = cell("price").replace(" ", "")
    if raw_price:
        if _AMOUNT.fullmatch(raw_price):
            price = Decimal(raw_price)
        else:
            problems.append((line, "catalogues.error.price", {"value": raw_price[:40]}))
    if len(problems) > before:
        return None
    return Line(
        line,
        str(values["code"]),
        str(values["name"]),
        values.get("parent"),
        values.get("parent_name"),
        price,
    )


def _parse_file(kind: Kind, path: Path) -> tuple[list[Line], list[Problem]]:
    try:
        fields, rows = read_table(path, kind)
    except TableError as exc:
        return [], [(exc.line, exc.key, dict(exc.params))]
    problems: list[Problem] = []
    lines: list[Line] = []
    for line, cells in rows:
        parsed = _parse(kind, fields, line, cells, problems)
        if parsed is not None:
            lines.append(parsed)
    if not lines and not problems:
        problems.append((1, "catalogues.error.empty", {}))
    return lines, problems


def _consistency(session: Session, kind: Kind, lines: list[Line], valid_from: date) -> list[Problem]:
    """Duplicates, one name per province, and parents that exist on the day the version starts."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str | None], int] = {}
    provinces: dict[str, tuple[str, int]] = {}
    for ln in lines:
        key = (ln.code, None if kind.unique_code else ln.parent)
        if key in seen:
            problems.append((ln.line, "catalogues.error.duplicate", {"code": ln.code, "first": seen[key]}))
        else:
            seen[key] = ln.line
        if kind.name == "admin_unit" and ln.parent and ln.parent_name:
            known = provinces.setdefault(ln.parent, (ln.parent_name, ln.line))
            if known[0] != ln.parent_name:
                problems.append(
                    (
                        ln.line,
                        "catalogues.error.province_name",
                        {"code": ln.parent, "name": known[0], "first": known[1]},
                    )
                )
    if kind.parent_kind is not None:
        from .lookup import codes_on  # same package; a function, so no import cycle at load time

        parents = codes_on(session, kind.parent_kind, valid_from)
        for ln in lines:
            if ln.parent is not None and ln.parent not in parents:
                problems.append((ln.line, "catalogues.error.parent", {"code": ln.parent, "kind": kind.parent_kind}))
    return problems


def _entries(kind: Kind, lines: list[Line]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    if kind.name == "admin_unit":  # the provinces, from the communes' lines
        provinces: dict[str, str] = {}
        for ln in lines:
            if ln.parent and ln.parent_name:
                provinces.setdefault(ln.parent, ln.parent_name)
        rows += [
            {"code": c, "name": n, "parent": None, "price": None, "folded": fold(f"{c} {n}")[:540]}
            for c, n in provinces.items()
        ]
    rows += [
        {
            "code": ln.code,
            "name": ln.name,
            "parent": ln.parent,
            "price": ln.price,
            "folded": fold(f"{ln.code} {ln.name}")[:540],
        }
        for ln in lines
    ]
    return rows


def _sync_icd10(session: Session, lines: list[Line]) -> None:
    """Keep ``icd10_codes`` (the diagnoses' foreign key and the export's disease names) holding every
    code ever loaded, with its newest Vietnamese name (bulk statements: 40,000 lines in one go)."""
    existing = {code: title for code, title in session.execute(select(Icd10Code.code, Icd10Code.title))}
    new = [{"code": ln.code, "title": ln.name} for ln in lines if ln.code not in existing]
    if new:
        session.execute(insert(Icd10Code), new)
    renamed = [
        {"code": ln.code, "title": ln.name} for ln in lines if ln.code in existing and existing[ln.code] != ln.name
    ]
    if renamed:
        session.execute(update(Icd10Code), renamed)  # ORM bulk UPDATE by primary key


def store_version(
    session: Session,
    actor: Actor,
    kind_name: str,
    lines: list[Line],
    *,
    valid_from: date,
    source: str,
    sha256: str,
    problems: list[Problem] | None = None,
) -> CatalogueLoad:
    """Check the parsed lines against the catalogue and store them as a new version (or raise
    :class:`FileRejected` with every problem, audited, nothing stored)."""
    kind = KINDS[kind_name]
    problems = list(problems or [])
    latest = session.scalar(
        select(CatalogueVersion)
        .where(CatalogueVersion.kind == kind.name)
        .order_by(CatalogueVersion.valid_from.desc())
        .limit(1)
        .with_for_update()  # two loads of one kind at once: the second waits and sees the first (PostgreSQL)
    )
    if latest is not None and valid_from <= latest.valid_from:
        problems.insert(
            0,
            (
                1,
                "catalogues.error.not_after",
                {"date": f"{valid_from:%d/%m/%Y}", "latest": f"{latest.valid_from:%d/%m/%Y}"},
            ),
        )
    same = session.scalar(
        select(CatalogueVersion.id).where(CatalogueVersion.kind == kind.name, CatalogueVersion.sha256 == sha256)
    )
    if same is not None:
        problems.insert(0, (1, "catalogues.error.same_file", {"version": same}))
    problems += _consistency(session, kind, lines, valid_from)
    if problems:
        problems.sort(key=lambda p: p[0])
        audit.record(
            session,
            actor,
            "catalog.load",
            outcome="failure",
            object_type="catalogue",
            details={
                "kind": kind.name,
                "file": source,
                "errors": len(problems),
                "lines": [p[0] for p in problems][:50],
            },
        )
        session.commit()
        raise FileRejected(source, problems)
    closed: int | None = None
    if latest is not None and (latest.valid_to is None or latest.valid_to >= valid_from):
        latest.valid_to = valid_from - timedelta(days=1)
        closed = latest.id
    entries = _entries(kind, lines)
    version = CatalogueVersion(
        kind=kind.name,
        valid_from=valid_from,
        source=source[:255],
        sha256=sha256,
        entries=len(entries),
        loaded_by=actor.username[:64] if actor.username else None,
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError:  # another load of this kind and day won the race (unique kind, valid_from)
        session.rollback()
        raise FileRejected(
            source,
            [(1, "catalogues.error.not_after", {"date": f"{valid_from:%d/%m/%Y}", "latest": f"{valid_from:%d/%m/%Y}"})],
        ) from None
    for row in entries:
        row["version_id"] = version.id
    session.execute(insert(CatalogueEntry), entries)
    if kind.name == "icd10":
        _sync_icd10(session, lines)
    audit.record(
        session,
        actor,
        "catalog.load",
        object_type="catalogue",
        object_id=version.id,
        details={
            "kind": kind.name,
            "file": source,
            "entries": len(entries),
            "valid_from": valid_from.isoformat(),
            "closed": closed,
        },
    )
    session.commit()
    return CatalogueLoad(version.id, kind.name, len(entries), valid_from, closed)


def load_catalogue(session: Session, actor: Actor, kind_name: str, path: Path, *, valid_from: date) -> CatalogueLoad:
    """Load ``path`` (CSV or XLSX as published) as the version of ``kind_name`` valid from ``valid_from``."""
    if kind_name not in KINDS:
        raise FileRejected(
            path.name, [(0, "catalogues.error.kind", {"kind": kind_name[:40], "kinds": ", ".join(KINDS)})]
        )
    data = path.read_bytes()
    lines, problems = _parse_file(KINDS[kind_name], path)
    return store_version(
        session,
        actor,
        kind_name,
        lines,
        valid_from=valid_from,
        source=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        problems=problems,
    )
