"""Logins under attack, against a real `filmless emr serve` (issue 10, items 9, 10 and 11).

* An outsider's wrong passwords never lock the account: the failing source
  backs off, a correct password from another source still works, and every
  refusal reads the same whether the account exists or not.
* Attempts beyond the per-source rate are refused before any password is
  hashed (no audit row, no Argon2).
* Half-open HTTP requests do not stop /healthz from answering.
* ``next`` cannot send the browser to another site.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select

from emr.i18n import t
from emr.models import AuditEntry
from tests.security.auth_support import (
    PASSWORD,
    RunningEmr,
    client,
    csrf,
    error_text,
    make_users,
    running_emr,
    user_id,
)


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-login")) as running:
        make_users(running, ("quantri", "admin"), ("bacsi", "physician"))
        yield running


def _attempts(emr: RunningEmr, source: str, username: str, count: int) -> list[tuple[int, str]]:
    s = client(source)
    token = csrf(s.get(emr.url("/login"), timeout=30).text)
    out = []
    for i in range(count):
        r = s.post(emr.url("/login"), data={"username": username, "password": f"guess-{i}-wrong!", "csrf_token": token},
                   allow_redirects=False, timeout=60)
        out.append((r.status_code, error_text(r.text)))
    return out


def test_outsider_cannot_lock_the_admin_out_and_refusals_do_not_tell_accounts_apart(emr: RunningEmr) -> None:
    real = _attempts(emr, "127.0.0.2", "quantri", 9)
    unknown = _attempts(emr, "127.0.0.3", "khongtontai", 9)
    assert [status for status, _ in real] == [401] * 9
    assert real == unknown  # same statuses, same words, attempt by attempt
    assert {text for _, text in real} == {t("auth.error.failed")}

    # The attacking source now waits: even the right password from there is refused, in the same words.
    _, r = emr.login("quantri", PASSWORD, source="127.0.0.2")
    assert r.status_code == 401 and error_text(r.text) == t("auth.error.failed")
    # The administrator at their own desk logs in at once.
    _, r = emr.login("quantri", PASSWORD, source="127.0.0.1")
    assert r.status_code == 302, error_text(r.text)

    factory = emr.session_factory()
    with factory() as session:
        reasons = [a.details for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "login", AuditEntry.outcome == "failure",
                                     AuditEntry.client_ip == "127.0.0.2"))]
    factory.kw["bind"].dispose()
    assert any('"backoff"' in (d or "") for d in reasons), reasons  # the audit log says why (the page does not)


def test_spelling_the_account_differently_does_not_escape_the_back_off(emr: RunningEmr) -> None:
    """'BACSI' or ' Bacsi ' logs in as bacsi, so it must count against bacsi's back-off too."""
    s = client("127.0.0.5")
    token = csrf(s.get(emr.url("/login"), timeout=30).text)
    for i, spelling in enumerate(["bacsi", "BACSI", "Bacsi", " bacsi", "BaCsI", "BACSI ", "bAcsi", "BACSi"]):
        r = s.post(emr.url("/login"), data={"username": spelling, "password": f"guess-{i}-wrong!", "csrf_token": token},
                   allow_redirects=False, timeout=60)
        assert r.status_code == 401
    _, r = emr.login("bacsi", PASSWORD, source="127.0.0.5")
    assert r.status_code == 401  # eight failures on one account, however spelled: the source waits
    _, r = emr.login(" BACSI ", PASSWORD, source="127.0.0.6")
    assert r.status_code == 302, error_text(r.text)  # another desk: the same account, spelled loosely
    factory = emr.session_factory()
    with factory() as session:
        ok = session.scalars(select(AuditEntry).where(AuditEntry.action == "login", AuditEntry.outcome == "success",
                                                      AuditEntry.client_ip == "127.0.0.6")).one()
    factory.kw["bind"].dispose()
    assert ok.object_id == str(user_id(emr, "bacsi"))


def test_attempts_beyond_the_rate_are_refused_before_hashing(emr: RunningEmr) -> None:
    s = client("127.0.0.4")
    token = csrf(s.get(emr.url("/login"), timeout=30).text)
    statuses = []
    for i in range(40):
        r = s.post(emr.url("/login"), data={"username": f"user{i}", "password": "x" * 12, "csrf_token": token},
                   allow_redirects=False, timeout=60)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "giây" in error_text(r.text)
    assert statuses[:10] == [401] * 10 and statuses.count(429) >= 10, statuses  # burst of 10, then the rate
    factory = emr.session_factory()
    with factory() as session:
        audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "login",
                                                           AuditEntry.client_ip == "127.0.0.4")).all()
    factory.kw["bind"].dispose()
    # Only the admitted attempts reached the password check (each audited); the refused ones cost nothing.
    assert len(audited) == statuses.count(401)


def _half_open(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /patients HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    return sock


def test_unfinished_requests_do_not_starve_healthz(emr: RunningEmr) -> None:
    port = int(urlsplit(emr.base).port or 0)
    held: list[socket.socket] = []
    try:
        for _ in range(150):  # one source opening many: capped per IP
            try:
                held.append(_half_open("127.0.0.5", port))
            except OSError:
                pass
        for i in range(110):  # many sources, one each
            held.append(_half_open(f"127.0.1.{i + 1}", port))
        for _ in range(3):
            r = requests.get(emr.url("/healthz"), timeout=5)
            assert r.status_code == 200 and r.text == "ok\n"
        _, r = emr.login("bacsi", PASSWORD, source="127.0.0.6")
        assert r.status_code == 302, error_text(r.text)
    finally:
        for sock in held:
            sock.close()


def test_a_request_trickling_in_is_cut_off(tmp_path: Path) -> None:
    """A client that sends a byte now and then is never idle, yet its request must end in time."""
    from emr import EmrSettings, create_app, upgrade_database
    from emr.http_server import make_server
    from tests.helpers import free_port

    settings = EmrSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'emr.sqlite3'}",
                           secret_key_file=tmp_path / "key", port=free_port())
    upgrade_database(settings)
    server = make_server(create_app(settings), settings, threads=2, request_timeout=2.0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        sock = socket.create_connection(("127.0.0.1", settings.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # a byte every 0.25 s: never idle for channel_timeout
            time.sleep(0.25)
            try:
                sock.sendall(b"X")
                sock.setblocking(False)
                try:
                    closed = sock.recv(1) == b""
                except BlockingIOError:
                    pass
                sock.setblocking(True)
            except OSError:
                closed = True
            if closed:
                break
        assert closed, "the trickling request was still open after 10 s"
        sock.close()
    finally:
        server.close()
        server.task_dispatcher.shutdown()


@pytest.mark.parametrize("target", [
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d%0a/evil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "//evil.example",
    "https://evil.example/",
    "/%2509/evil.example",
    "%2F%2Fevil.example",
])
def test_next_never_leaves_the_site(emr: RunningEmr, target: str) -> None:
    _, r = emr.login("bacsi", PASSWORD, source="127.0.0.7", next_path=target)
    assert r.status_code == 302, error_text(r.text)
    location = r.headers["Location"]
    # What a browser does with it: drop tabs and line breaks, read backslashes as slashes.
    seen = "".join(ch for ch in location if ch not in "\t\r\n").replace("\\", "/")
    parts = urlsplit(seen)
    assert parts.netloc in ("", urlsplit(emr.base).netloc), location
    assert not parts.path.startswith("//"), location


def test_next_keeps_a_local_path(emr: RunningEmr) -> None:
    _, r = emr.login("bacsi", PASSWORD, source="127.0.0.7", next_path="/patients%3Fq%3Dnguyen")
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/patients"
