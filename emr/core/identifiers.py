"""Validation of Vietnamese identifiers: CCCD (citizen ID) and BHYT (health insurance).

Rules from ../shared/domain-notes.md: CCCD = 3-digit province code + 1 digit
for sex and century + 2 digits of the birth year + 6 digits. BHYT is either
the legacy 15-character card number (2-letter group, benefit level 1-5,
2-digit province, 10-digit social-insurance number) or the 10-digit number.
Each function returns a catalogue key describing the problem, or None.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = ["PROVINCE_CODES", "cccd_problem", "bhyt_problem", "bhyt_ssn", "cccd_sex_century_digit"]

# The 63 province codes of Circular 07/2016/TT-BCA (used in CCCD numbers).
PROVINCE_CODES: frozenset[str] = frozenset(
    """001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033
    034 035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067
    068 070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096""".split()
)

_CENTURY_BASE = {1900: 0, 2000: 2, 2100: 4, 2200: 6, 1800: 8}
_CCCD = re.compile(r"\d{12}")
_BHYT_LEGACY = re.compile(r"[A-Z]{2}[1-5]\d{2}\d{10}")
_BHYT_NEW = re.compile(r"\d{10}")


def cccd_sex_century_digit(sex: str, birth_year: int) -> int:
    """The 4th CCCD digit for a sex ('M'/'F') and birth year."""
    century = birth_year // 100 * 100
    base = _CENTURY_BASE.get(century)
    if base is None:
        raise ValueError(f"birth year {birth_year} outside 1800..2299")
    return base + (1 if sex == "F" else 0)


def cccd_problem(cccd: str, sex: str | None, birth_date: date | None) -> str | None:
    if not _CCCD.fullmatch(cccd):
        return "patients.error.cccd_format"
    if cccd[:3] not in PROVINCE_CODES:
        return "patients.error.cccd_province"
    if sex in ("M", "F") and birth_date is not None:
        try:
            expected = cccd_sex_century_digit(sex, birth_date.year)
        except ValueError:
            return "patients.error.cccd_mismatch"
        if int(cccd[3]) != expected or cccd[4:6] != f"{birth_date.year % 100:02d}":
            return "patients.error.cccd_mismatch"
    return None


def bhyt_problem(number: str) -> str | None:
    if _BHYT_LEGACY.fullmatch(number) or _BHYT_NEW.fullmatch(number):
        return None
    return "patients.error.bhyt_format"


def bhyt_ssn(number: str) -> str:
    """The 10-digit social-insurance number inside either BHYT form (stable across cards)."""
    return number[-10:]
