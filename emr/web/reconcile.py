"""The reconciliation queue: studies that matched no order, each with suggested orders to link."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError, ValidationFailed
from emr.imaging import linking, orders, reconcile
from emr.web.forms import field_errors

from .. import db
from ..i18n import t

bp = Blueprint("reconcile", __name__, url_prefix="/reconcile")


@bp.get("/")
@requires("study.read")
def queue() -> Any:
    return render_template("reconcile/queue.html", items=reconcile.reconciliation_queue(db.session()))


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
                s, current_actor(), study_id, order_id, reason, store=current_app.extensions["emr.store"]
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
        errors=errors,
        values={"reason": reason, "order": raw},
    ), (422 if errors else 200)
