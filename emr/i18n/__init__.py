"""The Vietnamese message catalogue (``vi.json``), shared by every piece of UI.

Keys are flat and prefixed by area (``patients.*``, ``viewer.*``, ...);
``t(key, **params)`` formats ``{name}`` placeholders. A missing key returns
the key itself, so an omission shows up on screen instead of crashing; the
test suite checks that every key used in templates and code exists.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

__all__ = ["t", "catalogue", "CATALOGUE_PATH"]

CATALOGUE_PATH = Path(__file__).with_name("vi.json")


@lru_cache(maxsize=1)
def catalogue() -> dict[str, str]:
    data = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()}


def t(key: str, **params: object) -> str:
    text = catalogue().get(key, key)
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text
