"""Admin pages: the audit log viewer and its CSV export."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, render_template, request, stream_with_context

from emr.access import audit_query
from emr.access.auth import current_actor, requires
from emr.core.clock import facility_zone

from .. import db

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _id_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 19 else None


def _render(flt: audit_query.AuditFilter, page: audit_query.AuditPage) -> Any:
    return render_template(
        "audit.html",
        page=page,
        args=flt.as_args(),
        errors=flt.errors,
        actions=audit_query.known_actions(),
        action_label=audit_query.action_label,
        object_label=audit_query.object_label,
        local_time=audit_query.local_time,
        zone=facility_zone().key,
    ), (422 if flt.errors else 200)


@bp.get("/audit")
@requires("audit.read")
def audit_page() -> Any:
    flt = audit_query.parse_filter(request.args)
    if flt.errors:  # a date that cannot be applied lists nothing rather than everything
        return _render(flt, audit_query.AuditPage([]))
    page = audit_query.audit_page(db.session(), current_actor(), flt, before=_id_arg("before"), after=_id_arg("after"))
    return _render(flt, page)


@bp.get("/audit.csv")
@requires("audit.read")
def audit_export() -> Any:
    """The filtered log as CSV, streamed in chunks (a year of rows does not sit in memory).

    With a bad date the answer is the audit page saying so, not an export of the whole log."""
    flt = audit_query.parse_filter(request.args)
    if flt.errors:
        return _render(flt, audit_query.AuditPage([]))
    body = audit_query.audit_csv(db.session(), current_actor(), flt)
    response = Response(stream_with_context(body), mimetype="text/csv")  # Flask adds "; charset=utf-8"
    response.headers["Content-Disposition"] = 'attachment; filename="nhat-ky-truy-cap.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
