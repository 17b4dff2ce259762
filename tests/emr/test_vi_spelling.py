"""One spelling per word in the catalogue (emr/i18n/vi.json).

Vietnamese has two accepted places for the tone mark in the open syllables oa, oe, uy: the older one on the
first vowel (khóa, hóa, xóa, thủy) and the newer one on the second (khoá, hoá, xoá, thuỷ). Either is correct,
but the same word written both ways on one screen reads as a typo. The catalogue uses the older placement
(the one most of its words had); this test fails when a word appears in both forms.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

CATALOGUE = Path(__file__).parents[2] / "emr" / "i18n" / "vi.json"
TONES = frozenset("\u0300\u0301\u0303\u0309\u0323")  # huyền, sắc, ngã, hỏi, nặng (combining)


def _tone_free(word: str) -> tuple[str, tuple[str, ...]]:
    """The word without its tone mark, and the tone: two spellings that differ only in where the tone sits
    have the same key."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    tones = tuple(c for c in decomposed if c in TONES)
    base = unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in TONES))
    return base, tones


def mixed_spellings(texts: list[str]) -> list[set[str]]:
    """Groups of words that are one word written with its tone mark in different places."""
    forms: dict[tuple[str, tuple[str, ...]], set[str]] = defaultdict(set)
    for text in texts:
        for word in re.findall(r"\w+", unicodedata.normalize("NFC", text)):
            key = _tone_free(word)
            if key[1]:
                forms[key].add(word.lower())
    return sorted((f for f in forms.values() if len(f) > 1), key=sorted)


def test_the_check_finds_both_tone_placements() -> None:
    assert mixed_spellings(["Khóa tài khoản", "lộ khoá bí mật"]) == [{"khóa", "khoá"}]
    assert mixed_spellings(["thủy", "thuỷ", "hóa đơn", "khoản"]) == [{"thủy", "thuỷ"}]
    assert mixed_spellings(["Khóa tài khoản", "khóa bí mật", "khoản"]) == []


def test_no_word_is_spelled_two_ways_in_the_catalogue() -> None:
    catalogue = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    assert mixed_spellings(list(catalogue.values())) == []
