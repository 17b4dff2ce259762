"""Accounts: Argon2 passwords, lockout after repeated failures, hashed API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.exceptions import AuthenticationFailed, ConflictError, NotFoundError, ValidationFailed

from ..models import ROLES, ApiToken, User, utcnow

__all__ = [
    "create_user",
    "authenticate",
    "create_token",
    "user_for_token",
    "set_password",
    "revoke_token",
    "list_users",
    "get_user",
    "set_active",
    "list_tokens",
    "MAX_FAILURES",
    "LOCKOUT",
]

_HASHER = PasswordHasher()
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD = 10
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _HASHER.hash("filmless-timing-equaliser")


def create_user(
    session: Session,
    actor: Actor,
    username: str,
    password: str,
    role: str,
    full_name: str,
    *,
    practising_cert_no: str | None = None,
    department_id: int | None = None,
    title: str | None = None,
) -> User:
    problems = {}
    if role not in ROLES:
        problems["role"] = "users.error.role"
    if not username or len(username) > 64 or not username.replace(".", "").replace("_", "").isalnum():
        problems["username"] = "users.error.username"
    if len(password) < MIN_PASSWORD:
        problems["password"] = "users.error.password_short"
    if not full_name.strip() or len(full_name) > 200:
        problems["full_name"] = "errors.field_required"
    if problems:
        raise ValidationFailed(problems)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ConflictError(f"user {username} exists", field="username", key="users.error.exists")
    user = User(
        username=username,
        full_name=full_name,
        role=role,
        password_hash=_HASHER.hash(password),
        practising_cert_no=practising_cert_no,
        department_id=department_id,
        title=title,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor,
        "user.create",
        object_type="user",
        object_id=user.id,
        details={"username": username, "role": role},
    )
    session.commit()
    return user


def set_password(session: Session, actor: Actor, user_id: int, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed({"password": "users.error.password_short"})
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    user.password_hash = _HASHER.hash(password)
    user.session_version += 1
    user.failed_logins = 0
    user.locked_until = None
    audit.record(session, actor, "user.password", object_type="user", object_id=user.id)
    session.commit()


def authenticate(
    session: Session,
    username: str,
    password: str,
    client_ip: str | None,
    *,
    max_failures: int = MAX_FAILURES,
    lockout: timedelta = LOCKOUT,
) -> User:
    """Check a password; count failures and lock the account after MAX_FAILURES. Every attempt is audited."""
    user = session.scalar(select(User).where(User.username == username))
    now = utcnow()
    attempt = Actor(user.id if user else None, username[:64], user.role if user else None, client_ip)
    if user is None or not user.active:
        try:
            _HASHER.verify(_DUMMY_HASH, password + "x")
        except VerificationError:
            pass
        audit.record(session, attempt, "login", outcome="failure", details={"reason": "unknown_user"})
        session.commit()
        raise AuthenticationFailed("bad credentials", key="auth.error.bad_credentials")
    if user.locked_until and user.locked_until > now:
        audit.record(
            session,
            attempt,
            "login",
            outcome="failure",
            object_type="user",
            object_id=user.id,
            details={"reason": "locked"},
        )
        session.commit()
        raise AuthenticationFailed("account locked", key="auth.error.locked")
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user.failed_logins += 1
        reason = "bad_password"
        if user.failed_logins >= max_failures:
            user.locked_until = now + lockout
            user.failed_logins = 0
            reason = "locked_now"
        audit.record(
            session,
            attempt,
            "login",
            outcome="failure",
            object_type="user",
            object_id=user.id,
            details={"reason": reason},
        )
        session.commit()
        raise AuthenticationFailed("bad credentials", key="auth.error.bad_credentials") from None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(session, attempt, "login", object_type="user", object_id=user.id)
    session.commit()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, actor: Actor, user_id: int, name: str) -> str:
    """Create an API token for a user; the clear token is returned once and never stored."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    if not name.strip():
        raise ValidationFailed({"name": "errors.field_required"})
    token = "fl_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name[:100], token_hash=_digest(token), prefix=token[:10]))
    audit.record(session, actor, "token.create", object_type="user", object_id=user.id, details={"name": name})
    session.commit()
    return token


def revoke_token(session: Session, actor: Actor, token_id: int, user_id: int | None = None) -> None:
    """Revoke a token (idempotent); with ``user_id`` the token must belong to that user."""
    tok = session.get(ApiToken, token_id)
    if tok is None or (user_id is not None and tok.user_id != user_id):
        raise NotFoundError("token", token_id)
    if tok.revoked_at is not None:
        return
    tok.revoked_at = utcnow()
    audit.record(session, actor, "token.revoke", object_type="token", object_id=tok.id)
    session.commit()


def user_for_token(session: Session, token: str) -> User | None:
    if not token.startswith("fl_") or len(token) > 100:
        return None
    tok = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None)))
    if tok is None:
        return None
    user = session.get(User, tok.user_id)
    if user is None or not user.active:
        return None
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    return user


def set_active(session: Session, actor: Actor, user_id: int, active: bool) -> User:
    """Lock (deactivate) or unlock an account. Locking ends its sessions; unlocking clears a lockout too."""
    user = get_user(session, user_id)
    if not active and actor.user_id == user.id:
        raise ValidationFailed({"active": "users.error.lock_self"})
    user.active = active
    if active:
        user.failed_logins = 0
        user.locked_until = None
    else:
        user.session_version += 1
    audit.record(session, actor, "user.unlock" if active else "user.lock", object_type="user", object_id=user.id)
    session.commit()
    return user


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())))
