"""Does a local patient record agree with the national population database? (issue 15 §3)

A pure rule, no I/O: the adapter (``emr.identity``) fetches the national
record, this module says which of name, birth date and sex differ.

Why not a plain string comparison: the same Vietnamese name reaches the EMR
in several spellings that are all the same name — upper case from an old HIS
("NGUYỄN THỊ HỒNG NHUNG"), extra spaces, decomposed Unicode (NFD from a
macOS keyboard or a scanner), or no diacritics at all ("Nguyen Thi Hong
Nhung") where a desk typed without a Vietnamese keyboard. Those match. But
diacritics carry meaning: "Nguyễn" and "Nguyên", "Đào" and "Dao" are different
names, so when the local name *has* diacritics and they differ from the
national ones, that is a mismatch a person must look at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from emr.core.normalize import fold

__all__ = ["NationalRecord", "FIELDS", "canonical_name", "differences", "parse_birth"]

FIELDS = ("full_name", "birth_date", "sex")
_SPACES = re.compile(r"\s+")
_YEAR = re.compile(r"\d{4}")


@dataclass(frozen=True)
class NationalRecord:
    """What the national population database says about one CCCD (the adapter's response, parsed)."""

    cccd: str
    full_name: str
    birth_date: date | None  # None when only the year is registered
    birth_year: int
    sex: str  # 'M' | 'F'


def canonical_name(name: str) -> str:
    """NFC, case-folded, single spaces: spellings of the *same* name become equal, diacritics kept."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", name)).strip().casefold()


def _has_diacritics(name: str) -> bool:
    return fold(name) != canonical_name(name).replace("đ", "d")


def _name_differs(local: str, national: str) -> bool:
    if canonical_name(local) == canonical_name(national):
        return False
    if fold(local) != fold(national):
        return True
    # Same letters, different marks: a name typed without diacritics matches; different marks do not.
    return _has_diacritics(local)


def parse_birth(value: str) -> tuple[date | None, int]:
    """'1990-05-17' → (date, 1990); '1990' (year-only registration) → (None, 1990). ValueError otherwise."""
    value = value.strip()
    if _YEAR.fullmatch(value):
        return None, int(value)
    born = date.fromisoformat(value)
    return born, born.year


def differences(
    *, full_name: str, birth_date: date, birth_year_only: bool, sex: str, national: NationalRecord
) -> list[str]:
    """The fields (of :data:`FIELDS`) where the local record and the national one disagree.

    A birth date known only by its year on either side is compared by year.
    """
    out: list[str] = []
    if _name_differs(full_name, national.full_name):
        out.append("full_name")
    if birth_year_only or national.birth_date is None:
        if birth_date.year != national.birth_year:
            out.append("birth_date")
    elif birth_date != national.birth_date:
        out.append("birth_date")
    if sex != national.sex:
        out.append("sex")
    return out
