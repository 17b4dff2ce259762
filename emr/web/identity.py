"""The identity reconciliation page (issue 15 §3): CCCD mismatches with the national population
database, side by side, and the decision on each (accept national data, keep local, escalate)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError
from emr.identity import reconcile
from emr.web.forms import field_errors

from .. import db

__all__ = ["bp"]

bp = Blueprint("identity", __name__, url_prefix="/identity")


def _page(errors: dict[int, dict[str, str]] | None = None, status: int = 200) -> Any:
    actor = current_actor()
    escalated = request.args.get("escalated") == "1"
    items = reconcile.queue(db.session(), actor, escalated_only=escalated)
    return render_template(
        "identity/queue.html",
        items=items,
        escalated=escalated,
        errors=errors or {},
        allowed=reconcile.DECISIONS_BY_ROLE.get(actor.role or "", frozenset()),
        done=request.args.get("done", ""),
    ), status


@bp.get("/")
@requires("identity.reconcile")
def queue() -> Any:
    return _page()


@bp.post("/<int:check_id>/decide")
@requires("identity.reconcile")
def decide(check_id: int) -> Any:
    """Only the decision and its reason are read from the form: the national values come from
    the stored answer of the gateway (emr.identity.reconcile.decide)."""
    s = db.session()
    try:
        reconcile.decide(
            s, current_actor(), check_id, request.form.get("decision", "")[:20], request.form.get("reason", "")[:1000]
        )
    except EmrError as exc:
        s.rollback()
        if exc.http_status in (403, 404, 409):
            raise
        return _page({check_id: field_errors(exc)}, 422)
    return redirect(url_for("identity.queue", done=check_id))
