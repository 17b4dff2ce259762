"""Who gives the head of department's signature when the head cannot: a deputy or an acting head, for a period.

A discharge paper (giấy ra viện) is signed by the treating physician and then by the head of the visit's
department (emr.signing.service). A department whose head post is empty, or whose head is on leave, would
leave every paper unsigned for good. Hospitals solve it by a decision naming who signs in the head's place,
with the capacity printed before the head's title (Decree 30/2020/NĐ-CP on clerical work, Art. 13 and
Annex I, the signature block):

* ``deputy`` — "KT. Trưởng khoa" (ký thay): a deputy head signs for the head, over their own title
  "Phó trưởng khoa". A deputy put in charge of a department without a head signs the same way
  ("cấp phó được giao phụ trách ... ký như cấp phó ký thay cấp trưởng").
* ``acting`` — "Q. Trưởng khoa" (quyền): a person given the head's authority while the post is empty
  (a physician of the department, or the director or a deputy director named for it).

An admin records the decision on the person's signing page (department, capacity, first and last day in
facility time, the decision's reference): it is in force from its first day through its last (no last day:
until ended), an admin can end it early, and both are audited (``user.head_substitute``,
``user.head_substitute_end``). Only an active physician is named, as only a physician signs the head's slot.
The head's own signature has capacity ``head``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import local_today
from emr.core.exceptions import InvalidState, NotFoundError, ValidationFailed
from emr.models import SUBSTITUTE_CAPACITIES, Department, HeadSubstitute, User, utcnow

__all__ = [
    "Candidate",
    "candidates",
    "designate",
    "end",
    "head_capacity",
    "in_force",
    "for_user",
]


def _is_head(user: User, department_id: int) -> bool:
    return user.active and user.role == "physician" and user.is_department_head and user.department_id == department_id


def in_force(session: Session, department_id: int, on: dt.date | None = None) -> list[HeadSubstitute]:
    """The department's designations in force on facility day ``on`` (today), oldest first."""
    day = on or local_today()
    return list(
        session.scalars(
            select(HeadSubstitute)
            .where(
                HeadSubstitute.department_id == department_id,
                HeadSubstitute.ended_at.is_(None),
                HeadSubstitute.valid_from <= day,
                or_(HeadSubstitute.valid_to.is_(None), HeadSubstitute.valid_to >= day),
            )
            .order_by(HeadSubstitute.valid_from, HeadSubstitute.id)
        )
    )


def head_capacity(
    session: Session, user: User | None, department_id: int | None, on: dt.date | None = None
) -> str | None:
    """In which capacity ``user`` may give the head of ``department_id``'s signature on day ``on`` (today):
    ``head`` (the head), ``deputy`` / ``acting`` (a designation in force), or None (may not)."""
    if user is None or department_id is None or not user.active or user.role != "physician":
        return None
    if _is_head(user, department_id):
        return "head"
    found = next((d for d in in_force(session, department_id, on) if d.user_id == user.id), None)
    return found.capacity if found is not None else None


@dataclass(frozen=True)
class Candidate:
    """Someone who may give the head's signature today, for the sign page's explanation."""

    name: str
    capacity: str  # head | deputy | acting
    valid_to: dt.date | None = None
    user_id: int | None = None


def candidates(session: Session, department_id: int, on: dt.date | None = None) -> list[Candidate]:
    """Everyone who may give the head of ``department_id``'s signature on ``on`` (today): heads first."""
    heads = session.scalars(
        select(User).where(User.department_id == department_id, User.is_department_head.is_(True)).order_by(User.id)
    )
    out = [Candidate(u.full_name, "head", user_id=u.id) for u in heads if _is_head(u, department_id)]
    for d in in_force(session, department_id, on):
        user = session.get(User, d.user_id)
        if user is not None and user.active and user.role == "physician":
            out.append(Candidate(user.full_name, d.capacity, d.valid_to, user.id))
    return out


