"""Trying to get around issue 13's new routes: the audit CSV, the patient's signed PDF, bulk
reconciliation, the audit page's filters, and the saved settings file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.models import AuditEntry, ShareLink, Study, utcnow
from emr.patients import service as patients
from tests.emr.conftest import (  # noqa: F401 - fixtures
    World,
    _cheap_argon2,
    app,
    client,
    csrf_token,
    database_url,
    engine,
    login,
    patient_data,
    pg_database,
    session,
    settings,
    sqlite_template,
    world,
)


def test_audit_csv_is_for_the_admin_only_and_refusals_are_audited(
    client: FlaskClient, session: Session, world: World  # noqa: F811
) -> None:
    assert client.get("/admin/audit.csv").status_code == 302  # not logged in: to the login page
    for role in ("physician", "records_clerk", "radiologist"):
        login(client, f"{role}1")
        r = client.get("/admin/audit.csv")
        assert r.status_code == 403 and b"time_local" not in r.data
        client.post("/logout", data={"csrf_token": csrf_token(client, "/patients/")})
    denied = session.scalars(
        select(AuditEntry).where(AuditEntry.outcome == "denied", AuditEntry.object_id == "/admin/audit.csv")
    ).all()
    assert {d.username for d in denied} == {"physician1", "records_clerk1", "radiologist1"}
    session.rollback()  # no lock held by the test while the app writes
    login(client, "admin1")
    r = client.get("/admin/audit.csv")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"


def test_audit_page_shrugs_off_hostile_filters(client: FlaskClient, world: World) -> None:  # noqa: F811
    login(client, "admin1")
    for query in (
        "before=-1",
        "before=99999999999999999999999",
        "after=abc",
        "date_from=2026-13-45&date_to=not-a-date",
        "patient=' OR 1=1 --",
        "user=%00admin",
        "action=" + "x" * 5000,
        "outcome=<script>",
    ):
        r = client.get(f"/admin/audit?{query}")
        assert r.status_code == (422 if "date_from" in query else 200), query  # a bad date is said, not dropped
        assert b"<script>" not in r.data


def test_a_bad_date_does_not_turn_the_audit_export_into_the_whole_log(
    client: FlaskClient, session: Session, world: World  # noqa: F811
) -> None:
    """Walkthrough 2: an unreadable or reversed date was dropped, so the "filtered" export held every row."""
    login(client, "admin1")
    session.rollback()
    for query in ("date_from=2026-13-45&date_to=abc", "date_to=2026-02-30", "date_from=1%2F1",
                  "date_from=2026-12-08&date_to=2026-12-01", "date_from=<script>", "date_to=" + "9" * 5000):
        for path in ("/admin/audit.csv", "/admin/audit"):
            r = client.get(f"{path}?{query}")
            body = r.get_data(as_text=True)
            r.close()
            assert r.status_code == 422, (path, query)
            assert not r.headers["Content-Type"].startswith("text/csv") and "time_local" not in body
            assert 'class="outcome-' not in body  # no audit row listed
            assert "<script>" not in body
    assert session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export")).all() == []


def test_signed_pdf_needs_the_pin_and_a_live_link(
    client: FlaskClient, session: Session, world: World  # noqa: F811
) -> None:
    p = patients.create_patient(session, world.actor("physician"), patient_data())
    study = Study(orthanc_id="sec-1", study_instance_uid="1.2.77", state="linked", patient_id=p.id)
    session.add(study)
    session.flush()
    from emr.sharing.service import _code_hash

    link = ShareLink(code_sha256=_code_hash("abcdefghjkmn"), pin_hash="x", study_id=study.id,
                     study_instance_uid="1.2.77", patient_id=p.id, created_by=world.users["physician"].id,
                     expires_at=utcnow().replace(year=2099), failed_attempts=0)  # fmt: skip
    session.add(link)
    session.commit()
    r = client.get("/s/abcdefghjkmn/report.pdf")
    assert r.status_code == 302 and r.headers["Location"].endswith("/s/abcdefghjkmn")  # PIN first
    assert not r.data.startswith(b"%PDF")
    link.revoked_at = utcnow()
    session.commit()
    r = client.get("/s/abcdefghjkmn/report.pdf")
    assert r.status_code in (403, 404, 410) and not r.data.startswith(b"%PDF")
    assert client.get("/s/zzzzzzzzzzzz/report.pdf").status_code == 404


def test_bulk_link_needs_the_clerk_and_csrf_and_links_only_clear_cases(
    client: FlaskClient, session: Session, world: World  # noqa: F811
) -> None:
    p = patients.create_patient(session, world.actor("physician"), patient_data())
    linked = Study(orthanc_id="sec-2", study_instance_uid="1.2.78", state="linked", patient_id=p.id)
    stray = Study(orthanc_id="sec-3", study_instance_uid="1.2.79", state="unmatched", dicom_patient_name="X^Y")
    session.add_all([linked, stray])
    session.commit()
    login(client, "physician1")
    token = csrf_token(client, "/patients/")
    assert client.post("/reconcile/bulk", data={"csrf_token": token, "study": [str(stray.id)]}).status_code == 403
    client.post("/logout", data={"csrf_token": token})
    login(client, "records_clerk1")
    assert client.post("/reconcile/bulk", data={"study": [str(stray.id)]}).status_code == 400  # no CSRF token
    token = csrf_token(client, "/reconcile/")
    r = client.post(
        "/reconcile/bulk",
        data={"csrf_token": token, "study": [str(linked.id), str(stray.id), "-1", "1e9", "x" * 50]},
    )
    assert r.status_code == 302 and "bulk_linked=0" in r.headers["Location"]
    session.expire_all()
    assert session.get(Study, stray.id).state == "unmatched"  # type: ignore[union-attr]
    assert session.get(Study, linked.id).state == "linked"  # type: ignore[union-attr]


def test_saved_settings_file_is_private_and_the_environment_wins(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from filmless import settings as fs

    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("FILMLESS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FILMLESS_EMR_PORT", "18080")
    monkeypatch.setenv("FILMLESS_ORTHANC_PASSWORD", "s3cret-value")
    saved = fs.save_running_settings(fs.load())
    assert saved == tmp_path / "var" / fs.SAVED_SETTINGS_NAME
    assert saved.stat().st_mode & 0o077 == 0  # may hold a password or DSN
    monkeypatch.delenv("FILMLESS_EMR_PORT")
    monkeypatch.delenv("FILMLESS_ORTHANC_PASSWORD")
    assert fs.load().emr.port == 18080  # another command finds the running installation
    monkeypatch.setenv("FILMLESS_EMR_PORT", "18081")
    assert fs.load().emr.port == 18081  # the environment still wins
    saved.write_text(json.dumps({"FILMLESS_EMR_PORT": 5, "PATH": "/evil", "FILMLESS_GATEWAY_PORT": "19999"}))
    monkeypatch.delenv("FILMLESS_EMR_PORT")
    loaded = fs.load()
    assert loaded.emr.port == 8080 and loaded.gateway.port == 19999  # non-strings and other names ignored
    assert os.environ.get("PATH") != "/evil"
    saved.write_text("{not json")
    assert fs.load().emr.port == 8080  # a broken file is ignored, not a crash
