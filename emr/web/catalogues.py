"""The catalogue pages (issue 15 §4): which versions are loaded, and a version's entries, searchable."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from emr import db
from emr.access.auth import current_actor, requires
from emr.catalogues.browse import catalogue_overview, entry_page

__all__ = ["bp"]

bp = Blueprint("catalogues", __name__, url_prefix="/admin/catalogues")


@bp.get("/")
@requires("catalog.read")
def index() -> Any:
    return render_template("catalogues/index.html", kinds=catalogue_overview(db.session(), current_actor()))


@bp.get("/<int:version_id>")
@requires("catalog.read")
def version(version_id: int) -> Any:
    raw_page = request.args.get("page", "1")
    page = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
    view = entry_page(db.session(), current_actor(), version_id, request.args.get("q", ""), max(page, 1))
    return render_template("catalogues/version.html", view=view)
