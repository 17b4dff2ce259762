"""The outbox operator page: what waits, what failed, what is dead; inspect and resend (admin, audited)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import select

from emr import outbox
from emr.access.audit import record
from emr.access.auth import current_actor, requires
from emr.core import clock
from emr.core.clock import facility_zone
from emr.models import OUTBOX_STATUSES, OutboxAttempt, Patient

from .. import db
from ..i18n import catalogue, t

bp = Blueprint("outbox", __name__, url_prefix="/admin/outbox")

PAGE_SIZE = 100


def _filters() -> dict[str, str]:
    """Only values the page knows are kept: a hostile query string changes nothing but the filter."""
    status = request.args.get("status", "")
    kind = request.args.get("kind", "")[:40]
    return {"status": status if status in OUTBOX_STATUSES else "", "kind": kind if kind.isprintable() else ""}


def kind_label(kind: str) -> str:
    """The Vietnamese name of a message kind; a kind the catalogue does not know shows as its code."""
    key = f"outbox.kind.{kind}"
    return t(key) if key in catalogue() else kind


def _age_text(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return t("outbox.age.minutes", m=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return t("outbox.age.hours", h=hours, m=minutes)
    return t("outbox.age.days", d=hours // 24, h=hours % 24)


@bp.get("/")
@requires("outbox.manage")
def index() -> Any:
    s = db.session()
    flt = _filters()
    offset = request.args.get("offset", "")
    start = int(offset) if offset.isdigit() and len(offset) < 9 else 0
    messages = outbox.list_messages(
        s, status=flt["status"] or None, kind=flt["kind"] or None, limit=PAGE_SIZE + 1, offset=start
    )
    seen = outbox.overview(s)
    age = seen.oldest_pending_age()
    codes = _patient_codes(s, {m.patient_id for m in messages if m.patient_id})
    record(s, current_actor(), "outbox.view", object_type="outbox", details={**flt, "offset": start})
    s.commit()
    return render_template(
        "outbox/index.html",
        messages=messages[:PAGE_SIZE],
        more=len(messages) > PAGE_SIZE,
        start=start,
        page_size=PAGE_SIZE,
        overview=seen,
        oldest_age=_age_text(age.total_seconds()) if age is not None else None,
        statuses=OUTBOX_STATUSES,
        flt=flt,
        codes=codes,
        kind_label=kind_label,
        zone=facility_zone().key,
    )


def _patient_codes(s: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {pid: code for pid, code in s.execute(select(Patient.id, Patient.code).where(Patient.id.in_(ids)))}


@bp.get("/<int:message_id>")
@requires("outbox.manage")
def detail(message_id: int) -> Any:
    s = db.session()
    message = outbox.get_message(s, message_id)
    attempts = list(
        s.scalars(select(OutboxAttempt).where(OutboxAttempt.message_id == message.id).order_by(OutboxAttempt.id))
    )
    record(
        s, current_actor(), "outbox.view_message", patient_id=message.patient_id,
        object_type="outbox_message", object_id=message.id, details={"kind": message.kind},
    )
    s.commit()
    return render_template(
        "outbox/detail.html",
        message=message,
        attempts=attempts,
        summary=outbox.payload_summary(message.payload),
        patient_code=_patient_codes(s, {message.patient_id}).get(message.patient_id) if message.patient_id else None,
        now=clock.utcnow(),
        kind_label=kind_label,
        zone=facility_zone().key,
    )


@bp.post("/<int:message_id>/resend")
@requires("outbox.manage")
def resend(message_id: int) -> Any:
    s = db.session()
    outbox.resend(s, message_id, current_actor())
    s.commit()
    return redirect(url_for("outbox.detail", message_id=message_id, done="resend"))
