"""Login, logout and the home page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from emr.access.auth import login_user, logout_user, requires
from emr.access.permissions import allowed
from emr.access.users import authenticate
from emr.core.exceptions import AuthenticationFailed

from .. import db
from ..i18n import t

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("auth.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()[:64]
        password = request.form.get("password", "")[:1024]
        try:
            settings = current_app.extensions["emr.settings"]
            user = authenticate(
                db.session(),
                username,
                password,
                request.remote_addr,
                max_failures=settings.lockout_failures,
                lockout=timedelta(minutes=settings.lockout_minutes),
            )
        except AuthenticationFailed as exc:
            error = t(exc.key)
        else:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def logout() -> Any:
    logout_user()
    return redirect(url_for("auth.login"))


@bp.get("/")
@requires("self")
def home() -> Any:
    if allowed(g.user.role, "patient.read"):
        return redirect(url_for("patients.search"))
    if allowed(g.user.role, "audit.read"):
        return redirect(url_for("admin.audit_page"))
    return render_template("error.html", message=t("errors.forbidden")), 403
