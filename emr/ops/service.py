"""The operations page's figures, from SQL aggregates (issue 16 §3).

Each function takes a ``Session`` and returns plain data; the page and the
tests call them the same way. They stay fast with a year of a provincial
hospital's rows because every query is bounded by an indexed time window
(``studies.first_seen_at``, ``imaging_orders.ordered_at``) and grouped in the
database; the turnaround quantiles are PostgreSQL's ``percentile_cont`` (one
per step for both fractions), and on SQLite, which has no such aggregate,
:func:`quantile` takes them here over one row per order of the window with
the same definition, so the figures are identical.

The unread queue starts from the orders not reported yet (a partial index,
migration 0017: signing a radiology report makes its order ``reported``), not
from every study of the year. The page reuses its turnaround quantiles for a
minute (:func:`cached_turnaround`); every other figure is read per visit.

Quantiles follow ``percentile_cont`` (linear interpolation between the
closest ranks): the median of 1, 2, 3, 10 is 2.5 and its 90th percentile is
7.9. ``benchmarks/emr.py`` times the whole page on a year of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select, text
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from emr import outbox
from emr.core.clock import local_today
from emr.core.states import OrderStatus, StudyState
from emr.models import OPEN_ORDER_SQL, Document, DocumentVersion, ImagingOrder, Study, utcnow

from .cache import TtlCache

__all__ = [
    "AGE_BUCKETS",
    "NON_IMAGE_MODALITIES",
    "OpsOverview",
    "StorageOutlook",
    "Turnaround",
    "cached_turnaround",
    "operations_overview",
    "outbox_health",
    "quantile",
    "storage_outlook",
    "studies_per_day",
    "turnaround",
    "unread_by_age",
]

# Series that carry no images of their own (reports, presentation states, key objects).
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "REG", "SEG"})

# Unread studies by time since they arrived: (key, lower bound in hours); the last is open-ended.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (("lt1h", 0), ("1to4h", 1), ("4to24h", 4), ("1to3d", 24), ("gt3d", 72))

_REPORT = "radiology_report"


def quantile(values: list[float], q: float) -> float | None:
    """``percentile_cont(q)`` of ``values``: linear interpolation between the closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _first_modality(value: str | None) -> str:
    parts = [m for m in (value or "").split("\\") if m]
    images = [m for m in parts if m not in NON_IMAGE_MODALITIES]
    return (images or parts or ["?"])[0]


def studies_per_day(session: Session, days: int = 30, today: date | None = None) -> dict[str, Any]:
    """Studies received per facility day and modality over the last ``days`` days (today included).

    The day is the study's DICOM Study Date (the modality's local date); studies
    are selected by when they reached filmless, so the query uses the
    ``first_seen_at`` index and a study sent late still counts on its own day.
    """
    today = today or local_today()
    first = today - timedelta(days=days - 1)
    labels = [(first + timedelta(days=i)).strftime("%Y%m%d") for i in range(days)]
    since = datetime.combine(first - timedelta(days=2), datetime.min.time())  # UTC offset and late sends
    rows = session.execute(
        select(Study.study_date, Study.modalities, func.count())
        .where(Study.first_seen_at >= since, Study.study_date >= labels[0], Study.study_date <= labels[-1])
        .group_by(Study.study_date, Study.modalities)
    ).all()
    index = {day: i for i, day in enumerate(labels)}
    series: dict[str, list[int]] = {}
    for day, modalities, count in rows:
        if day not in index:
            continue
        counts = series.setdefault(_first_modality(modalities), [0] * days)
        counts[index[day]] += int(count)
    return {
        "days": [f"{d[6:8]}/{d[4:6]}" for d in labels],
        "series": dict(sorted(series.items(), key=lambda kv: -sum(kv[1]))),
        "total": sum(sum(v) for v in series.values()),
    }


@dataclass(frozen=True)
class Turnaround:
    """One step of order → images → report → signature, in seconds over the window's orders."""

    step: str  # images | report | signature | total
    count: int
    median_s: float | None
    p90_s: float | None


