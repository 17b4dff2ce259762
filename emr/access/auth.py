"""Authentication at the edge: session login for the UI, bearer tokens for the API.

Authorisation is looked up in :mod:`emr.access.permissions`; the decorators here
only apply it and audit every refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, g, redirect, request, session, url_for

from emr import db
from emr.access import audit, sessions
from emr.access.audit import Actor
from emr.access.permissions import PERMISSIONS, allowed
from emr.access.users import user_for_token
from emr.models import User

__all__ = ["bearer_token", "bearer_user", "current_actor", "deny", "load_session_user", "login_user", "logout_user",
           "requires"]

F = TypeVar("F", bound=Callable[..., Any])


def current_actor() -> Actor:
    user: User | None = g.get("user")
    ip = request.remote_addr
    if user is None:
        return Actor(None, None, None, ip)
    return Actor(user.id, user.username, user.role, ip)


def load_session_user() -> None:
    """The user of this request's session: the cookie must name a live server-side session."""
    g.user = None
    uid = session.get("uid")
    if uid is None:
        return
    s = db.session()
    user = s.get(User, uid) if isinstance(uid, int) else None
    if (
        user is None
        or not user.active
        or session.get("sv") != user.session_version
        or sessions.live_session(s, session.get("sid"), uid) is None
    ):
        session.clear()
        return
    g.user = user


def login_user(user: User) -> None:
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["sv"] = user.session_version
    session["sid"] = sessions.start_session(db.session(), user.id, request.remote_addr)


def logout_user() -> None:
    """End the session on the server (a copy of the cookie is worthless afterwards), then forget it here."""
    if session.get("uid") is not None:
        sessions.end_session(db.session(), session.get("sid"), "logout")
    session.clear()


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer_user() -> User | None:
    """The active user whose API token the request carries, or None (missing, unknown or revoked)."""
    token = bearer_token()
    return user_for_token(db.session(), token) if token is not None else None


def deny(action: str) -> None:
    """Audit a refused action (own transaction) before answering 403: the one place refusals are recorded."""
    s = db.session()
    s.rollback()
    audit.record(
        s,
        current_actor(),
        action,
        outcome="denied",
        object_type="route",
        object_id=request.path[:64],  # the column's width; the whole path (a fingerprint, say) is in details
        details={"method": request.method, "path": request.path[:1024]},
    )
    s.commit()


def requires(action: str) -> Callable[[F], F]:
    """UI views: log in first (redirect), then the role must hold ``action`` (403)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            user = g.get("user")
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
            if not allowed(user.role, action):
                deny(action)
                abort(403)
            return fn(*args, **kwargs)

        inner.required_action = action  # type: ignore[attr-defined]
        return cast(F, inner)

    return wrap
