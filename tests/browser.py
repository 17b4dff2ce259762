"""One way to start Debian chromium under Playwright, for every browser test and benchmark.

The EMR tests, the viewer tests and benchmarks/viewer.py must drive the same
browser with the same flags, or a difference between them (GPU, sandbox,
background traffic) shows up as a flaky test or a misleading measurement.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "browser", "launch"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def launch(playwright: Any, **options: Any) -> Any:
    """``playwright.chromium.launch`` of Debian chromium with the shared flags."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian chromium is missing: run scripts/bootstrap.sh (apt package 'chromium')")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), **options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module.

    One definition for every browser test: Playwright's sync API allows one
    running instance per thread. Module scope, not session: while it runs, its
    event loop is the thread's running loop and asyncio.run() (pyHanko in
    the signing tests) would refuse to start.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()
