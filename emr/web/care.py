"""Care scope in the UI: the break-the-glass form, the review list (admins; heads of department for their
department), the answer to an out-of-scope page, and the banner of the emergency accesses in force (on every EMR
page, and for the image viewer as JSON: ``GET /break-glass/mine``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, abort, current_app, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from emr import db
from emr.access import audit_query, break_glass
from emr.access.auth import current_actor, deny, requires
from emr.access.care import OutOfCareScope, openable_patients
from emr.access.permissions import allowed, may_review_break_glass
from emr.core.clock import local_day, local_isoformat, to_local
from emr.core.exceptions import ConflictError, EmrError, ValidationFailed
from emr.i18n import t
from emr.models import Department, Patient
from emr.models.lookup import get_or_404
from emr.web.forms import field_errors

__all__ = ["bp", "break_glass_banner", "out_of_scope"]

log = logging.getLogger(__name__)

bp = Blueprint("care", __name__)

F = TypeVar("F", bound=Callable[..., Any])


def _safe_next(value: str | None, fallback: str) -> str:
    """Only a path on this site (no scheme, no //host, no backslash tricks)."""
    value = (value or "").strip()
    if not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return fallback
    return value[:500]


def _hours() -> int:
    settings = current_app.extensions.get("emr.settings")
    return int(getattr(settings, "break_glass_hours", break_glass.DEFAULT_HOURS))


@bp.route("/patients/<int:patient_id>/break-glass", methods=["GET", "POST"])
@requires("patient.break_glass")
def break_glass_form(patient_id: int) -> Any:
    """Open a patient outside one's care: the reason is required, the access lasts a few hours."""
    s = db.session()
    patient = get_or_404(s, Patient, patient_id, "patient")
    chart = url_for("patients.chart", patient_id=patient.id)
    target = _safe_next(request.values.get("next"), chart)
    errors: dict[str, str] = {}
    reason = ""
    if request.method == "POST":
        reason = request.form.get("reason", "")[:2000]
        try:
            break_glass.open_break_glass(s, current_actor(), patient.id, reason, hours=_hours())
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(target)
    return render_template(
        "care/break_glass.html", patient=patient, reason=reason, errors=errors, next=target, hours=_hours()
    ), (422 if errors else 200)


def break_glass_banner() -> list[break_glass.ActiveGrant]:
    """For base.html: the emergency accesses the logged-in user holds now, looked up at most once a request
    and only for roles that may break the glass (the others never hold one that opens anything)."""
    if "break_glass_grants" in g:
        grants: list[break_glass.ActiveGrant] = g.break_glass_grants
        return grants
    grants = []
    user = g.get("user")
    if user is not None and allowed(user.role, "patient.break_glass"):
        try:
            grants = break_glass.active_grants(db.session(), user.id)
        except SQLAlchemyError:  # a page whose transaction failed still renders (its error page, say)
            log.exception("could not look up the emergency accesses of user %s for the banner", user.id)
    g.break_glass_grants = grants
    return grants


@bp.get("/break-glass/mine")
@requires("self")
def my_grants() -> Any:
    """The logged-in user's own emergency accesses in force, for the image viewer's banner (the EMR's pages
    show them from base.html; the viewer is a page of its own). Never anyone else's: no argument names a
    user. ``until`` is the end in facility time, as the EMR's banner shows it."""
    return jsonify(
        grants=[
            {
                "patient_id": grant.patient_id,
                "patient_name": grant.patient_name,
                "patient_code": grant.patient_code,
                "chart_url": url_for("patients.chart", patient_id=grant.patient_id),
                "expires_at": local_isoformat(grant.expires_at),
                "until": to_local(grant.expires_at).strftime("%d/%m/%Y %H:%M"),
            }
            for grant in break_glass_banner()
        ]
    )  # not cached: the app answers every page with Cache-Control: no-store


def _reviewer(fn: F) -> F:
    """Log in first; then an admin, or the head of a department (whose list and marks the service scopes)."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        if not may_review_break_glass(g.user):
            deny("break_glass.review")
            abort(403)
        return fn(*args, **kwargs)

    return cast(F, requires("self")(inner))


def _review_page(errors: dict[int, str] | None = None, notes: dict[int, str] | None = None, status: int = 200) -> Any:
    s = db.session()
    pending_only = request.args.get("show") == "pending"
    actor = current_actor()
    rows = break_glass.recent_break_glass(s, actor, pending_only=pending_only)
    scope = break_glass.review_scope(s, actor)
    done = request.args.get("done", "")
    return render_template(
        "care/review.html",
        rows=rows,
        # A head reviews accesses to patients outside their own care: a name links to the chart only when the
        # reviewer may open it (checked without auditing a refusal per line; the chart still checks and audits).
        openable=openable_patients(s, actor, {r.patient.id for r in rows}),
        department=s.get(Department, scope.department_id) if scope and scope.department_id is not None else None,
        pending=break_glass.pending_count(s, scope),
        pending_only=pending_only,
        errors=errors or {},
        notes=notes or {},
        done=int(done) if done.isdigit() and len(done) < 12 else None,
        max_note=break_glass.MAX_NOTE,
        action_label=audit_query.action_label,
        local_day=local_day,
    ), status


@bp.get("/admin/break-glass")
@_reviewer
def review() -> Any:
    """Admins: every emergency access; the head of a department: those of their department's users."""
    return _review_page()


@bp.post("/admin/break-glass/<int:grant_id>/review")
@_reviewer
def mark_reviewed(grant_id: int) -> Any:
    """Mark one emergency access reviewed (who and when are the reviewer and now; the note is optional).
    Whether this reviewer may mark this access (a head: their department's only) is the service's check."""
    s = db.session()
    note = request.form.get("note", "")[:4000]
    try:
        break_glass.mark_reviewed(s, current_actor(), grant_id, note)
    except (ValidationFailed, ConflictError) as exc:
        s.rollback()
        message = field_errors(exc).get("note") or t(exc.key)
        return _review_page({grant_id: message}, {grant_id: note}, exc.http_status)
    show = "pending" if request.args.get("show") == "pending" else None
    return redirect(url_for("care.review", done=grant_id, show=show, _anchor=f"bg-{grant_id}"))


def out_of_scope(exc: OutOfCareScope) -> Any:
    """The HTML answer to a page of a patient outside the user's care: a link to break the glass."""
    db.session().rollback()
    user = g.get("user")
    may_break = user is not None and allowed(user.role, "patient.break_glass")
    form = url_for("care.break_glass_form", patient_id=exc.patient_id, next=request.full_path.rstrip("?"))
    # Opening a visit in one's own department is how care begins (emr.patients.encounters.create_encounter).
    may_open = user is not None and allowed(user.role, "encounter.write")
    visit = url_for("patients.new_encounter", patient_id=exc.patient_id) if may_open else None
    return render_template("care/out_of_scope.html", form_url=form if may_break else None, visit_url=visit), 403
