"""Accounts: Argon2 passwords (throttled by :mod:`emr.login_guard`), hashed API tokens with an expiry."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.login_guard import LoginGuard
from emr.access.sessions import end_user_sessions
from emr.core.exceptions import AuthenticationFailed, ConflictError, NotFoundError, ValidationFailed
from emr.models import ROLES, ApiToken, Department, DocumentVersion, User, utcnow
from emr.models.signing import DocumentSignature

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
    "update_profile",
    "list_tokens",
    "cert_holder",
]

# Argon2id with argon2-cffi's time and memory cost but one lane: a verification then occupies one core
# (four lanes run on four threads and take every core of a small server from the chart pages while
# logins are checked). Hashes with other parameters still verify and are re-hashed at the next login.
_HASHER = PasswordHasher(parallelism=1)
_T = TypeVar("_T")
MIN_PASSWORD = 10
_USERNAME = re.compile(r"[a-z0-9._]+")
TOKEN_DAYS = 90  # default lifetime of an API token
MAX_TOKEN_DAYS = 366
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _HASHER.hash("filmless-timing-equaliser")


def _cert_key(cert: Any) -> Any:
    """A certificate number as the unique index ``uq_users_practising_cert`` compares it (migration 0023)."""
    return func.lower(func.trim(cert))


def cert_holder(session: Session, cert: str | None, *, other_than: int | None = None) -> User | None:
    """The account (other than ``other_than``) whose practising-certificate number is ``cert``, compared
    trimmed and ignoring case, as the database's unique index does; None for no number or no holder."""
    if cert is None or not cert.strip():
        return None
    stmt = select(User).where(_cert_key(User.practising_cert_no) == _cert_key(cert.strip()))
    if other_than is not None:
        stmt = stmt.where(User.id != other_than)
    return session.scalars(stmt.order_by(User.id).limit(1)).first()


def _refuse_cert_held(session: Session, cert: str | None, user_id: int | None) -> None:
    """One CCHN, one person: signatures and insurance exports name the signer by it (MA_BAC_SI)."""
    holder = cert_holder(session, cert, other_than=user_id)
    if holder is not None:
        params: dict[str, object] = {"cert": cert, "username": holder.username, "full_name": holder.full_name}
        raise ValidationFailed({"practising_cert_no": "users.error.cert_taken"}, params={"practising_cert_no": params})


def _flush_unique_cert(session: Session, cert: str | None, user_id: int | None) -> None:
    """Flush; when another request gave the same number to someone meanwhile, the unique index refuses it:
    that is the same refusal as the check before, naming the holder."""
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        _refuse_cert_held(session, cert, user_id)
        raise


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
    # Plain lower-case ASCII: 'BACSI' beside 'bacsi', or 'Bác_sĩ' typed in another Unicode form, would be
    # two accounts that read the same in the audit log, or one that cannot log in.
    username = username.strip().lower()
    if not username or len(username) > 64 or not _USERNAME.fullmatch(username):
        problems["username"] = "users.error.username"
    if len(password) < MIN_PASSWORD:
        problems["password"] = "users.error.password_short"
    if not full_name.strip() or len(full_name) > 200:
        problems["full_name"] = "errors.field_required"
    if department_id is not None and session.get(Department, department_id) is None:
        problems["department_id"] = "users.error.department"
    cert = (practising_cert_no or "").strip() or None
    if cert is not None and len(cert) > _PROFILE_LIMITS["practising_cert_no"]:
        problems["practising_cert_no"] = "errors.field_too_long_max"
    if problems:
        raise ValidationFailed(problems, params={name: {"max": n} for name, n in _PROFILE_LIMITS.items()})
    if session.scalar(select(User.id).where(func.lower(User.username) == username)) is not None:
        raise ConflictError(f"user {username} exists", field="username", key="users.error.exists")
    _refuse_cert_held(session, cert, None)
    user = User(
        username=username,
        full_name=full_name,
        role=role,
        password_hash=_HASHER.hash(password),
        practising_cert_no=cert,
        department_id=department_id,
        title=title,
    )
    session.add(user)
    _flush_unique_cert(session, cert, None)
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
    ended = end_user_sessions(session, user.id, "password")
    revoked = _revoke_all_tokens(session, user.id)
    audit.record(
        session,
        actor,
        "user.password",
        object_type="user",
        object_id=user.id,
        details={"sessions_ended": ended, "tokens_revoked": revoked},
    )
    session.commit()


