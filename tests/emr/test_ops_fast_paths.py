"""The operations page's fast paths give the figures a straightforward computation gives (issue 16 §3).

The unread queue starts from the orders not reported yet (a partial index)
and the turnaround quantiles are taken by PostgreSQL's percentile_cont over
an array of fractions and reused for a minute on the page. Each is compared
here with a plain Python computation over every row of the same known data
(SQLite and PostgreSQL, the ``session`` fixture), and signing a radiology
report is checked to move its order to ``reported`` (what the unread queue
and the reading worklist rely on).
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.states import OrderStatus, after_report_signed, after_report_withdrawn
from emr.documents import service as documents
from emr.models import Document, DocumentVersion, ImagingOrder, Study
from emr.ops import service as ops

from . import test_ops_page as page
from . import test_prices as prices
from .conftest import World
from .test_ops_page import NOW, _order, _report, _study

known = page.known  # the known rows of the page's own tests (a fixture)
empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)
_touches = prices._touches

AGES = dict(ops.AGE_BUCKETS)


def _straight_unread(session: Session, now: datetime) -> dict[str, int]:
    """Every linked study, its order and its reports read into Python and counted by hand."""
    orders = {o.id: o for o in session.scalars(select(ImagingOrder))}
    signed = {d.order_id for d in session.scalars(select(Document))
              if d.form_type == "radiology_report" and d.status == "signed"}
    out = {key: 0 for key in AGES}
    for study in session.scalars(select(Study)):
        order = orders.get(study.order_id)  # type: ignore[arg-type]
        if study.state != "linked" or order is None or order.status in ("cancelled", "reported"):
            continue
        if order.id in signed:
            continue
        hours = (now - study.first_seen_at).total_seconds() / 3600
        key = [k for k, lower in ops.AGE_BUCKETS if hours >= lower or lower == 0][-1]
        out[key] += 1
    return out


Figures = dict[str, tuple[int, float | None, float | None]]


def _straight_turnaround(session: Session, days: int, now: datetime) -> Figures:
    """Each order of the window's four durations from its rows, quantiles by statistics' own method."""
    values: dict[str, list[float]] = {step: [] for step in ops.TURNAROUND_STEPS}
    for order in session.scalars(select(ImagingOrder).where(ImagingOrder.ordered_at >= now - timedelta(days=days))):
        if order.status == "cancelled":
            continue
        seen = [s.first_seen_at for s in session.scalars(select(Study).where(Study.order_id == order.id))]
        reports = [d for d in session.scalars(select(Document).where(Document.order_id == order.id))
                   if d.form_type == "radiology_report" and d.status != "cancelled"]
        created = min((d.created_at for d in reports), default=None)
        signed = min((v.signed_at for d in reports for v in session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == d.id)) if v.signed_at), default=None)
        images = min(seen, default=None)

        def gap(later: datetime | None, earlier: datetime | None) -> float | None:
            return None if later is None or earlier is None else max(0.0, (later - earlier).total_seconds())

        for step, value in zip(ops.TURNAROUND_STEPS, (gap(images, order.ordered_at), gap(created, images),
                                                      gap(signed, created), gap(signed, order.ordered_at)),
                               strict=True):
            if value is not None:
                values[step].append(value)

    def q(v: list[float], n: int) -> float | None:
        # statistics.quantiles(method="inclusive") is percentile_cont's linear interpolation.
        return None if not v else v[0] if len(v) == 1 else statistics.quantiles(v, n=10, method="inclusive")[n - 1]

    return {step: (len(v), q(v, 5), q(v, 9)) for step, v in values.items()}


def _more(session: Session, world: World, known: SimpleNamespace) -> None:
    """Orders in every state the fast paths treat differently from a full scan."""
    enc = session.scalars(select(ImagingOrder)).first()
    assert enc is not None
    enc_ns = SimpleNamespace(id=enc.encounter_id)
    # Reported by a reading site (no local report): read.
    remote = _order(session, world, enc_ns, known.patient, "CT", NOW - timedelta(days=3), status="reported")
    _study(session, remote, NOW - timedelta(days=3) + timedelta(minutes=40), "CT")
    # Signed before signing set 'reported' (status left at images_available): read, by its report.
    old = _order(session, world, enc_ns, known.patient, "DX", NOW - timedelta(days=4), status="images_available")
    _study(session, old, NOW - timedelta(days=4) + timedelta(minutes=5), "DX")
    _report(session, world, old, NOW - timedelta(days=4) + timedelta(hours=1), NOW - timedelta(days=4, minutes=-70))
    # Waiting: two studies of one order, one unmatched study (not linked: not counted).
    waiting = _order(session, world, enc_ns, known.patient, "MR", NOW - timedelta(hours=30),
                     status="images_available")
    _study(session, waiting, NOW - timedelta(hours=29), "MR")
    second = _study(session, waiting, NOW - timedelta(hours=3), "MR")
    second.orthanc_id, second.study_instance_uid = "o-second", "1.2.3.4.5.999"
    session.add(Study(orthanc_id="o-loose", study_instance_uid="1.2.3.4.5.998", state="unmatched",
                      first_seen_at=NOW - timedelta(hours=2), modalities="CT"))
    session.commit()


def test_unread_fast_path_matches_a_full_count(session: Session, world: World, known: SimpleNamespace) -> None:
    assert ops.unread_by_age(session, NOW) == _straight_unread(session, NOW)
    _more(session, world, known)
    fast = ops.unread_by_age(session, NOW)
    assert fast == _straight_unread(session, NOW)
    assert fast == {"lt1h": 1, "1to4h": 2, "4to24h": 1, "1to3d": 1, "gt3d": 1}


def test_turnaround_fast_path_matches_a_plain_computation(
    session: Session, world: World, known: SimpleNamespace,
) -> None:
    _more(session, world, known)
    for days in (1, 3, 30):
        plain = _straight_turnaround(session, days, NOW)
        for row in ops.turnaround(session, days, NOW):
            count, median, p90 = plain[row.step]
            assert row.count == count, (days, row)
            assert row.median_s == (None if median is None else pytest.approx(median, abs=1e-3)), (days, row)
            assert row.p90_s == (None if p90 is None else pytest.approx(p90, abs=1e-3)), (days, row)
    assert plain["images"][0] == 7  # the four chains, the orders of 3 and 4 days ago, the waiting one


def test_page_reuses_the_turnaround_within_its_ttl(session: Session, world: World, known: SimpleNamespace) -> None:
    # A TTL of 0 computes (and keeps the result): what this process cached before does not matter.
    first = ops.operations_overview(session, now=NOW, turnaround_ttl=0)
    assert first.turnaround == ops.turnaround(session, 30, NOW)
    _more(session, world, known)  # two more orders in the window
    cached = ops.operations_overview(session, now=NOW, turnaround_ttl=3600)
    assert cached.turnaround == first.turnaround  # within the TTL: the same figures
    assert cached.unread != first.unread  # the unread queue is live
    fresh = ops.operations_overview(session, now=NOW, turnaround_ttl=0)
    assert fresh.turnaround == ops.turnaround(session, 30, NOW) != first.turnaround
    # The next facility day is another key: never yesterday's month after midnight.
    tomorrow = ops.operations_overview(session, now=NOW + timedelta(days=1), turnaround_ttl=3600)
    assert tomorrow.turnaround == ops.turnaround(session, 30, NOW + timedelta(days=1))


def test_signing_a_radiology_report_reports_its_order(session: Session, world: World, known: SimpleNamespace) -> None:
    assert after_report_signed("images_available") == after_report_signed("scheduled") == OrderStatus.REPORTED
    assert after_report_signed("cancelled") == OrderStatus.CANCELLED
    enc = session.scalars(select(ImagingOrder)).first()
    assert enc is not None
    enc_ns = SimpleNamespace(id=enc.encounter_id)
    order = _order(session, world, enc_ns, known.patient, "CT", NOW - timedelta(hours=2), status="images_available")
    _study(session, order, datetime.utcnow() - timedelta(minutes=10), "CT")
    _report(session, world, order, datetime.utcnow(), None)  # a draft
    cancelled = _order(session, world, enc_ns, known.patient, "CT", NOW - timedelta(hours=2), status="cancelled")
    _report(session, world, cancelled, datetime.utcnow(), None)
    session.commit()
    before = ops.unread_by_age(session)
    radiologist = world.actor("radiologist")
    for o in (order, cancelled):
        doc = session.scalars(select(Document).where(Document.order_id == o.id)).one()
        documents.mark_signed(session, radiologist, doc.id, 1)
    session.expire_all()
    assert session.get(ImagingOrder, order.id).status == "reported"  # type: ignore[union-attr]
    assert session.get(ImagingOrder, cancelled.id).status == "cancelled"  # type: ignore[union-attr]
    assert ops.unread_by_age(session)["lt1h"] == before["lt1h"] - 1
    # The signed report cancelled: the study waits for a reader again; restored: read again.
    report = session.scalars(select(Document).where(Document.order_id == order.id)).one()
    documents.cancel_document(session, radiologist, report.id, "nhầm bệnh nhân")
    session.expire_all()
    assert session.get(ImagingOrder, order.id).status == "images_available"  # type: ignore[union-attr]
    assert ops.unread_by_age(session)["lt1h"] == before["lt1h"]
    documents.restore_document(session, radiologist, report.id, "đúng bệnh nhân")
    session.expire_all()
    assert session.get(ImagingOrder, order.id).status == "reported"  # type: ignore[union-attr]
    assert after_report_withdrawn("reported", False) == OrderStatus.COMPLETED
    assert after_report_withdrawn("cancelled", True) == OrderStatus.CANCELLED
    # Another kind of document on the order leaves it alone.
    other = _order(session, world, enc_ns, known.patient, "US", NOW, status="images_available")
    note = Document(patient_id=other.patient_id, encounter_id=other.encounter_id, order_id=other.id,
                    form_type="progress_note", status="draft", created_by=world.users["physician"].id)
    session.add(note)
    session.flush()
    session.add(DocumentVersion(document_id=note.id, number=1, content_json="{}", content_sha256="0" * 64,
                                status="draft", created_by=world.users["physician"].id))
    session.commit()
    documents.mark_signed(session, world.actor("physician"), note.id, 1)
    session.expire_all()
    assert session.get(ImagingOrder, other.id).status == "images_available"  # type: ignore[union-attr]


def test_migration_0017_reports_signed_orders_and_matches_the_models(empty_url: str) -> None:
    """Orders signed before the signing flow set 'reported' become reported; the others keep their status."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    engine, t = prices.at_revision(empty_url, "0015")
    now = datetime(2026, 11, 1, 8, 0)
    try:
        with engine.begin() as c:
            prices.seed_people(c, t, now)
            # order id → (status before, its radiology report's status or None)
            cases = {1: ("images_available", "signed"), 2: ("images_available", "draft"), 3: ("cancelled", "signed"),
                     4: ("completed", None), 5: ("images_available", "cancelled")}
            for oid, (status, report) in cases.items():
                c.execute(t["imaging_orders"].insert().values(
                    id=oid, patient_id=1, encounter_id=1, accession_number=f"A{oid}", study_instance_uid=f"1.2.{oid}",
                    modality="CT", procedure_name="CT ngực", urgency="routine", status=status, ordered_by=1,
                    ordered_at=now, scheduled_at=now))
                if report:
                    c.execute(t["documents"].insert().values(
                        id=oid, patient_id=1, encounter_id=1, order_id=oid, form_type="radiology_report",
                        status=report, current_version=1, record_type="ordinary", retention_class="10y",
                        created_by=1, created_at=now))
        upgrade(engine)
        with engine.connect() as c:
            statuses = dict(c.execute(select(ImagingOrder.id, ImagingOrder.status)).all())
            assert statuses == {1: "reported", 2: "images_available", 3: "cancelled", 4: "completed",
                                5: "images_available"}
            ours = {"imaging_orders", "studies"}
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata) if _touches(d, ours)]
            assert diffs == []
    finally:
        engine.dispose()


def test_ttl_cache_computes_once_for_callers_that_arrive_together() -> None:
    """Ten administrators opening the page after a restart run the month-wide query once, not ten times."""
    import threading

    from emr.ops.cache import TtlCache

    clock = [100.0]
    cache = TtlCache(clock=lambda: clock[0])
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        started.set()
        release.wait(10)
        return len(calls)

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(cache.get("k", 60, slow)))
    first.start()
    started.wait(10)
    others = [threading.Thread(target=lambda: results.append(cache.get("k", 60, slow))) for _ in range(5)]
    for t in others:
        t.start()
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert results == [1] * 6 and len(calls) == 1
    clock[0] += 59
    assert cache.get("k", 60, lambda: 99) == 1  # still young
    clock[0] += 1
    assert cache.get("k", 60, lambda: 99) == 99  # a minute old: computed again
    assert cache.get("other", 60, lambda: 7) == 7  # keys are apart

    def broken() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        cache.get("down", 60, broken)
    assert cache.get("down", 60, lambda: 5) == 5  # a failure is not cached
