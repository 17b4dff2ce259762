"""Server-side login sessions: started at login, checked on every request, ended by the server.

The browser's signed cookie carries a random session id; the database keeps
only its SHA-256. Because validity lives here and not in the cookie, a
cookie captured before logout, a password change or a deactivation stops
working at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emr.models import UserSession, utcnow

__all__ = ["SESSION_LIFETIME", "start_session", "live_session", "end_session", "end_user_sessions"]

SESSION_LIFETIME = timedelta(hours=8)
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often (not on every request)


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def start_session(session: Session, user_id: int, client_ip: str | None, lifetime: timedelta = SESSION_LIFETIME) -> str:
    """A new session row; returns the clear session id for the cookie (never stored)."""
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        UserSession(
            user_id=user_id,
            sid_hash=_digest(sid),
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            client_ip=(client_ip or "")[:45] or None,
        )
    )
    session.commit()
    return sid


def live_session(session: Session, sid: object, user_id: object) -> UserSession | None:
    """The live row for this cookie's session id and user, or None (ended, expired, forged)."""
    if not isinstance(sid, str) or not isinstance(user_id, int) or len(sid) > 100:
        return None
    row = session.scalar(select(UserSession).where(UserSession.sid_hash == _digest(sid)))
    now = utcnow()
    if row is None or row.user_id != user_id or row.ended_at is not None or row.expires_at <= now:
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now
        session.commit()
    return row


def end_session(session: Session, sid: object, reason: str = "logout") -> None:
    if not isinstance(sid, str) or len(sid) > 100:
        return
    session.execute(
        update(UserSession)
        .where(UserSession.sid_hash == _digest(sid), UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
    )
    session.commit()


def end_user_sessions(session: Session, user_id: int, reason: str) -> int:
    """End every live session of a user (no commit: part of the caller's change). Returns how many."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