def _revoke_all_tokens(session: Session, user_id: int) -> int:
    """A password reset also ends machine access: every live token of the user is revoked."""
    now = utcnow()
    live = list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))))
    for tok in live:
        tok.revoked_at = now
    return len(live)


def _run_here(fn: Callable[..., _T], *args: Any) -> _T:
    return fn(*args)


def _check_password(stored: str | None, password: str) -> tuple[bool, str | None]:
    """Argon2 work of a login: (password right?, new hash when the stored one has old parameters).

    Without a stored hash (unknown or deactivated account) a dummy hash is
    verified, so both cost the same time.
    """
    if stored is None:
        try:
            _HASHER.verify(_DUMMY_HASH, password + "x")
        except VerificationError:
            pass
        return False, None
    try:
        ok = _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, None
    return ok, _HASHER.hash(password) if ok and _HASHER.check_needs_rehash(stored) else None


def _canonical(username: str) -> str:
    return unicodedata.normalize("NFC", username.strip()).lower()


def _by_username(session: Session, username: str) -> User | None:
    """The account a login names: exactly, else the one account equal to it ignoring case.

    New usernames are stored in lower case; accounts created before that
    rule keep their spelling, and 'BacSi' still finds 'bacsi' unless two
    accounts differ only by case (then only the exact spelling logs in).
    """
    user = session.scalar(select(User).where(User.username == unicodedata.normalize("NFC", username.strip())))
    if user is not None:
        return user
    alike = session.scalars(select(User).where(func.lower(User.username) == _canonical(username)).limit(2)).all()
    return alike[0] if len(alike) == 1 else None


