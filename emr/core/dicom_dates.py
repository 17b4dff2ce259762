"""DICOM dates (DA) as modalities really send them.

PS3.5 §6.2 says ``YYYYMMDD``; ACR-NEMA 2.0 and old archives wrote ``YYYY.MM.DD``
(PS3.5 keeps it as the legacy form a reader should accept), and a few consoles
send ISO ``YYYY-MM-DD``. Each is read into the one stored form, ``YYYYMMDD``,
so a date is never cut to ``1997.04.`` and shown as ``4./.0/1997``.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = ["parse_da", "normalise_da", "display_da"]

_DA = re.compile(r"^\s*(\d{4})[.\-]?(\d{2})[.\-]?(\d{2})\s*$")


def parse_da(value: str | None) -> date | None:
    """The calendar date of a DA value (current or legacy dotted form); None when it is not one."""
    m = _DA.match(value or "")
    if m is None:
        return None
    text = value or ""
    separators = {c for c in text.strip()[4:] if not c.isdigit()}
    if len(separators) > 1:  # mixed separators are not a date form anyone wrote
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def normalise_da(value: str | None) -> str | None:
    """``YYYYMMDD`` for any accepted form; None for an empty or unreadable value."""
    day = parse_da(value)
    return None if day is None else day.strftime("%Y%m%d")


def display_da(value: str | None) -> str:
    """``dd/mm/yyyy`` as Vietnamese forms write dates; an unreadable value as it is, empty as ``—``."""
    day = parse_da(value)
    if day is not None:
        return day.strftime("%d/%m/%Y")
    return (value or "").strip() or "—"
