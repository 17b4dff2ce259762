"""The service price catalogue: loading a price list file, and the price valid on a date.

A file is loaded whole or not at all: every bad line is reported (line
number and reason) and nothing is written. Loading adds rows only: a row
identical to one already in the catalogue is skipped (so a file can be
loaded again), and a row that would change an existing (code, valid_from)
price is refused: price history is never rewritten, a new price gets a new
valid_from date.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.catalogues import check_code, entry_on
from emr.core.exceptions import FileRejected

from ..models import ServicePrice

__all__ = ["PRICE_COLUMNS", "PriceLoad", "load_prices", "price_on", "current_prices"]

PRICE_COLUMNS = ("code", "name", "unit", "price_hospital", "price_insurance", "valid_from")
_CODE = re.compile(r"[A-Za-z0-9.\-_]{1,20}")  # the order form's procedure code (schemas.Code)
_AMOUNT = re.compile(r"\d{1,12}(\.\d{1,2})?")  # VND, decimal point, at most 2 decimals, < 10^12 (15 characters)

Problem = tuple[int, str, dict[str, object]]


@dataclass(frozen=True)
class PriceLoad:
    added: int  # new rows
    unchanged: int  # rows already in the catalogue with the same values


def price_on(session: Session, code: str, on: date) -> ServicePrice | None:
    """The price of ``code`` valid on ``on``: the newest row with valid_from <= on (None: not in the catalogue)."""
    return session.scalar(
        select(ServicePrice)
        .where(ServicePrice.code == code, ServicePrice.valid_from <= on)
        .order_by(ServicePrice.valid_from.desc())
        .limit(1)
    )


def current_prices(session: Session, on: date) -> list[ServicePrice]:
    """One row per service code: the price valid on ``on``, by code."""
    rows = session.scalars(
        select(ServicePrice)
        .where(ServicePrice.valid_from <= on)
        .order_by(ServicePrice.code, ServicePrice.valid_from.desc())
    )
    out: dict[str, ServicePrice] = {}
    for row in rows:
        out.setdefault(row.code, row)
    return list(out.values())


def _amount(value: str) -> Decimal | None:
    v = value.strip().replace(" ", "")
    return Decimal(v) if _AMOUNT.fullmatch(v) else None


def _date(value: str) -> date | None:
    v = value.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(v, fmt).date()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class _Row:
    line: int
    code: str
    name: str
    unit: str
    price_hospital: Decimal
    price_insurance: Decimal | None
    valid_from: date


def _parse_row(line: int, cells: dict[str, str], problems: list[Problem]) -> _Row | None:
    before = len(problems)
    code = cells["code"].strip().upper()
    if not _CODE.fullmatch(code):
        problems.append((line, "prices.error.code", {"value": cells["code"].strip()}))
    name = " ".join(cells["name"].split())
    if not name or len(name) > 500:
        problems.append((line, "prices.error.name", {}))
    unit = " ".join(cells["unit"].split())
    if not unit or len(unit) > 50:
        problems.append((line, "prices.error.unit", {}))
    hospital = _amount(cells["price_hospital"])
    if hospital is None:
        problems.append(
            (line, "prices.error.amount", {"column": "price_hospital", "value": cells["price_hospital"].strip()})
        )
    insurance: Decimal | None = None
    if cells["price_insurance"].strip():
        insurance = _amount(cells["price_insurance"])
        if insurance is None:
            problems.append(
                (line, "prices.error.amount", {"column": "price_insurance", "value": cells["price_insurance"].strip()})
            )
        elif hospital is not None and insurance > hospital:
            problems.append(
                (line, "prices.error.insurance_above_hospital", {"insurance": insurance, "hospital": hospital})
            )
    valid_from = _date(cells["valid_from"])
    if valid_from is None:
        problems.append((line, "prices.error.date", {"value": cells["valid_from"].strip()}))
    if len(problems) > before:
        return None
    assert hospital is not None and valid_from is not None
    return _Row(line, code, name, unit, hospital, insurance, valid_from)


def _read(path: Path) -> tuple[list[_Row], list[Problem]]:
    problems: list[Problem] = []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [(1, "prices.error.encoding", {})]
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return [], [(1, "prices.error.empty", {})]
    first = lines[0]
    delimiter = "\t" if "\t" in first else (";" if ";" in first and "," not in first else ",")
    reader = csv.reader(lines, delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    if sorted(header) != sorted(PRICE_COLUMNS):
        return [], [(1, "prices.error.header", {"found": delimiter.join(header), "expected": ",".join(PRICE_COLUMNS)})]
    rows: list[_Row] = []
    seen: dict[tuple[str, date], int] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append((line, "prices.error.columns", {"count": len(cells), "expected": len(header)}))
            continue
        row = _parse_row(line, dict(zip(header, cells, strict=True)), problems)
        if row is None:
            continue
        key = (row.code, row.valid_from)
        if key in seen:
            problems.append(
                (
                    line,
                    "prices.error.duplicate",
                    {"code": row.code, "date": f"{row.valid_from:%d/%m/%Y}", "first": seen[key]},
                )
            )
            continue
        seen[key] = line
        rows.append(row)
    if not rows and not problems:
        problems.append((2, "prices.error.empty", {}))
    return rows, problems


def _same(existing: ServicePrice, row: _Row) -> bool:
    return (
        existing.name == row.name
        and existing.unit == row.unit
        and Decimal(existing.price_hospital) == row.price_hospital
        and (existing.price_insurance is None) == (row.price_insurance is None)
        and (existing.price_insurance is None or Decimal(existing.price_insurance) == row.price_insurance)
    )


def _catalogue_problems(session: Session, rows: list[_Row]) -> list[Problem]:
    """Once the Ministry's DVKT list is loaded (issue 15 §4): each price's code must be in the list
    in force on its first day, and the BHYT price may not exceed the list's price (DON_GIA)."""
    problems: list[Problem] = []
    for row in rows:
        found = check_code(session, "dvkt", row.code, row.valid_from)
        if found is not None:
            problems.append(
                (row.line, "prices.error.not_in_catalogue", {"code": row.code, "date": f"{row.valid_from:%d/%m/%Y}"})
            )
            continue
        entry = entry_on(session, "dvkt", row.code, row.valid_from)
        if (
            entry is not None
            and entry.price is not None
            and row.price_insurance is not None
            and row.price_insurance > entry.price
        ):
            problems.append(
                (
                    row.line,
                    "prices.error.above_catalogue",
                    {"code": row.code, "insurance": row.price_insurance, "catalogue": entry.price},
                )
            )
    return problems


