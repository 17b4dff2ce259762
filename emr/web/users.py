"""Admin screens for accounts: create with a role, lock/unlock, reset a password, API tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from emr.access import users
from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError, NotFoundError
from emr.web.forms import field_errors

from .. import db
from ..i18n import t
from ..models import ROLES, Department

bp = Blueprint("users", __name__, url_prefix="/admin/users")
PROFILE_FIELDS = ("full_name", "role", "department_id", "title", "practising_cert_no")


def _departments() -> list[tuple[str, str]]:
    return [(str(d.id), d.name) for d in db.session().scalars(select(Department).order_by(Department.name))]


def _department_id(raw: str) -> int | None:
    """The chosen department's id; None for none chosen, 0 (no such department) for anything else."""
    if not raw:
        return None
    return int(raw) if raw.isdigit() and int(raw) < 2**31 else 0


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
                department_id=_department_id(dep),
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
    departments = _departments()
    profile = {
        "full_name": user.full_name,
        "role": user.role,
        "department_id": str(user.department_id or ""),
        "title": user.title or "",
        "practising_cert_no": user.practising_cert_no or "",
    }
    return render_template(
        "users/detail.html",
        user=user,
        tokens=users.list_tokens(s, user.id),
        new_token=new_token,
        errors=errors or {},
        values=values or {},
        profile=profile | (values or {}),
        profile_failed=bool(errors and errors.keys() & set(PROFILE_FIELDS)),
        department_name=dict(departments).get(str(user.department_id)),
        role_choices=[(r, t(f"roles.{r}")) for r in ROLES],
        departments=departments,
    ), status


@bp.get("/<int:user_id>")
@requires("user.manage")
def detail(user_id: int) -> Any:
    return _detail(user_id)


@bp.post("/<int:user_id>/active")
@requires("user.manage")
def set_active(user_id: int) -> Any:
    try:
        user = users.set_active(db.session(), current_actor(), user_id, request.form.get("active") == "1")
        if user.active:  # unlocking also ends every source's login back-off on the account
            current_app.extensions["emr.login_guard"].forget_account(user.username)
    except EmrError as exc:
        db.session().rollback()
        if isinstance(exc, NotFoundError):
            raise
        return _detail(user_id, errors={"active": next(iter(field_errors(exc).values()))}, status=422)
    return redirect(url_for("users.detail", user_id=user_id))


@bp.post("/<int:user_id>/profile")
@requires("user.manage")
def update_profile(user_id: int) -> Any:
    values = {k: request.form.get(k, "").strip()[:300] for k in PROFILE_FIELDS}
    try:
        changed = users.update_profile(
            db.session(),
            current_actor(),
            user_id,
            full_name=values["full_name"],
            role=values["role"],
            department_id=_department_id(values["department_id"]),
            title=values["title"] or None,
            practising_cert_no=values["practising_cert_no"] or None,
        )
    except EmrError as exc:
        db.session().rollback()
        if isinstance(exc, NotFoundError):
            raise
        return _detail(user_id, errors=field_errors(exc), values=values, status=422)
    done = "role" if "role" in changed else "profile" if changed else "unchanged"
    return redirect(url_for("users.detail", user_id=user_id, done=done))


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
