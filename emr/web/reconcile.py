"""The reconciliation queue: studies that matched no order, each with suggested orders to link."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError, ValidationFailed
from emr.core.states import StudyState
from emr.imaging import linking, orders, reconcile
from emr.web.forms import field_errors

from .. import db
from ..i18n import t

bp = Blueprint("reconcile", __name__, url_prefix="/reconcile")


@bp.get("/")
@requires("study.read")
def queue() -> Any:
    page_arg = request.args.get("page", "1")
    query = request.args.get("q", "")[:64]
    page = reconcile.queue_page(
        db.session(), query=query, page=int(page_arg) if page_arg.isdigit() and len(page_arg) < 6 else 1
    )
    return render_template(
        "reconcile/queue.html",
        items=page.items,
        page=page,
        query=query,
        bulk=request.args.get("bulk_linked", ""),
        bulk_skipped=request.args.get("bulk_skipped", ""),
    )


@bp.post("/bulk")
@requires("study.reconcile")
def bulk_link() -> Any:
    """Link each ticked study to its one clear suggestion; the others stay for a person to look at."""
    s = db.session()
    linked = skipped = 0
    ids = [int(v) for v in request.form.getlist("study")[:100] if v.isdigit() and len(v) < 10]
    for study_id in ids:
        study = reconcile.get_unmatched(s, study_id)
        best = reconcile.best_candidate(s, study) if study.state == StudyState.UNMATCHED else None
        if best is None:
            skipped += 1
            continue
        try:
            linking.link_study_manually(
                s,
                current_actor(),
                study_id,
                best.order.id,
                t("reconcile.bulk.reason"),
                store=current_app.extensions["emr.store"],
            )
        except EmrError:
            s.rollback()
            skipped += 1
        else:
            linked += 1
    return redirect(
        url_for("reconcile.queue", q=request.form.get("q", "")[:64] or None, bulk_linked=linked, bulk_skipped=skipped)
    )


@bp.route("/<int:study_id>", methods=["GET", "POST"])
@requires("study.reconcile")
def link(study_id: int) -> Any:
    """GET: confirm linking ``study`` to ``?order_id=`` (one click from the queue). POST: link it (audited)."""
    s = db.session()
    study = reconcile.get_unmatched(s, study_id)
    raw = request.values.get("order", "")[:32]
    found = reconcile.resolve_order(s, raw)
    order_id = found.id if found else 0
    errors: dict[str, str] = {}
    reason = request.form.get("reason", "")[:1000]
    if request.method == "POST":
        try:
            if found is None:
                raise ValidationFailed({"order": "reconcile.error.order_unknown"})
            linking.link_study_manually(
                s,
                current_actor(),
                study_id,
                order_id,
                reason,
                store=current_app.extensions["emr.store"],
                acknowledge_mismatch=request.form.get("acknowledge_mismatch") == "1",
            )
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(url_for("reconcile.queue", linked=study_id))
    if raw and found is None and not errors:
        errors = {"order": t("reconcile.error.order_unknown")}
    order = orders.get_order(s, current_actor(), order_id) if order_id else None
    candidate = next(
        (c for c in reconcile.candidates_for(s, study, limit=20) if order and c.order.id == order.id), None
    )
    return render_template(
        "reconcile/confirm.html",
        study=study,
        order=order,
        patient=candidate.patient if candidate else (order and reconcile.order_patient(s, order)),
        reasons=candidate.reasons if candidate else [],
        mismatches=reconcile.link_mismatches(study, order) if order and study.state != StudyState.LINKED else [],
        errors=errors,
        values={"reason": reason, "order": raw},
    ), (422 if errors else 200)
