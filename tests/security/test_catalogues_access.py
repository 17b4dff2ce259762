"""Issue 15 §4: the catalogue pages cannot be got around.

Only roles with ``catalog.read`` (admin, physician, nurse, records clerk) see them, checked on
the server and audited when refused; the pages are read-only; what a file put
into a catalogue (names) is shown escaped; hostile search text and page
numbers neither fail nor reach the database as patterns; every showing is audited.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.catalogues import load_catalogue
from emr.models import AuditEntry
from tests.catalogues.conftest import (  # noqa: F401  (fixtures)
    ADMIN_ACTOR,
    World,
    _cheap_argon2,
    app,
    client,
    database_url,
    engine,
    pg_database,
    session,
    settings,
    sqlite_template,
    world,
)
from tests.emr.conftest import login


@pytest.fixture
def version_id(session: Session, world: World, tmp_path: Path) -> int:  # noqa: F811
    path = tmp_path / "icd10.csv"
    path.write_text(
        'MA_BENH,TEN_BENH\nA00,"<script>alert(1)</script> Bệnh tả"\nA01,Thương hàn 100%_\n', encoding="utf-8"
    )
    vid = load_catalogue(session, ADMIN_ACTOR, "icd10", path, valid_from=date(2025, 1, 1)).version_id
    session.commit()
    return vid


def test_roles_without_catalog_read_are_refused_and_audited(
    app,  # noqa: F811
    session: Session,  # noqa: F811
    version_id: int,
) -> None:
    roles = ["radiologist", "technician"]
    for role in roles:
        c = app.test_client()
        assert login(c, f"{role}1").status_code == 302
        for url in ("/admin/catalogues/", f"/admin/catalogues/{version_id}?q=A00"):
            r = c.get(url)
            assert r.status_code == 403 and "Bệnh tả" not in r.get_data(as_text=True)
    session.commit()
    denied = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied").order_by(AuditEntry.id)).all()
    assert [(d.username, d.action) for d in denied] == [(f"{r}1", "catalog.read") for r in roles for _ in range(2)]
    assert session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.view")).all() == []


def test_anonymous_and_writes_get_nothing(app, version_id: int) -> None:  # noqa: F811
    anonymous = app.test_client()
    r = anonymous.get(f"/admin/catalogues/{version_id}")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    c = app.test_client()
    assert login(c, "admin1").status_code == 302
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        assert c.post(f"/admin/catalogues/{version_id}", data={"q": "x"}).status_code == 405
        assert c.delete(f"/admin/catalogues/{version_id}").status_code == 405
    finally:
        app.config["WTF_CSRF_ENABLED"] = True


def test_hostile_input_is_text_and_escaped(
    client: FlaskClient,  # noqa: F811
    session: Session,  # noqa: F811
    version_id: int,
) -> None:
    assert login(client, "admin1").status_code == 302
    page = client.get(f"/admin/catalogues/{version_id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Bệnh tả" in page
    # LIKE wildcards are matched as text: "%" finds only the name holding a "%"
    page = client.get(f"/admin/catalogues/{version_id}?q=%25_").get_data(as_text=True)
    assert "1 mục, trang 1/1" in page and "A01" in page
    for query, found in (("'; DROP TABLE catalogue_entries; --", 0), ("x" * 20000, 0), ("\\", 0), ("A0\x00", 2)):
        # a NUL would end the LIKE pattern in SQLite and match everything: it is dropped, "A0" is searched
        r = client.get(f"/admin/catalogues/{version_id}", query_string={"q": query})
        assert r.status_code == 200 and f"{found} mục, trang 1/1" in r.get_data(as_text=True)
    for p in ("-1", "1e9", "99999999999999999999", "0", "abc"):
        r = client.get(f"/admin/catalogues/{version_id}?page={p}")
        assert r.status_code == 200 and "2 mục, trang 1/1" in r.get_data(as_text=True)
    assert client.get("/admin/catalogues/999999").status_code == 404
    assert client.get("/admin/catalogues/99999999999999999999999").status_code == 404
    session.commit()
    views = session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.view")).all()
    assert len(views) == 1 + 1 + 4 + 5  # every page shown is audited, the query cut to 100 characters
    assert all(len(json.loads(v.details)["query"]) <= 100 for v in views)
