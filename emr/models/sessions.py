"""Server-side login sessions: the cookie names a row here, so the server can end it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["UserSession"]


class UserSession(Base):
    """One browser login. Only the SHA-256 of the random session id is stored (the cookie holds the id).

    Logout ends the row; a password change or deactivation ends every row of
    the user; a row past ``expires_at`` is dead. A cookie captured earlier is
    worthless once its row has ended.
    """

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(20))  # logout | password | deactivated
    client_ip: Mapped[str | None] = mapped_column(String(45))
