"""The operations page for administrators (/admin/ops) and the Prometheus scrape endpoint (/metrics).

/admin/ops needs a logged-in role holding ``ops.read`` and is audited
(``ops.view``); it shows counts and durations, never a patient.
/metrics has no session at all: Prometheus sends the bearer token generated
into ``EmrSettings.metrics_token_file`` (0600), compared in constant time; a
logged-in administrator's cookie does not open it.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, current_app, render_template

from emr.access import audit
from emr.access.auth import bearer_token, current_actor, requires
from emr.i18n import t
from emr.models import OUTBOX_STATUSES
from emr.ops.metrics import exposition
from emr.ops.service import AGE_BUCKETS, operations_overview

from .. import db

__all__ = ["bp", "metrics_bp"]

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__, url_prefix="/admin/ops")
metrics_bp = Blueprint("metrics", __name__)

# Seconds the page reuses its month of turnaround quantiles (emr.ops.service.cached_turnaround): a
# minute-old median is as good to an administrator, and reloading the page stays fast.
TURNAROUND_TTL = 60.0


def duration(seconds: float | None) -> str:
    """A duration as people on duty say it: "2 ngày 3 giờ", "4 giờ 12 phút", "35 phút", "20 giây"."""
    if seconds is None:
        return t("ops.unknown")
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return t("ops.duration.days_hours", days=days, hours=hours)
    if hours:
        return t("ops.duration.hours_minutes", hours=hours, minutes=minutes)
    if minutes:
        return t("ops.duration.minutes", minutes=minutes)
    return t("ops.duration.seconds", seconds=secs)


def size(value: float | None) -> str:
    """Bytes in the unit a storage plan is made in (GB, or TB above 1000 GB); decimal comma as in Vietnam."""
    if value is None:
        return t("ops.unknown")
    gb = value / 1e9
    text = f"{gb / 1000:.2f} TB" if gb >= 1000 else f"{gb:.2f} GB" if gb >= 0.01 else f"{value / 1e6:.1f} MB"
    return text.replace(".", ",")


@bp.get("")
@requires("ops.read")
def page() -> Any:
    session = db.session()
    store = current_app.extensions.get("emr.store")
    sources = current_app.extensions.get("emr.ops_sources", {})
    overview = operations_overview(
        session,
        storage_stats=getattr(store, "statistics", None),
        free_bytes=sources.get("free_bytes"),
        gateway_status=sources.get("gateway_status"),
        turnaround_ttl=current_app.extensions.get("emr.ops_turnaround_ttl", TURNAROUND_TTL),
    )
    audit.record(session, current_actor(), "ops.view", object_type="page", object_id="ops")
    session.commit()
    buckets = [k for k, _ in AGE_BUCKETS]
    chart_data = {
        **overview.as_dict(),
        "buckets": buckets,
        "labels": {
            "studies": t("ops.per_day.axis"),
            "median": t("ops.turnaround.median"),
            "p90": t("ops.turnaround.p90"),
            "hours": t("ops.turnaround.axis"),
            "minutes": t("ops.turnaround.axis_minutes"),
            "unread": t("ops.unread.title"),
            "steps": {row.step: t(f"ops.turnaround.{row.step}") for row in overview.turnaround},
            "ages": {key: t(f"ops.unread.{key}") for key in buckets},
        },
    }
    response = Response(render_template(
        "ops/index.html", o=overview, chart_data=chart_data, buckets=buckets, duration=duration, size=size,
        outbox_statuses=OUTBOX_STATUSES,
    ))
    response.headers["Cache-Control"] = "no-store"
    return response


@metrics_bp.get("/metrics")
def metrics() -> Any:
    """Prometheus text exposition (RFC 6750 bearer token; 401 without the right one)."""
    expected = current_app.extensions.get("emr.metrics_token") or ""
    given = bearer_token() or ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("metrics scrape refused: missing or wrong bearer token")
        headers = {"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
        return Response("a bearer token is required\n", 401, headers, mimetype="text/plain")
    body = exposition(db.session(), current_app.extensions.get("emr.store"),
                      ttl=current_app.extensions.get("emr.metrics_ttl"))
    return Response(body, 200, {"Cache-Control": "no-store"}, mimetype="text/plain; version=0.0.4")
