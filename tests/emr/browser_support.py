"""Helpers of the EMR's browser tests (Debian chromium through tests/browser.py's ``browser`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACTS", "OVERFLOW", "WIDE", "logged_in_page"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "emr"
# [the page's scroll width, the viewport's width]: a page that fits has the first <= the second.
OVERFLOW = "() => [document.scrollingElement.scrollWidth, window.innerWidth]"
# What sticks out on the right, to say why a page does not fit.
WIDE = """() => Array.from(document.querySelectorAll('*'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`).slice(0, 12)"""


@contextmanager
def logged_in_page(browser: Any, base_url: str, username: str, width: int, height: int,
                   password: str | None = None) -> Iterator[tuple[Any, list[str]]]:
    """A page of a fresh browser context (``width`` x ``height``, Vietnamese locale) logged in as ``username``
    through the login form, and the list collecting its JavaScript errors; the context closes on exit."""
    from .conftest import PASSWORD

    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base_url}/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password or PASSWORD)
        page.click("button[type=submit].primary")
        page.wait_for_load_state()
        yield page, errors
    finally:
        context.close()