def load_prices(session: Session, actor: Actor, path: Path) -> PriceLoad:
    """Load a price list (CSV/TSV, header ``code,name,unit,price_hospital,price_insurance,valid_from``).

    ``price_insurance`` empty: the service is not covered by BHYT. Amounts in
    VND with a decimal point (``536000`` or ``536000.50``), never a thousands
    separator; dates ``yyyy-mm-dd`` or ``dd/mm/yyyy``. Raises
    :class:`FileRejected` listing every bad line; then nothing is loaded
    (the refusal is audited too).
    """
    rows, problems = _read(path)
    existing: dict[tuple[str, date], ServicePrice] = {}
    if not problems:
        existing = {
            (p.code, p.valid_from): p
            for p in session.scalars(select(ServicePrice).where(ServicePrice.code.in_({r.code for r in rows})))
        }
        problems += _catalogue_problems(session, rows)
        for row in rows:
            old = existing.get((row.code, row.valid_from))
            if old is not None and not _same(old, row):
                problems.append(
                    (
                        row.line,
                        "prices.error.changed",
                        {"code": row.code, "date": f"{row.valid_from:%d/%m/%Y}"},
                    )
                )
    if problems:
        audit.record(
            session,
            actor,
            "catalog.prices_load",
            outcome="failure",
            object_type="service_prices",
            details={"file": path.name, "errors": len(problems), "lines": [p[0] for p in problems][:50]},
        )
        session.commit()
        raise FileRejected(path.name, problems)
    added = unchanged = 0
    for row in rows:
        if (row.code, row.valid_from) in existing:
            unchanged += 1
            continue
        session.add(
            ServicePrice(
                code=row.code,
                name=row.name,
                unit=row.unit,
                price_hospital=row.price_hospital,
                price_insurance=row.price_insurance,
                valid_from=row.valid_from,
                source=path.name[:255],
                loaded_by=actor.username[:64] if actor.username else None,
            )
        )
        added += 1
    audit.record(
        session,
        actor,
        "catalog.prices_load",
        object_type="service_prices",
        details={"file": path.name, "added": added, "unchanged": unchanged},
    )
    session.commit()
    return PriceLoad(added, unchanged)
