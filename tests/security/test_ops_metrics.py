"""Who may scrape /metrics and open the operations page (issue 16 §3), tried against real listeners.

Decision: both /metrics endpoints (the EMR's and the gateway's own listener,
which binds 127.0.0.1 by default) answer only requests carrying the bearer
token generated into ``FILMLESS_METRICS_TOKEN_FILE`` (0600). A logged-in
administrator's cookie, a user's API token, a token in the query string or
another auth scheme do not open it. The operations page is for ``admin``
only, and a refusal is audited.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from filmless.settings import load
from pacs_gateway import Gateway, GatewaySettings
from pacs_gateway.metrics import MetricsServer
from storage import OrthancStore
from tests.pacs_gateway.conftest import gateway_settings

from .auth_support import RunningEmr, make_record, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("ops-emr")) as running:
        make_users(running, ("admin1", "admin"), ("bs1", "physician"), ("cdha1", "radiologist"))
        make_record(running, "bs1", "cdha1", signed=False)
        yield running


def _token(emr: RunningEmr) -> str:
    return (emr.settings.data_dir / "metrics-token").read_text().strip()


def test_metrics_token_is_generated_private_and_required(emr: RunningEmr) -> None:
    path = emr.settings.data_dir / "metrics-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = _token(emr)
    assert len(token) >= 32
    url = emr.url("/metrics")
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Basic {token}"}, timeout=10).status_code == 401
    assert requests.get(url, params={"access_token": token}, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {token[:-1]}"}, timeout=10).status_code == 401
    # An administrator logged in to the EMR is not a scraper.
    admin, r = emr.login("admin1")
    assert r.status_code == 302
    assert admin.get(url, timeout=10).status_code == 401
    ok = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200 and ok.headers["Cache-Control"] == "no-store"
    assert "filmless_emr_studies" in ok.text
    # Counts and durations only: no patient name, no URL with an id in it.
    assert "Trần Văn Đức" not in ok.text and "/patients/" not in ok.text
    assert token not in ok.text


def test_a_users_api_token_does_not_open_metrics(emr: RunningEmr) -> None:
    from emr import Actor
    from emr.access.users import create_token
    from emr.models import User

    factory = emr.session_factory()
    with factory() as session:
        admin = session.scalars(select(User).where(User.username == "admin1")).one()
        api_token = create_token(session, Actor(None, "setup", "admin", None), admin.id, "tests")
    factory.kw["bind"].dispose()
    r = requests.get(emr.url("/metrics"), headers={"Authorization": f"Bearer {api_token}"}, timeout=10)
    assert r.status_code == 401


def test_operations_page_is_for_admins_and_refusals_are_audited(emr: RunningEmr) -> None:
    from emr.models import AuditEntry

    assert requests.get(emr.url("/admin/ops"), allow_redirects=False, timeout=10).status_code == 302
    doctor, _ = emr.login("bs1")
    assert doctor.get(emr.url("/admin/ops"), timeout=30).status_code == 403
    reader, _ = emr.login("cdha1")
    assert reader.get(emr.url("/admin/ops"), timeout=30).status_code == 403
    admin, _ = emr.login("admin1")
    page = admin.get(emr.url("/admin/ops"), timeout=30)
    assert page.status_code == 200 and "Vận hành hệ thống" in page.text
    assert "Trần Văn Đức" not in page.text
    factory = emr.session_factory()
    with factory() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.object_id == "/admin/ops")).all()
        assert {(r.username, r.outcome) for r in rows} == {("bs1", "denied"), ("cdha1", "denied")}
        assert session.scalars(select(AuditEntry).where(AuditEntry.action == "ops.view")).one().username == "admin1"
    factory.kw["bind"].dispose()


def test_gateway_metrics_listener_defaults_to_localhost_and_a_token_file(tmp_path: Path) -> None:
    assert GatewaySettings().metrics_host == "127.0.0.1"
    assert GatewaySettings().metrics_port == 0  # off unless filmless turns it on
    settings = load({"FILMLESS_DATA_DIR": str(tmp_path)})
    assert settings.gateway.metrics_host == "127.0.0.1" and settings.gateway.metrics_port == 9112
    assert settings.gateway.metrics_token_file == settings.emr.metrics_token_file == tmp_path / "metrics-token"


@pytest.fixture
def gateway_metrics(orthanc: OrthancStore, tmp_path: Path) -> Iterator[tuple[str, str]]:
    from emr.app import load_or_create_secret

    token_file = tmp_path / "metrics-token"
    token = load_or_create_secret(token_file)
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    gw = Gateway(gateway_settings(spool_dir=tmp_path / "spool"), orthanc)
    gw.start()
    server = MetricsServer(gw, "127.0.0.1", 0, token)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", token
    finally:
        server.stop()
        gw.stop()


def test_gateway_metrics_need_the_token_and_only_serve_metrics(gateway_metrics: tuple[str, str]) -> None:
    base, token = gateway_metrics
    good = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics?token={token}", timeout=10).status_code == 401
    assert requests.get(f"{base}/", headers=good, timeout=10).status_code == 404
    assert requests.post(f"{base}/metrics", headers=good, timeout=10).status_code == 404
    r = requests.get(f"{base}/metrics", headers=good, timeout=10)
    assert r.status_code == 200 and "filmless_gateway_instances_received_total" in r.text


def test_a_silent_client_does_not_block_the_scrape(gateway_metrics: tuple[str, str]) -> None:
    base, token = gateway_metrics
    host, port = base.removeprefix("http://").split(":")
    silent: list[Any] = []
    try:
        for _ in range(20):  # connections that never send a request
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finish it
            silent.append(sock)
        r = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200
    finally:
        for sock in silent:
            sock.close()
