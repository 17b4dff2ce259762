"""Small helpers to drive the viewer page (polling, not page-side eval:
the viewer's Content-Security-Policy forbids string evaluation)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["open_study", "wait_until", "viewer_state"]

STATE = """() => {
  const v = window.filmlessViewer;
  if (!v) return null;
  return { ready: v.ready, error: v.error, notice: v.notice, index: v.currentIndex,
           count: v.imageCount, loaded: v.loadedCount, failed: v.failed, cells: v.cellCount, voi: v.voi(),
           renderer: v.renderer };
}"""


def viewer_state(page: Any) -> dict[str, Any]:
    return page.evaluate(STATE) or {}


def wait_until(page: Any, predicate: Any, timeout: float = 20.0, what: str = "viewer state") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = viewer_state(page)
        if state and predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}; last state {state}; page errors {getattr(page, 'page_errors', [])}"
    )


def open_study(page: Any, base: str, study_uid: str, **params: str) -> dict[str, Any]:
    query = "&".join([f"study={study_uid}", *(f"{k}={v}" for k, v in params.items())])
    page.goto(f"{base}/viewer/?{query}")
    return wait_until(page, lambda s: s["ready"] or s["error"], what="first image or error")