def _elapsed(later: Any, earlier: Any, dialect: str) -> Any:
    """Seconds from ``earlier`` to ``later`` as a SQL expression (NULL when either is missing, 0 when negative)."""
    seconds: Any
    if dialect == "postgresql":
        seconds = func.extract("epoch", later - earlier)
    else:  # SQLite stores ISO text: julian days
        seconds = (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return case((seconds < 0, 0.0), else_=seconds)


TURNAROUND_STEPS = ("images", "report", "signature", "total")


def turnaround(session: Session, days: int = 30, now: datetime | None = None) -> list[Turnaround]:
    """Median and 90th percentile of each step for orders placed in the last ``days`` days.

    images: order placed → first study arrived; report: images → the radiology
    report was started; signature: report started → first signature; total:
    order → signature. An order counts in a step once both ends happened.

    Durations are computed in SQL over the window's orders only; PostgreSQL also
    takes the quantiles (``percentile_cont``), SQLite (no such aggregate)
    returns the durations and :func:`quantile` takes them here, with the same
    definition.
    """
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    in_window = and_(ImagingOrder.ordered_at >= now - timedelta(days=days),
                     ImagingOrder.status != OrderStatus.CANCELLED.value)
    # Each side is joined to the window's orders (index on ordered_at, then studies.order_id and
    # documents.order_id), never grouped over the whole year. Plain joins, not IN (CTE): PostgreSQL
    # then estimates the row counts right (a wrong estimate of millions made it JIT-compile for 1.7 s).
    images = (
        select(Study.order_id.label("order_id"), func.min(Study.first_seen_at).label("at"))
        .join(ImagingOrder, ImagingOrder.id == Study.order_id)
        .where(in_window)
        .group_by(Study.order_id)
        .subquery()
    )
    reports = (
        select(
            Document.order_id.label("order_id"),
            func.min(Document.created_at).label("created"),
            func.min(DocumentVersion.signed_at).label("signed"),
        )
        .join(ImagingOrder, ImagingOrder.id == Document.order_id)
        .outerjoin(DocumentVersion, and_(DocumentVersion.document_id == Document.id,
                                         DocumentVersion.signed_at.is_not(None)))
        .where(in_window, Document.form_type == _REPORT, Document.status != "cancelled")
        .group_by(Document.order_id)
        .subquery()
    )
    durations = (
        select(
            _elapsed(images.c.at, ImagingOrder.ordered_at, dialect).label("images"),
            _elapsed(reports.c.created, images.c.at, dialect).label("report"),
            _elapsed(reports.c.signed, reports.c.created, dialect).label("signature"),
            _elapsed(reports.c.signed, ImagingOrder.ordered_at, dialect).label("total"),
        )
        .select_from(ImagingOrder)
        .outerjoin(images, images.c.order_id == ImagingOrder.id)
        .outerjoin(reports, reports.c.order_id == ImagingOrder.id)
        .where(in_window)
        .subquery()
    )
    if dialect == "postgresql":
        # One sort per step for both quantiles (percentile_cont over an array of fractions), not two.
        columns = []
        for step in TURNAROUND_STEPS:
            col = durations.c[step]
            columns += [func.count(col), func.percentile_cont(array([0.5, 0.9])).within_group(col)]
        row = session.execute(select(*columns)).one()
        out = []
        for i, step in enumerate(TURNAROUND_STEPS):
            quantiles = row[2 * i + 1] or (None, None)
            out.append(Turnaround(step, int(row[2 * i]), _float(quantiles[0]), _float(quantiles[1])))
        return out
    values: dict[str, list[float]] = {step: [] for step in TURNAROUND_STEPS}
    for row in session.execute(select(durations)):
        for step, value in zip(TURNAROUND_STEPS, row, strict=True):
            if value is not None:  # julian days carry ~10 µs of float noise: whole milliseconds
                values[step].append(round(float(value), 3))
    return [Turnaround(step, len(v), quantile(v, 0.5), quantile(v, 0.9)) for step, v in values.items()]


_turnarounds = TtlCache()


def cached_turnaround(session: Session, days: int, now: datetime, ttl: float) -> list[Turnaround]:
    """:func:`turnaround` computed at most once per ``ttl`` seconds (0: always) per database, facility day
    and window; concurrent callers wait for one computation. The day is in the key so that the first
    page after local midnight never shows yesterday's month."""
    key = (str(session.get_bind().engine.url), local_today(now), days)
    return _turnarounds.get(key, ttl, lambda: turnaround(session, days, now))


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def unread_by_age(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Linked studies whose order is neither reported nor cancelled and has no signed radiology report,
    by time since they arrived. Signing a report makes its order ``reported`` (emr.core.states), and so
    does a report received from a reading site (emr.network): either way the study is read."""
    now = now or utcnow()
    signed = (
        select(Document.id)
        .where(Document.order_id == Study.order_id, Document.form_type == _REPORT, Document.status == "signed")
        .exists()
    )
    bounds = [(key, now - timedelta(hours=hours)) for key, hours in AGE_BUCKETS]
    columns = []
    for i, (key, newest) in enumerate(bounds):
        # The first bucket has no upper bound: it also takes a study stamped a moment ahead (clock skew).
        conditions = [Study.first_seen_at <= newest] if i else []
        if i + 1 < len(bounds):
            conditions.append(Study.first_seen_at > bounds[i + 1][1])
        columns.append(func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0).label(key))
    # Orders not reported yet first (the partial index ix_imaging_orders_unread: a few hundred rows, not a
    # year's), then their studies; the report check stays for orders signed before the signing flow set
    # 'reported' and for rows the migration has not seen.
    row = session.execute(
        select(*columns)
        .select_from(ImagingOrder)
        .join(Study, Study.order_id == ImagingOrder.id)
        .where(text(OPEN_ORDER_SQL), Study.state == StudyState.LINKED.value, ~signed)
    ).one()
    return {key: int(value or 0) for (key, _), value in zip(bounds, row, strict=True)}


@dataclass(frozen=True)
class StorageOutlook:
    """Disk the archive uses, what it grows by a day at the recent rate, and how long the free space lasts."""

    used_bytes: int | None
    free_bytes: int | None
    studies_per_day: float
    bytes_per_day: float | None
    days_left: float | None


def storage_outlook(
    session: Session,
    *,
    used_bytes: int | None,
    stored_studies: int | None,
    free_bytes: int | None,
    days: int = 30,
    now: datetime | None = None,
) -> StorageOutlook:
    """Days of free space left at the rate of the last ``days`` days.

    The rate is studies a day (from the EMR's studies, indexed) times the
    archive's mean study size (``used_bytes / stored_studies``, from Orthanc's
    own statistics): a day's bytes without reading any image.
    """
    now = now or utcnow()
    recent = session.scalar(
        select(func.count()).select_from(Study).where(Study.first_seen_at >= now - timedelta(days=days))
    )
    per_day = int(recent or 0) / days
    per_study = used_bytes / stored_studies if used_bytes is not None and stored_studies else None
    bytes_per_day = per_day * per_study if per_study is not None else None
    days_left = free_bytes / bytes_per_day if free_bytes is not None and bytes_per_day else None
    return StorageOutlook(used_bytes, free_bytes, per_day, bytes_per_day, days_left)


def outbox_health(session: Session, now: datetime | None = None) -> tuple[dict[str, int], float]:
    """Messages of the durable outbox (:mod:`emr.outbox`) by status (waiting, sending, sent, failed,
    dead), and the seconds the oldest message not yet delivered has waited (0 when none)."""
    found = outbox.overview(session)
    age = found.oldest_pending_age(now or utcnow())
    return {str(k): int(v) for k, v in found.counts.items()}, max(0.0, age.total_seconds()) if age else 0.0


@dataclass
class OpsOverview:
    """Everything the operations page shows (``as_dict`` feeds its charts)."""

    generated_at: datetime
    per_day: dict[str, Any]
    turnaround: list[Turnaround]
    unread: dict[str, int]
    storage: StorageOutlook
    gateway: dict[str, Any] | None
    outbox: dict[str, int]
    outbox_oldest_s: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_day": self.per_day,
            "turnaround": [asdict(t) for t in self.turnaround],
            "unread": self.unread,
            "storage": asdict(self.storage),
            "gateway": self.gateway,
            "outbox": self.outbox,
            "outbox_oldest_s": self.outbox_oldest_s,
        }


# Thresholds for the page's warnings (keys in emr/i18n/vi.json under ops.warn.*).
GATEWAY_QUEUE_STALE_S = 600.0
STORAGE_DAYS_LOW = 30.0
UNREAD_OLD_KEY = "gt3d"


def operations_overview(
    session: Session,
    *,
    storage_stats: Callable[[], Any] | None = None,
    free_bytes: Callable[[], int | None] | None = None,
    gateway_status: Callable[[], Mapping[str, Any] | None] | None = None,
    days: int = 30,
    now: datetime | None = None,
    turnaround_ttl: float = 0.0,
) -> OpsOverview:
    """The whole page. The callables come from outside the EMR (storage, the gateway's spool): each
    may fail or be missing, and the page then shows what it has (a broken part must not hide the rest).

    ``turnaround_ttl`` > 0: the turnaround quantiles (the one figure that reads a month of orders,
    reports and signatures: a few hundred ms on a year of a provincial hospital's rows) are reused
    for that many seconds, per database, facility day and window (:func:`cached_turnaround`). The
    live parts (unread queue, outbox, gateway, storage) are read on every call."""
    now = now or utcnow()
    warnings: list[str] = []
    stats = _safely(storage_stats, warnings, "ops.warn.storage_unavailable")
    free = _safely(free_bytes, warnings, "ops.warn.storage_unavailable")
    gateway = _safely(gateway_status, warnings, "ops.warn.gateway_unavailable")
    outlook = storage_outlook(
        session,
        used_bytes=getattr(stats, "disk_bytes", None),
        stored_studies=getattr(stats, "studies", None),
        free_bytes=free,
        days=days,
        now=now,
    )
    unread = unread_by_age(session, now)
    if outlook.days_left is not None and outlook.days_left < STORAGE_DAYS_LOW:
        warnings.append("ops.warn.storage_low")
    queues = ("oldest_backlog_s", "oldest_mpps_s", "oldest_commitment_s")
    stalest = max(float(gateway.get(k, 0)) for k in queues) if gateway else 0.0
    if stalest > GATEWAY_QUEUE_STALE_S:
        warnings.append("ops.warn.gateway_stale")
    if gateway and int(gateway.get("quarantined", 0)):
        warnings.append("ops.warn.quarantine")
    if unread.get(UNREAD_OLD_KEY):
        warnings.append("ops.warn.unread_old")
    messages, oldest_message = outbox_health(session, now)
    if messages.get("dead"):
        warnings.append("ops.warn.outbox_dead")
    return OpsOverview(
        generated_at=now,
        per_day=studies_per_day(session, days, local_today(now)),
        turnaround=cached_turnaround(session, days, now, turnaround_ttl),
        unread=unread,
        storage=outlook,
        gateway=dict(gateway) if gateway is not None else None,
        outbox=messages,
        outbox_oldest_s=oldest_message,
        warnings=list(dict.fromkeys(warnings)),
    )


def _safely(source: Callable[[], Any] | None, warnings: list[str], key: str) -> Any:
    if source is None:
        return None
    try:
        return source()
    except Exception:  # noqa: BLE001 - a part being down is a figure on this page, not an error of it
        warnings.append(key)
        return None