def for_user(session: Session, user_id: int) -> list[HeadSubstitute]:
    """A person's designations, newest first (for the admin's page)."""
    return list(
        session.scalars(
            select(HeadSubstitute).where(HeadSubstitute.user_id == user_id).order_by(HeadSubstitute.id.desc())
        )
    )


def _day(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError as exc:
        raise ValidationFailed({"valid_from": "substitutes.error.date"}) from exc


def designate(
    session: Session,
    actor: Actor,
    user_id: int,
    department_id: int | None,
    capacity: str,
    valid_from: dt.date | str | None,
    valid_to: dt.date | str | None = None,
    reference: str | None = None,
) -> HeadSubstitute:
    """Name ``user_id`` to sign in place of the head of ``department_id`` from ``valid_from`` through
    ``valid_to`` (facility days; None: until ended). Raises :class:`ValidationFailed` field by field."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    problems: dict[str, str] = {}
    department = session.get(Department, department_id) if department_id else None
    if department is None:
        problems["department_id"] = "substitutes.error.department"
    if capacity not in SUBSTITUTE_CAPACITIES:
        problems["capacity"] = "substitutes.error.capacity"
    if not user.active or user.role != "physician":
        problems["user"] = "substitutes.error.not_physician"
    elif department is not None and _is_head(user, department.id):
        problems["user"] = "substitutes.error.already_head"
    start = end_day = None
    try:
        start = _day(valid_from)
    except ValidationFailed:
        problems["valid_from"] = "substitutes.error.date"
    try:
        end_day = _day(valid_to)
    except ValidationFailed:
        problems["valid_to"] = "substitutes.error.date"
    if start is None and "valid_from" not in problems:
        problems["valid_from"] = "substitutes.error.valid_from"
    if start is not None and end_day is not None and end_day < start:
        problems["valid_to"] = "substitutes.error.reversed"
    elif end_day is not None and end_day < local_today():
        problems["valid_to"] = "substitutes.error.past"
    note = (reference or "").strip()
    if len(note) > 200 or not note.isprintable():
        problems["reference"] = "substitutes.error.reference"
    if not problems and department is not None and start is not None:
        for other in session.scalars(
            select(HeadSubstitute).where(
                HeadSubstitute.user_id == user.id,
                HeadSubstitute.department_id == department.id,
                HeadSubstitute.ended_at.is_(None),
            )
        ):
            if (other.valid_to is None or other.valid_to >= start) and (end_day is None or other.valid_from <= end_day):
                problems["valid_from"] = "substitutes.error.overlap"
                break
    if problems:
        raise ValidationFailed(problems)
    assert department is not None and start is not None
    row = HeadSubstitute(
        department_id=department.id,
        user_id=user.id,
        capacity=capacity,
        valid_from=start,
        valid_to=end_day,
        reference=note or None,
        created_by=actor.user_id,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "user.head_substitute",
        object_type="user",
        object_id=user.id,
        details={
            "substitute": row.id,
            "department": department.code,
            "capacity": capacity,
            "valid_from": start.isoformat(),
            "valid_to": end_day.isoformat() if end_day else None,
            "reference": row.reference,
        },
    )
    session.commit()
    return row


def end(session: Session, actor: Actor, substitute_id: int, user_id: int) -> HeadSubstitute:
    """End ``user_id``'s designation ``substitute_id`` now (it no longer lets them sign from this moment)."""
    row = session.get(HeadSubstitute, substitute_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError("head_substitute", substitute_id)
    if row.ended_at is not None:
        raise InvalidState("designation already ended", key="substitutes.error.ended")
    row.ended_at = utcnow()
    row.ended_by = actor.user_id
    audit.record(
        session,
        actor,
        "user.head_substitute_end",
        object_type="user",
        object_id=user_id,
        details={"substitute": row.id, "department_id": row.department_id, "capacity": row.capacity},
    )
    session.commit()
    return row
