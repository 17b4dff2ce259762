"""The operations page (issue 16 §3): its figures on known rows, the page for admins only, EMR /metrics.

Runs on SQLite and PostgreSQL (the ``session`` fixture). Every timestamp is
placed relative to one fixed ``NOW`` so the medians and 90th percentiles are
exact (percentile_cont: linear interpolation between the closest ranks).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import to_local
from emr.imaging import orders
from emr.models import AuditEntry, Document, DocumentVersion, ImagingOrder, Study
from emr.ops import service as ops
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import World, login, patient_data

NOW = datetime(2026, 12, 7, 5, 0, 0)  # naive UTC, 12:00 in Hồ Chí Minh City

# (images after order, report after images, signature after report) in seconds, per complete order.
CHAINS = [(600, 60, 100), (1200, 120, 200), (1800, 180, 300), (7200, 600, 1000)]
MODALITIES = ["CT", "CT", "MR", "DX\\SR"]


def _order(session: Session, world: World, encounter: Any, patient: Any, modality: str, ordered_at: datetime,
           status: str | None = None) -> ImagingOrder:
    order = orders.create_order(session, world.actor("physician"), {
        "patient_id": patient.id, "encounter_id": encounter.id, "modality": modality[:2], "procedure_name": "Chụp",
    })
    order.ordered_at = ordered_at
    if status:
        order.status = status
    return order


def _study(session: Session, order: ImagingOrder, seen: datetime, modalities: str) -> Study:
    study = Study(
        orthanc_id=f"o-{order.id}", study_instance_uid=order.study_instance_uid, order_id=order.id,
        patient_id=order.patient_id, state="linked", first_seen_at=seen, modalities=modalities,
        study_date=to_local(seen).strftime("%Y%m%d"),
    )
    session.add(study)
    return study


def _report(session: Session, world: World, order: ImagingOrder, created: datetime, signed: datetime | None) -> None:
    author = world.users["radiologist"].id
    doc = Document(patient_id=order.patient_id, encounter_id=order.encounter_id, order_id=order.id,
                   form_type="radiology_report", status="signed" if signed else "draft", created_by=author,
                   created_at=created)
    session.add(doc)
    session.flush()
    session.add(DocumentVersion(document_id=doc.id, number=1, content_json="{}",
                                content_sha256=hashlib.sha256(b"{}").hexdigest(), status=doc.status,
                                created_by=author, created_at=created, signed_at=signed,
                                signed_by=author if signed else None))


@pytest.fixture
def known(session: Session, world: World) -> SimpleNamespace:
    doctor = world.actor("physician")
    patient = patients.create_patient(session, doctor, patient_data(cccd="079190009999", bhyt_number=None))
    enc = encounters.create_encounter(session, doctor, {"patient_id": patient.id, "kind": "outpatient",
                                                        "department_code": "K19"})
    for i, ((to_images, to_report, to_sign), modality) in enumerate(zip(CHAINS, MODALITIES, strict=True)):
        ordered = NOW - timedelta(days=2, hours=i)
        order = _order(session, world, enc, patient, modality, ordered)
        imaged = ordered + timedelta(seconds=to_images)
        _study(session, order, imaged, modality)
        reported = imaged + timedelta(seconds=to_report)
        _report(session, world, order, reported, reported + timedelta(seconds=to_sign))
    # Unread: ordered long ago (outside the turnaround window), images arrived at various ages.
    for age, modality in ((timedelta(minutes=30), "CT"), (timedelta(hours=2), "US"), (timedelta(days=5), "CT")):
        order = _order(session, world, enc, patient, modality, NOW - timedelta(days=40))
        _study(session, order, NOW - age, modality)
    # A draft report does not make a study read.
    draft = _order(session, world, enc, patient, "MR", NOW - timedelta(days=40))
    _study(session, draft, NOW - timedelta(hours=6), "MR")
    _report(session, world, draft, NOW - timedelta(hours=5), None)
    # A cancelled order's study is neither unread nor in the turnaround.
    cancelled = _order(session, world, enc, patient, "CT", NOW - timedelta(days=1), status="cancelled")
    _study(session, cancelled, NOW - timedelta(days=1), "CT")
    session.commit()
    return SimpleNamespace(patient=patient)


def test_quantile_is_percentile_cont() -> None:
    assert ops.quantile([], 0.5) is None
    assert ops.quantile([5.0], 0.9) == 5.0
    assert ops.quantile([1, 2, 3, 10], 0.5) == 2.5
    assert ops.quantile([10, 3, 2, 1], 0.9) == pytest.approx(7.9)


def test_turnaround_medians_and_p90_are_exact(session: Session, known: SimpleNamespace) -> None:
    rows = {r.step: r for r in ops.turnaround(session, 30, NOW)}
    assert rows["images"] == ops.Turnaround("images", 4, 1500.0, pytest.approx(5580.0))
    assert rows["report"] == ops.Turnaround("report", 4, 150.0, pytest.approx(474.0))
    assert rows["signature"] == ops.Turnaround("signature", 4, 250.0, pytest.approx(790.0))
    assert rows["total"] == ops.Turnaround("total", 4, 1900.0, pytest.approx(6844.0))
    # A shorter window leaves the orders of two days ago out.
    assert all(r.count == 0 and r.median_s is None for r in ops.turnaround(session, 1, NOW))


def test_unread_by_age_counts_linked_unsigned_studies(session: Session, known: SimpleNamespace) -> None:
    assert ops.unread_by_age(session, NOW) == {"lt1h": 1, "1to4h": 1, "4to24h": 1, "1to3d": 0, "gt3d": 1}


def test_studies_per_day_by_modality(session: Session, known: SimpleNamespace) -> None:
    today = to_local(NOW).date()
    figures = ops.studies_per_day(session, 30, today)
    assert len(figures["days"]) == 30 and figures["days"][-1] == today.strftime("%d/%m")
    # Everything first seen in the window: 4 complete, 3 of the unread (the 5-day-old one too), the draft's, the
    # cancelled one's; DX\SR counts as DX (the first image modality).
    assert figures["total"] == 9
    assert sum(figures["series"]["CT"]) == 5 and sum(figures["series"]["DX"]) == 1
    assert "SR" not in figures["series"]
    assert figures["series"]["US"][-1] == 1  # two hours ago is today
    assert list(figures["series"])[0] == "CT"  # the busiest modality first (the chart's legend order)


def test_storage_outlook_days_left_at_the_recent_rate(session: Session, known: SimpleNamespace) -> None:
    outlook = ops.storage_outlook(session, used_bytes=3_000_000_000, stored_studies=30, free_bytes=8_000_000_000,
                                  days=30, now=NOW)
    assert outlook.studies_per_day == pytest.approx(9 / 30)
    assert outlook.bytes_per_day == pytest.approx(9 / 30 * 100_000_000)
    assert outlook.days_left == pytest.approx(8_000_000_000 / (9 / 30 * 100_000_000))
    unknown = ops.storage_outlook(session, used_bytes=None, stored_studies=None, free_bytes=None, now=NOW)
    assert unknown.days_left is None and unknown.bytes_per_day is None


def test_overview_survives_broken_parts_and_warns(session: Session, known: SimpleNamespace) -> None:
    def down() -> Any:
        raise ConnectionError("Orthanc is down")

    gateway = {"backlog": 3, "quarantined": 2, "mpps_pending": 0, "commitments_pending": 0,
               "oldest_backlog_s": 900.0, "oldest_mpps_s": 0.0, "oldest_commitment_s": 0.0}
    overview = ops.operations_overview(session, storage_stats=down, free_bytes=lambda: 10**12,
                                       gateway_status=lambda: gateway, now=NOW)
    assert overview.storage.used_bytes is None and overview.storage.free_bytes == 10**12
    assert overview.gateway == gateway
    assert set(overview.warnings) == {
        "ops.warn.storage_unavailable", "ops.warn.gateway_stale", "ops.warn.quarantine", "ops.warn.unread_old",
    }
    assert overview.outbox["dead"] == 0
    json.dumps(overview.as_dict())  # the page's chart data is plain JSON


# The web-level tests need one database; the figures themselves are checked on both above.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_page_for_admin_only_shows_the_figures_and_is_audited(
    app: Flask, client: FlaskClient, session: Session, known: SimpleNamespace,
) -> None:
    from emr.access.login_guard import LoginGuard

    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    stats = SimpleNamespace(disk_bytes=3_000_000_000, studies=30)
    app.extensions["emr.store"] = SimpleNamespace(statistics=lambda: stats)
    app.extensions["emr.ops_sources"] = {"free_bytes": lambda: 8_000_000_000, "gateway_status": lambda: None}
    assert login(client, "admin1").status_code == 302
    r = client.get("/admin/ops")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "Vận hành hệ thống" in html and "no-store" in r.headers["Cache-Control"]
    assert "3,00 GB" in html  # used, from the archive's statistics
    data = json.loads(re.search(r'<script type="application/json" id="ops-data">(.*?)</script>', html, re.S)[1])
    assert data["unread"]["gt3d"] == 1 and data["labels"]["ages"]["gt3d"] == "Trên 3 ngày"
    assert known.patient.full_name not in html  # counts, never a patient
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "ops.view")).one()
    assert (row.username, row.outcome) == ("admin1", "success")
    session.rollback()  # SQLite: let the app's sessions write
    for role in ("physician", "radiologist", "records_clerk"):
        other = app.test_client()
        assert login(other, f"{role}1").status_code == 302
        assert other.get("/admin/ops").status_code == 403
    assert app.test_client().get("/admin/ops").status_code == 302  # to the login page


def _scrape(client: FlaskClient, app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {app.extensions['emr.metrics_token']}"})
    assert r.status_code == 200, r.status_code
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.get_data(as_text=True))
        for s in family.samples
    }


@SQLITE_ONLY
def test_emr_metrics_move_when_things_happen(
    app: Flask, client: FlaskClient, session: Session, world: World, known: SimpleNamespace,
) -> None:
    from emr.core.exceptions import EmrError
    from emr.signing import service as signing

    app.extensions["emr.metrics_ttl"] = 0  # every scrape reads the database (30 s cache otherwise)
    before = _scrape(client, app)
    assert before[("filmless_emr_unread_studies", (("age", "gt3d"),))] == 1
    linked = before[("filmless_emr_studies", (("state", "linked"),))]
    # A new study arrives for a new order: one more linked study, one more unread of under an hour.
    enc_patient = known.patient
    enc = session.scalars(select(ImagingOrder)).first()
    order = orders.create_order(session, world.actor("physician"), {
        "patient_id": enc_patient.id, "encounter_id": enc.encounter_id, "modality": "CT", "procedure_name": "Chụp",
    })
    _study(session, order, datetime.utcnow(), "CT")
    session.commit()
    # A page is served and a signature fails: both are timed.
    login(client, "admin1")
    client.get("/admin/ops")
    with pytest.raises(EmrError):
        signing.sign_document(session, world.actor("radiologist"), 999_999, app.extensions["emr.signing_config"],
                              method="pkcs12", secret="x", expected_sha256="0" * 64)
    session.rollback()
    after = _scrape(client, app)
    assert after[("filmless_emr_studies", (("state", "linked"),))] == linked + 1
    assert after[("filmless_emr_unread_studies", (("age", "lt1h"),))] >= 1
    page = ("filmless_emr_request_seconds_count", (("endpoint", "ops.page"), ("method", "GET"), ("status", "2xx")))
    assert after[page] == before.get(page, 0) + 1
    failed = ("filmless_emr_signing_seconds_count", (("outcome", "error"),))
    assert after[failed] == before.get(failed, 0) + 1
    assert after[("filmless_emr_outbox_messages", (("status", "waiting"),))] == 0
    # Labels are endpoints, never URLs with ids in them.
    assert not [k for k in after if k[0].startswith("filmless_emr_request") and any("/" in v for _, v in k[1])]


@SQLITE_ONLY
def test_database_gauges_are_cached_between_close_scrapes(
    app: Flask, client: FlaskClient, session: Session, known: SimpleNamespace,
) -> None:
    """Prometheus may scrape every few seconds: the year-wide GROUP BYs run at most once per TTL."""
    app.extensions["emr.metrics_ttl"] = 0
    first = _scrape(client, app)  # fresh figures, now cached
    app.extensions["emr.metrics_ttl"] = 3600
    study = session.scalars(select(Study)).first()
    assert study is not None
    study.state = "unmatched"
    session.commit()
    cached = _scrape(client, app)
    key = ("filmless_emr_studies", (("state", "linked"),))
    assert cached[key] == first[key]  # within the TTL: the same figures
    app.extensions["emr.metrics_ttl"] = 0
    assert _scrape(client, app)[key] == first[key] - 1


def test_vendored_chart_library_is_the_recorded_release() -> None:
    folder = Path(__file__).resolve().parents[2] / "emr" / "static" / "vendor" / "chartjs"
    code = (folder / "chart.umd.min.js").read_bytes()
    assert code.startswith(b"/*!\n * Chart.js v4.6.2")
    assert hashlib.sha256(code).hexdigest() == "3f288f4f26882c26b58931fb586a9b4f30370b5de38d69dc005b0bd05b08e113"
    assert "MIT License" in (folder / "LICENSE.md").read_text()
