"""Reading a catalogue file as published: CSV (UTF-8, comma/semicolon/tab) or XLSX (first sheet).

The Ministry's spreadsheets often put a title row or two above the header,
so the header is the first of the first 20 rows holding both a code and a
name column of the kind. Line numbers are the file's own (the spreadsheet's
row numbers), so an error message points at the row the operator sees.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

from .kinds import Kind, header_key

__all__ = ["read_table", "TableError"]

_HEADER_SCAN = 20


class TableError(Exception):
    """The file as a whole cannot be read (not the lines in it): (line, i18n key, params)."""

    def __init__(self, line: int, key: str, **params: object) -> None:
        super().__init__(key)
        self.line = line
        self.key = key
        self.params = params


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return f"{value:%Y%m%d}"
    return str(value).strip()


def _xlsx_rows(data: bytes) -> Iterator[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise TableError(1, "catalogues.error.xlsx", reason=type(exc).__name__) from None
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield [_cell(v) for v in row]
    finally:
        book.close()


def _csv_rows(data: bytes) -> Iterator[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TableError(1, "catalogues.error.encoding") from None
    if "\x00" in text:
        raise TableError(1, "catalogues.error.encoding")
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = "\t" if "\t" in first else (";" if first.count(";") > first.count(",") else ",")
    for cells in csv.reader(lines, delimiter=delimiter):
        yield [c.strip() for c in cells]


def read_table(path: Path, kind: Kind) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """(field → column index, [(line number, cells)]) of the file's data rows."""
    data = path.read_bytes()
    rows = _xlsx_rows(data) if data[:4] == b"PK\x03\x04" else _csv_rows(data)
    code, name = kind.column("code"), kind.column("name")
    assert code is not None and name is not None
    fields: dict[str, int] | None = None
    out: list[tuple[int, list[str]]] = []
    for line, cells in enumerate(rows, start=1):
        if fields is None:
            keys = [header_key(c) for c in cells]
            if any(k in code.aliases for k in keys) and any(k in name.aliases for k in keys):
                fields = {}
                for col in kind.columns:
                    # The documented name wins over a looser alias (e.g. TEN_DVKT_PHEDUYET over TEN_DVKT_GIA).
                    for alias in col.aliases:
                        if alias in keys:
                            fields[col.field] = keys.index(alias)
                            break
                missing = [c.aliases[0].upper() for c in kind.columns if c.required and c.field not in fields]
                if missing:
                    raise TableError(line, "catalogues.error.missing_columns", columns=", ".join(missing))
            elif line >= _HEADER_SCAN:
                break
            continue
        if any(cells):
            out.append((line, cells))
    if fields is None:
        expected = ", ".join(c.aliases[0].upper() for c in kind.columns if c.required)
        raise TableError(1, "catalogues.error.no_header", columns=expected)
    return fields, out
