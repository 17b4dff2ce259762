"""Admin pages: the audit log viewer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from emr.access.audit_query import search_audit
from emr.access.auth import current_actor, requires

from .. import db

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/audit")
@requires("audit.read")
def audit_page() -> Any:
    args = {k: request.args.get(k, "").strip()[:64] for k in ("patient", "user", "date_from", "date_to")}
    rows = search_audit(
        db.session(),
        current_actor(),
        patient=args["patient"],
        user=args["user"],
        date_from=args["date_from"],
        date_to=args["date_to"],
    )
    return render_template("audit.html", rows=rows, args=args)
