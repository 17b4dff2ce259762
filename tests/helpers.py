"""Small helpers shared by the tests (free ports, waiting, logging in over HTTP)."""

from __future__ import annotations

import functools
import os
import random
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import requests

__all__ = ["csrf_from", "free_port", "http_login", "skip_existing_changes", "wait_for"]

_handed_out: set[int] = set()


@functools.cache
def _window() -> range:
    """This test process's own ports: below the kernel's ephemeral range, one slice per xdist worker.

    A port the kernel hands out for port 0 is an ephemeral one, and every outgoing connection
    takes one too: between "free now" and the server's bind, a client elsewhere in the run could
    take it. Ports below the ephemeral range are never picked by the kernel, and each worker
    picks from its own slice, so two workers never hand out the same port. Read once per
    process. Empty where the ephemeral range starts too low to leave room below it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            ephemeral_low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 20000, min(ephemeral_low, 32768)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    span = max(0, (high - low) // count)
    return range(low + index * span, low + (index + 1) * span)


def free_port() -> int:
    """A TCP port that is free now, from this process's own window, not handed out before in this run."""
    window = _window()
    if not window:  # no room below the ephemeral range: the kernel's choice, as before
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    start = random.randrange(len(window))
    for i in range(len(window)):
        port = window[(start + i) % len(window)]
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))  # taken on any address (a 127.0.0.1 listener too) fails here
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {window}")


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
    """A session logged in to the EMR at ``base`` through its login form.

    Tests log in many times from 127.0.0.1: when the login guard answers 429
    (its burst used up), this waits the ``Retry-After`` it gives, as a person
    would, at most a few times.
    """
    http = requests.Session()
    for _ in range(5):
        r = http.post(
            f"{base}/login",
            data={"username": username, "password": password, "csrf_token": csrf_from(http, f"{base}/login")},
            allow_redirects=False,
            timeout=10,
        )
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("Retry-After", "1")))
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
