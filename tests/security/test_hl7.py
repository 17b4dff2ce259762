"""Trying to get around the HL7 interface (issue 15 §5): unknown addresses and facilities, oversize
messages, connection floods, the interface account, and the admin page's role and CSRF checks."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.core.settings import Hl7Settings
from emr.models import AuditEntry, Hl7Message, Patient
from filmless.settings import SettingsError, load
from tests.emr.conftest import (  # noqa: F401 - fixtures
    World,
    _cheap_argon2,
    app,
    client,
    csrf_token,
    database_url,
    engine,
    login,
    pg_database,
    session,
    settings,
    sqlite_template,
    world,
)
from tests.emr.hl7_support import Site, adt, frame, mllp, msa, read_frame, site, sqlite_database
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Site]:  # noqa: F811
    """A listener that takes BV01 from 127.0.0.1 only, 4 KiB messages, two connections per address."""
    tmp = tmp_path_factory.mktemp("hl7-guarded")
    yield from site(sqlite_database(tmp, sqlite_template), tmp, allowed=("BV01@127.0.0.1/32",), max_bytes=4096,
                    connections_per_ip=2)


def _connect_from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def test_unknown_address_is_closed_unread_and_audited(guarded: Site) -> None:
    for _ in range(3):  # a scanner that keeps trying is logged once a minute, not once a try
        with _connect_from("127.0.0.2", guarded.port) as sock:
            try:
                sock.sendall(frame(adt("X-1", "A04", "EVIL1", "Kẻ^Gian")))
            except OSError:
                pass  # already closed: also a refusal
            assert read_frame(sock) == b""  # no ACK: nothing was read
    with guarded.session() as s:
        assert s.scalar(select(func.count()).select_from(Patient).where(Patient.full_name == "Kẻ Gian")) == 0
        row = s.scalars(select(Hl7Message).where(Hl7Message.peer.like("127.0.0.2:%"))).one()
        assert row.status == "rejected" and "not in FILMLESS_HL7_ALLOWED" in row.error
        audit = s.scalar(select(AuditEntry).where(AuditEntry.action == "hl7.refused",
                                                  AuditEntry.object_id == str(row.id)))
        assert audit is not None and audit.outcome == "denied" and audit.client_ip == "127.0.0.2"


def test_unknown_sending_facility_is_rejected(guarded: Site) -> None:
    ack = mllp(guarded.port, adt("X-2", "A04", "EVIL2", "Kẻ^Mạo Danh", facility="BV99"))
    fields = msa(ack)
    assert fields[1] == "AR" and "BV99" in fields[3]
    with guarded.session() as s:
        assert s.scalar(select(func.count()).select_from(Patient).where(Patient.full_name == "Kẻ Mạo Danh")) == 0


def test_oversize_message_is_refused_and_others_are_served(guarded: Site) -> None:
    big = adt("X-3", "A04", "BIG1", extra="NTE|1||" + "A" * 10_000)
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        try:
            sock.sendall(frame(big))
        except OSError:
            pass
        assert read_frame(sock) == b""
    assert msa(mllp(guarded.port, adt("X-4", "A04", "SMALL1")))[1] == "AA"
    with guarded.session() as s:
        assert s.scalar(select(Hl7Message).where(Hl7Message.error.like("%larger than 4096 bytes%"))) is not None


def test_one_address_cannot_hold_every_connection(guarded: Site) -> None:
    # The earlier tests' connections count until the listener has seen them close.
    wait_for(lambda: guarded.listener.open_connections("127.0.0.1") == 0, timeout=10,
             what="earlier connections released")
    held = [socket.create_connection(("127.0.0.1", guarded.port), timeout=10) for _ in range(2)]
    try:
        for sock in held:  # both accepted and served
            sock.sendall(frame(adt(f"X-5-{held.index(sock)}", "A04", f"HOLD{held.index(sock)}")))
            assert msa(read_frame(sock))[1] == "AA"
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as third:
            try:
                third.sendall(frame(adt("X-6", "A04", "HOLD3")))
            except OSError:
                pass
            assert read_frame(third) == b""
    finally:
        for sock in held:
            sock.close()
    with guarded.session() as s:
        assert s.scalar(select(Hl7Message).where(Hl7Message.error.like("too many connections%"))) is not None


def test_defaults_bind_loopback_and_bad_settings_fail() -> None:
    defaults = load({"FILMLESS_DATA_DIR": "/nonexistent-filmless"}).emr.hl7
    assert defaults == Hl7Settings() and defaults.host == "127.0.0.1" and defaults.port == 0  # off until asked
    assert all(entry.endswith(("127.0.0.0/8", "::1")) for entry in defaults.allowed)
    for env in ({"FILMLESS_HL7_ALLOWED": "BV01"}, {"FILMLESS_HL7_ALLOWED": "BV01@not-an-ip"},
                {"FILMLESS_HL7_RECEIVER": "his.example"}, {"FILMLESS_HL7_DEFAULT_CHARSET": "klingon"}):
        with pytest.raises(SettingsError):
            load({"FILMLESS_DATA_DIR": "/nonexistent-filmless", **env})


def _message(session: Session) -> int:  # noqa: F811
    row = Hl7Message(direction="in", peer="127.0.0.1:5000", sending_facility="BV01", message_type="ADT^A08",
                     control_id="M-1", charset="utf-8", status="error", ack_code="AE", error="204 PID^1^3: unknown",
                     raw="MSH|^~\\&|HIS|BV01|||20261207||ADT^A08|M-1|P|2.5\rPID|1||Z1^^^BV01^PI||Bí^Mật".encode())
    session.add(row)
    session.commit()
    return row.id


def _token(c: FlaskClient) -> str:
    page = c.get("/", follow_redirects=True).get_data(as_text=True)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m
    return m.group(1)


def test_admin_page_is_for_the_admin_only(app: Flask, client: FlaskClient, session: Session,  # noqa: F811
                                          world: World) -> None:  # noqa: F811
    message_id = _message(session)
    # SQLite: the test's own session must not hold its write lock while the app answers.
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: session.commit())
    assert client.get("/admin/hl7").status_code == 302  # not logged in
    for role in ("physician", "radiologist", "records_clerk", "nurse", "technician"):
        c = app.test_client()
        login(c, f"{role}1")
        for path in ("/admin/hl7", f"/admin/hl7/{message_id}"):
            r = c.get(path)
            assert r.status_code == 403 and "Bí" not in r.get_data(as_text=True), (role, path)
        assert c.post(f"/admin/hl7/{message_id}/replay", data={"csrf_token": _token(c)}).status_code == 403
    login(client, "admin1")
    page = client.get("/admin/hl7").get_data(as_text=True)
    assert "Tin nhắn HL7 với HIS" in page and "M-1" in page
    detail = client.get(f"/admin/hl7/{message_id}").get_data(as_text=True)
    assert "Bí^Mật" in detail and "Xử lý lại tin nhắn" in detail
    viewed = session.scalar(select(AuditEntry).where(AuditEntry.action == "hl7.view",
                                                     AuditEntry.object_id == str(message_id)))
    assert viewed is not None and viewed.username == "admin1"
    # Replay without the CSRF token is refused and changes nothing.
    before = session.scalar(select(func.count()).select_from(Hl7Message))
    assert client.post(f"/admin/hl7/{message_id}/replay").status_code == 400
    assert session.scalar(select(func.count()).select_from(Hl7Message)) == before
    token = csrf_token(client, f"/admin/hl7/{message_id}")
    r = client.post(f"/admin/hl7/{message_id}/replay", data={"csrf_token": token})
    assert r.status_code == 302
    session.expire_all()
    replayed = session.scalar(select(Hl7Message).where(Hl7Message.replay_of_id == message_id))
    assert replayed is not None and replayed.replayed_by == "admin1" and replayed.ack_code == "AE"  # still unknown
    refusals = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.outcome == "denied"))
    assert refusals and refusals >= 5


def test_the_interface_account_cannot_log_in(app: Flask, client: FlaskClient, session: Session) -> None:  # noqa: F811
    """HIS orders are placed under an account nobody can log in as (inactive, no usable password)."""
    from emr.hl7.orders import INTERFACE_USERNAME, interface_user

    user = interface_user(session)
    assert user.username == INTERFACE_USERNAME and not user.active and user.password_hash == "!"
    session.commit()
    r = login(client, INTERFACE_USERNAME, "!")  # the stored "hash" itself as the password
    assert r.status_code != 302
    assert client.get("/admin/hl7").status_code == 302  # still not logged in
