"""Small helpers shared by the tests (free ports, waiting, logging in over HTTP)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import requests

__all__ = ["csrf_from", "free_port", "http_login", "skip_existing_changes", "wait_for"]

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port that is free now and not handed out before in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(
    predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def csrf_from(http: requests.Session, url: str) -> str:
    """The CSRF token of the form on ``url``."""
    page = http.get(url, timeout=10).text
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def http_login(base: str, username: str, password: str) -> requests.Session:
    """A session logged in to the EMR at ``base`` through its login form."""
    http = requests.Session()
    r = http.post(
        f"{base}/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(http, f"{base}/login")},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text
    return http


def skip_existing_changes(session: Any, store: Any) -> None:
    """Start the EMR's study linker after everything Orthanc already holds.

    The test Orthanc is shared by many tests; without this a new EMR would
    try to link every other test's studies first.
    """
    from emr.models import LinkerState

    last = 0
    while True:
        page = store.changes(since=last, limit=1000)
        last = page.last
        if page.done or not page.changes:
            break
    session.merge(LinkerState(id=1, last_seq=last))
    session.commit()
