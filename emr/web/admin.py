"""Admin pages: the index of the administration pages, the audit log viewer and its CSV export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, g, render_template, request, stream_with_context, url_for

from emr.access import audit_query
from emr.access.auth import current_actor, deny, requires
from emr.access.permissions import allowed, may_review_break_glass
from emr.core.clock import facility_zone

from .. import db

__all__ = ["ADMIN_SECTIONS", "AdminSection", "admin_sections", "bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")


@dataclass(frozen=True)
class AdminSection:
    """One administration page: where it is, its name and line in vi.json, and who may open it (the same
    rule as its route: :mod:`emr.access.permissions`)."""

    endpoint: str
    label: str
    description: str
    may: Callable[[Any], bool]
    in_menu: bool = True  # the "Quản trị" menu of the top bar (the audit log has its own link there)


def _role(action: str) -> Callable[[Any], bool]:
    return lambda user: allowed(user.role, action)


# The index at /admin and the top bar's menu list these, in this order.
ADMIN_SECTIONS: tuple[AdminSection, ...] = (
    AdminSection("admin.audit_page", "nav.audit", "admin.index.desc.audit", _role("audit.read"), in_menu=False),
    AdminSection("users.index", "nav.users", "admin.index.desc.users", _role("user.manage")),
    AdminSection("catalogues.index", "nav.catalogues", "admin.index.desc.catalogues", _role("catalog.read")),
    AdminSection("hl7.index", "nav.hl7", "admin.index.desc.hl7", _role("hl7.manage")),
    AdminSection("ops.page", "nav.ops", "admin.index.desc.ops", _role("ops.read")),
    AdminSection("network.sites_page", "nav.network_sites", "admin.index.desc.network_sites",
                 _role("network.manage")),
    # Admins, and heads of department for their department's accesses.
    AdminSection("care.review", "nav.break_glass", "admin.index.desc.break_glass", may_review_break_glass),
    AdminSection("outbox.index", "outbox.nav", "admin.index.desc.outbox", _role("outbox.manage")),
)


def admin_sections(user: Any = None) -> list[AdminSection]:
    """The administration pages ``user`` (default: the logged-in user) may open; none when logged out."""
    user = user if user is not None else g.get("user")
    if user is None:
        return []
    return [section for section in ADMIN_SECTIONS if section.may(user)]


@bp.get("")
@requires("self")
def index() -> Any:
    """The administration pages the user may open; a user who may open none is refused (and audited)."""
    sections = admin_sections(g.user)
    if not sections:
        deny("admin.index")
        abort(403)
    return render_template("admin/index.html", sections=[(url_for(s.endpoint), s) for s in sections])


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
