"""Login, logout and the home page."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from emr.access.auth import login_user, logout_user, requires
from emr.access.login_guard import HashingBusy, LoginGuard
from emr.access.permissions import allowed, headed_department
from emr.access.users import authenticate
from emr.core.exceptions import AuthenticationFailed
from emr.web.safe_redirect import local_path

from .. import db
from ..i18n import t

bp = Blueprint("auth", __name__)


def role_label(user: Any) -> str:
    """What the top bar says the user is: their role's name, or "Trưởng khoa" for the head of a department
    (a physician or radiologist with the department-head flag and a department; the role stays theirs)."""
    if headed_department(user) is not None:
        return t("roles.department_head")
    return t(f"roles.{user.role}")


def _safe_next(target: str | None) -> str:
    return local_path(target) or url_for("auth.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Password login. Throttled per source before anything is hashed (see :mod:`emr.login_guard`)."""
    if request.method != "POST":
        return render_template("login.html", error=None)
    guard: LoginGuard = current_app.extensions["emr.login_guard"]
    wait = guard.admit(request.remote_addr)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        page = render_template("login.html", error=t("auth.error.rate_limited", seconds=seconds))
        return page, 429, {"Retry-After": str(seconds)}
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")[:1024]
    try:
        with guard.hashing():  # bounded: the rest answer "busy" at once instead of holding a server thread
            user = authenticate(db.session(), username, password, request.remote_addr, guard=guard)
    except AuthenticationFailed as exc:
        return render_template("login.html", error=t(exc.key)), 401
    except HashingBusy:
        db.session().rollback()
        return render_template("login.html", error=t("auth.error.busy")), 503, {"Retry-After": "2"}
    login_user(user)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Any:
    logout_user()
    return redirect(url_for("auth.login"))


@bp.get("/")
@requires("self")
def home() -> Any:
    if allowed(g.user.role, "report.write") and allowed(g.user.role, "reading.worklist"):
        # A radiologist's day is the studies waiting to be read, not a department's open visits
        # (the imaging department admits nobody): the reading list, unread first.
        return redirect(url_for("reading.worklist"))
    if allowed(g.user.role, "patient.read"):
        return redirect(url_for("patients.search"))
    if allowed(g.user.role, "audit.read"):  # an admin: the administration pages (the audit log is one of them)
        return redirect(url_for("admin.index"))
    return render_template("error.html", message=t("errors.forbidden")), 403