def authenticate(
    session: Session,
    username: str,
    password: str,
    client_ip: str | None,
    *,
    guard: LoginGuard | None = None,
) -> User:
    """Check a password; every attempt is audited and every refusal raises the same generic error.

    There is no account lock that failures alone set (an outsider could lock
    anyone out with it): ``guard`` makes the failing *source* wait instead,
    per account and as a whole (the caller also holds one of the guard's
    login slots, which bound how many checks run at once). Unknown,
    deactivated, wrong password and backing off all answer with
    ``auth.error.failed``; the audit row says which it was.
    """
    user = _by_username(session, username)
    # The guard counts per account: every spelling that reaches one account (case, spaces) is one key.
    account = user.username if user is not None else _canonical(username)
    now = utcnow()
    attempt = Actor(user.id if user else None, username[:64], user.role if user else None, client_ip)
    target: dict[str, object] = {"object_type": "user", "object_id": user.id} if user else {}

    def refuse(reason: str) -> AuthenticationFailed:
        audit.record(session, attempt, "login", outcome="failure", details={"reason": reason}, **target)  # type: ignore[arg-type]
        session.commit()
        return AuthenticationFailed(f"login refused ({reason})", key="auth.error.failed")

    wait = guard.backoff(account, client_ip) if guard is not None else 0.0
    if wait > 0:
        guard.failed(account, client_ip)  # type: ignore[union-attr]  # persisting lengthens the wait
        raise refuse("backoff")  # nothing hashed: the source is waiting out its back-off
    user_id = user.id if user is not None else None
    stored = user.password_hash if user is not None and user.active else None
    session.rollback()  # no transaction (on SQLite: no write lock) while Argon2 runs for a second
    run = guard.run if guard is not None else _run_here
    ok, rehashed = run(_check_password, stored, password)
    # Re-read for the writes below (the row may have changed meanwhile).
    user = session.get(User, user_id) if user_id is not None else None
    if not ok or user is None or not user.active:
        if guard is not None:
            guard.failed(account, client_ip)
        if user is not None and user.active:
            user.failed_logins += 1
        raise refuse("unknown_user" if user is None else "inactive" if not user.active else "bad_password")
    if user.password_hash != stored:  # the password was changed while this attempt was checked
        raise refuse("password_changed")
    if guard is not None:
        guard.succeeded(account, client_ip)
    if rehashed is not None:
        user.password_hash = rehashed
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(session, attempt, "login", object_type="user", object_id=user.id)
    session.commit()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, actor: Actor, user_id: int, name: str, *, days: int = TOKEN_DAYS
) -> str:
    """Create an API token for a user, valid ``days`` days; the clear token is returned once and never stored."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    if not name.strip():
        raise ValidationFailed({"name": "errors.field_required"})
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise ValidationFailed({"days": "users.error.token_days"})
    token = "fl_" + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=days)
    session.add(
        ApiToken(user_id=user.id, name=name[:100], token_hash=_digest(token), prefix=token[:10], expires_at=expires)
    )
    audit.record(
        session,
        actor,
        "token.create",
        object_type="user",
        object_id=user.id,
        details={"name": name, "expires_at": expires.isoformat(timespec="seconds")},
    )
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
    if tok is None or tok.expires_at is None or tok.expires_at <= utcnow():
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
        end_user_sessions(session, user.id, "deactivated")
    audit.record(session, actor, "user.unlock" if active else "user.lock", object_type="user", object_id=user.id)
    session.commit()
    return user


# The column widths of the free-text profile fields (emr.models.users): longer is refused, never cut.
_PROFILE_LIMITS = {name: int(getattr(User, name).type.length) for name in ("title", "practising_cert_no")}


def _has_signed(session: Session, user_id: int) -> bool:
    signed = select(DocumentVersion.id).where(DocumentVersion.signed_by == user_id).limit(1)
    if session.scalar(signed) is not None:
        return True
    signature = select(DocumentSignature.id).where(DocumentSignature.signer_id == user_id).limit(1)
    return session.scalar(signature) is not None


def update_profile(
    session: Session,
    actor: Actor,
    user_id: int,
    *,
    full_name: str,
    role: str,
    department_id: int | None,
    title: str | None,
    practising_cert_no: str | None,
) -> dict[str, list[Any]]:
    """Change what an admin set at creation: name, role, department, job title, practising certificate.

    Staff move between departments and change roles; without this an admin
    had to create a second account, splitting one person's audit trail. The
    username stays (it names the person in every audit row). Rules:

    - an admin cannot change their own role (so the last admin cannot
      demote themselves and leave nobody to manage accounts);
    - a role change ends the account's sessions and revokes its API tokens:
      what the person may do changes at once, not at their next login;
    - moving to another department drops the department-head flag (it
      named the head of the old one);
    - a certificate number already used in signatures is kept: signed
      records and claims exported later name the signer by it.

    Returns the changed fields as ``{field: [before, after]}`` (empty: nothing
    changed, nothing written or audited).
    """
    user = get_user(session, user_id)
    full_name = full_name.strip()
    title = (title or "").strip() or None
    cert = (practising_cert_no or "").strip() or None
    problems: dict[str, str] = {}
    if not full_name or len(full_name) > 200:
        problems["full_name"] = "errors.field_required"
    if role not in ROLES:
        problems["role"] = "users.error.role"
    elif role != user.role and actor.user_id == user.id:
        problems["role"] = "users.error.role_self"
    for name, text in (("title", title), ("practising_cert_no", cert)):
        if text is not None and len(text) > _PROFILE_LIMITS[name]:
            problems[name] = "errors.field_too_long_max"
    if department_id is not None and session.get(Department, department_id) is None:
        problems["department_id"] = "users.error.department"
    if not problems and user.practising_cert_no and cert != user.practising_cert_no and _has_signed(session, user.id):
        problems["practising_cert_no"] = "users.error.cert_signed"
    if problems:
        raise ValidationFailed(problems, params={name: {"max": n} for name, n in _PROFILE_LIMITS.items()})
    if cert is not None and cert.lower() != (user.practising_cert_no or "").strip().lower():
        # Only a changed number is checked: an account that shares one from before migration 0023 can still
        # have its department or role changed (and its number corrected).
        _refuse_cert_held(session, cert, user.id)
    after = {
        "full_name": full_name,
        "role": role,
        "department_id": department_id,
        "title": title,
        "practising_cert_no": cert,
    }
    changed = {k: [getattr(user, k), v] for k, v in after.items() if getattr(user, k) != v}
    if not changed:
        return changed
    for key, value in after.items():
        setattr(user, key, value)
    _flush_unique_cert(session, cert, user.id)
    if "department_id" in changed and user.is_department_head:
        user.is_department_head = False
        changed["is_department_head"] = [True, False]
    details: dict[str, Any] = {"changed": changed}
    if "role" in changed:
        user.session_version += 1
        details["sessions_ended"] = end_user_sessions(session, user.id, "role")
        details["tokens_revoked"] = _revoke_all_tokens(session, user.id)
    audit.record(session, actor, "user.update", object_type="user", object_id=user.id, details=details)
    session.commit()
    return changed


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())))
