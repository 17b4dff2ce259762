"""Users, roles, API tokens and departments."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, false, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement

from .base import Base, utcnow

__all__ = ["ROLES", "SUBSTITUTE_CAPACITIES", "User", "ApiToken", "Department", "HeadSubstitute"]

ROLES: tuple[str, ...] = ("admin", "physician", "radiologist", "technician", "nurse", "records_clerk")
# In which capacity someone other than the head gives the head of department's signature (emr.access.substitutes):
# deputy: "KT. Trưởng khoa" (a deputy head signs for the head); acting: "Q. Trưởng khoa" (given the head's authority).
SUBSTITUTE_CAPACITIES: tuple[str, ...] = ("deputy", "acting")


class trimmed(FunctionElement[str]):
    """``trim(text)``, spelt as each database prints it back (PostgreSQL: ``TRIM(BOTH FROM text)``), so that the
    expression index on it reads back equal to the model (migration tests compare the two)."""

    name = "trim"
    inherit_cache = True


@compiles(trimmed)
def _trim(element: trimmed, compiler: Any, **kw: Any) -> str:
    return f"trim({compiler.process(element.clauses, **kw)})"


@compiles(trimmed, "postgresql")
def _trim_pg(element: trimmed, compiler: Any, **kw: Any) -> str:
    return f"TRIM(BOTH FROM {compiler.process(element.clauses, **kw)})"


class Department(Base):
    """A clinical department; ``code`` is MA_KHOA in insurance exports."""

    __tablename__ = "departments"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    # Practising-certificate number (CCHN): MA_BAC_SI / NGUOI_THUC_HIEN / MA_BS_DOC_KQ.
    practising_cert_no: Mapped[str | None] = mapped_column(String(50))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    title: Mapped[str | None] = mapped_column(String(100))
    # Head of department: signs discharge summaries after the treating physician.
    is_department_head: Mapped[bool] = mapped_column(default=False, server_default=false())
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    # Bumped on password change / deactivation: invalidates existing sessions.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]


# One CCHN per person, compared trimmed and ignoring case (migration 0023; a database that already had
# duplicates keeps them out of the index, see there). emr.access.users checks first, naming the holder.
Index("uq_users_practising_cert", func.lower(trimmed(User.practising_cert_no)), unique=True)


class HeadSubstitute(Base):
    """A hospital decision naming who signs in place of a department's head, from one day to another (facility
    days, inclusive; no last day: until ended). See emr.access.substitutes (migration 0024)."""

    __tablename__ = "head_substitutes"
    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    capacity: Mapped[str] = mapped_column(String(10))  # SUBSTITUTE_CAPACITIES
    valid_from: Mapped[date]
    valid_to: Mapped[date | None]
    reference: Mapped[str | None] = mapped_column(String(200))  # the decision (số quyết định), as typed
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ApiToken(Base):
    """A machine client's token; only its SHA-256 is stored (the token is 256 random bits)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # A token stops working at this time (set at creation; password resets revoke earlier).
    expires_at: Mapped[datetime | None]
