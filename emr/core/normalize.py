"""Text normalisation for diacritic-insensitive Vietnamese search.

Why a stored, normalised column instead of ``unaccent()`` at query time: the
same code works on SQLite and PostgreSQL, and a plain b-tree index with
``text_pattern_ops`` serves prefix searches on a million rows.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "split_name"]

_SPACES = re.compile(r"\s+")


def fold(text: str) -> str:
    """Lower-case, strip diacritics, map đ→d, collapse spaces: 'Nguyễn Đức' → 'nguyen duc'."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", stripped).strip().lower()


def name_keys(folded_name: str) -> list[str]:
    """A folded full name from its third word on, one key per word ('a b c d' → ['c d', 'd']).

    With the folded full name and the folded given name (from the second
    word) every word of a name then starts a searchable prefix.
    """
    words = folded_name.split(" ")
    return [" ".join(words[i:]) for i in range(2, len(words))]


def split_name(full_name: str) -> tuple[str, str]:
    """Vietnamese names: family name first, given name last ('Nguyễn Thị Hồng Nhung' → ('Nguyễn', 'Thị Hồng Nhung'))."""
    parts = _SPACES.sub(" ", full_name).strip().split(" ")
    if len(parts) == 1:
        return parts[0], ""
    return parts[0], " ".join(parts[1:])
