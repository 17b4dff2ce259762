"""Care scope in the UI: the break-the-glass form, the admin's review list, and the answer to an out-of-scope page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from emr import db
from emr.access import audit_query, break_glass
from emr.access.auth import current_actor, requires
from emr.access.care import OutOfCareScope
from emr.access.permissions import allowed
from emr.core.clock import local_day
from emr.core.exceptions import ConflictError, EmrError, ValidationFailed
from emr.i18n import t
from emr.models import Patient
from emr.models.lookup import get_or_404
from emr.web.forms import field_errors

__all__ = ["bp", "out_of_scope"]

bp = Blueprint("care", __name__)


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


def _review_page(errors: dict[int, str] | None = None, notes: dict[int, str] | None = None, status: int = 200) -> Any:
    s = db.session()
    pending_only = request.args.get("show") == "pending"
    rows = break_glass.recent_break_glass(s, current_actor(), pending_only=pending_only)
    done = request.args.get("done", "")
    return render_template(
        "care/review.html",
        rows=rows,
        pending=break_glass.pending_count(s),
        pending_only=pending_only,
        errors=errors or {},
        notes=notes or {},
        done=int(done) if done.isdigit() and len(done) < 12 else None,
        max_note=break_glass.MAX_NOTE,
        action_label=audit_query.action_label,
        local_day=local_day,
    ), status


@bp.get("/admin/break-glass")
@requires("break_glass.review")
def review() -> Any:
    return _review_page()


@bp.post("/admin/break-glass/<int:grant_id>/review")
@requires("break_glass.review")
def mark_reviewed(grant_id: int) -> Any:
    """Mark one emergency access reviewed (who and when are the reviewer and now; the note is optional)."""
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
