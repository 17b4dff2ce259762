"""Admin screens for accounts: create with a role, lock/unlock, reset a password, API tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import select

from emr.access import users
from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError, NotFoundError
from emr.web.forms import field_errors

from .. import db
from ..i18n import t
from ..models import ROLES, Department

bp = Blueprint("users", __name__, url_prefix="/admin/users")


def _departments() -> list[tuple[str, str]]:
    return [(str(d.id), d.name) for d in db.session().scalars(select(Department).order_by(Department.name))]


@bp.route("/", methods=["GET", "POST"])
@requires("user.manage")
def index() -> Any:
    s = db.session()
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    if request.method == "POST":
        values = {k: v.strip() for k, v in request.form.items() if k not in ("csrf_token", "password")}
        dep = values.get("department_id", "")
        try:
            user = users.create_user(
                s,
                current_actor(),
                values.get("username", "")[:64],
                request.form.get("password", "")[:1024],
                values.get("role", ""),
                values.get("full_name", "")[:300],
                practising_cert_no=values.get("practising_cert_no", "")[:50] or None,
                department_id=int(dep) if dep.isdigit() and int(dep) < 2**31 else None,
                title=values.get("title", "")[:100] or None,
            )
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(url_for("users.detail", user_id=user.id))
    return render_template(
        "users/index.html",
        users=users.list_users(s),
        role_choices=[(r, t(f"roles.{r}")) for r in ROLES],
        departments=_departments(),
        errors=errors,
        values=values,
    ), (422 if errors else 200)


def _detail(
    user_id: int,
    *,
    new_token: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Any:
    s = db.session()
    user = users.get_user(s, user_id)
    return render_template(
        "users/detail.html",
        user=user,
        tokens=users.list_tokens(s, user.id),
        new_token=new_token,
        errors=errors or {},
        values=values or {},
    ), status


@bp.get("/<int:user_id>")
@requires("user.manage")
def detail(user_id: int) -> Any:
    return _detail(user_id)


@bp.post("/<int:user_id>/active")
@requires("user.manage")
def set_active(user_id: int) -> Any:
    try:
        users.set_active(db.session(), current_actor(), user_id, request.form.get("active") == "1")
    except EmrError as exc:
        db.session().rollback()
        if isinstance(exc, NotFoundError):
            raise
        return _detail(user_id, errors={"active": next(iter(field_errors(exc).values()))}, status=422)
    return redirect(url_for("users.detail", user_id=user_id))


@bp.post("/<int:user_id>/password")
@requires("user.manage")
def reset_password(user_id: int) -> Any:
    try:
        users.set_password(db.session(), current_actor(), user_id, request.form.get("password", "")[:1024])
    except EmrError as exc:
        db.session().rollback()
        if isinstance(exc, NotFoundError):
            raise
        return _detail(user_id, errors=field_errors(exc), status=422)
    return redirect(url_for("users.detail", user_id=user_id, done="password"))


@bp.post("/<int:user_id>/tokens")
@requires("user.manage")
def create_token(user_id: int) -> Any:
    name = request.form.get("name", "").strip()[:100]
    try:
        token = users.create_token(db.session(), current_actor(), user_id, name)
    except EmrError as exc:
        db.session().rollback()
        if isinstance(exc, NotFoundError):
            raise
        return _detail(user_id, errors=field_errors(exc), values={"name": name}, status=422)
    # Rendered, not redirected: the clear token exists only in this response (no-store).
    return _detail(user_id, new_token=token)


@bp.post("/<int:user_id>/tokens/<int:token_id>/revoke")
@requires("user.manage")
def revoke_token(user_id: int, token_id: int) -> Any:
    users.revoke_token(db.session(), current_actor(), token_id, user_id=user_id)
    return redirect(url_for("users.detail", user_id=user_id))
