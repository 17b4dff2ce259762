"""Diacritic- and case-insensitive person-name matching for C-FIND.

Why a copy of the EMR's rule (``emr/core/normalize.py``'s ``fold``) and not an
import: the gateway never imports the EMR's internals, and this is four
lines of pure text handling. ``tests/pacs_gateway/test_query.py`` checks
both give the same answer on Vietnamese names, so they cannot drift apart.

Orthanc matches names case-insensitively but byte-wise (``pham*`` does not
find ``Phạm``, and ``?`` matches one byte of UTF-8, not one letter), so
:func:`index_pattern` widens the pattern for Orthanc's index and
:func:`name_matches` then decides exactly.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "index_pattern", "name_matches"]

_SPACES = re.compile(r"\s+")
# Letters Vietnamese writes with diacritics (đ folds to d).
_MARKED = frozenset("aeiouyd")


def fold(text: str) -> str:
    """Lower-case, strip diacritics, map đ→d, collapse spaces: 'Nguyễn Đức' → 'nguyen duc'."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", stripped).strip().lower()


def _wildcard(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE | re.DOTALL) is not None


def name_matches(pattern: str, value: str) -> bool:
    """DICOM PN matching (``*``, ``?``), ignoring case and Vietnamese diacritics."""
    return _wildcard(pattern, value) or _wildcard(fold(pattern), fold(value))


def index_pattern(pattern: str) -> str:
    """A pattern Orthanc's byte-wise, case-insensitive matching answers with a superset.

    Every letter that may carry a diacritic, every ``?``, space (names
    stored with two) and non-ASCII character becomes ``*``: ``pham*`` → ``ph*m*``.
    """
    out: list[str] = []
    for c in fold(pattern):
        widened = "*" if (c in _MARKED or c in "? " or not c.isascii()) else c
        if widened == "*" and out and out[-1] == "*":
            continue
        out.append(widened)
    return "".join(out)
