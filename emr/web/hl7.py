"""Admin pages of the HL7 interface: the message log, one message with its ACK, replay."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.core.clock import facility_zone
from emr.hl7 import messages as svc

from .. import db

bp = Blueprint("hl7", __name__, url_prefix="/admin/hl7")


def _before() -> int | None:
    value = request.args.get("before", "")
    return int(value) if value.isdigit() and len(value) < 19 else None


@bp.get("")
@requires("hl7.manage")
def index() -> Any:
    flt = svc.MessageFilter.parse(request.args)
    rows = svc.list_messages(db.session(), flt, before=_before())
    settings = current_app.extensions["emr.settings"]
    return render_template("hl7_messages.html", rows=rows, args=flt.as_args(), counts=svc.status_counts(db.session()),
                           page=svc.PAGE, zone=facility_zone().key, hl7=settings.hl7)


@bp.get("/<int:message_id>")
@requires("hl7.manage")
def show(message_id: int) -> Any:
    row = svc.get_message(db.session(), current_actor(), message_id)
    return render_template("hl7_message.html", m=row, lines=svc.message_text(row.raw, row.charset),
                           ack_lines=svc.message_text(row.ack, row.charset if row.direction == "in" else "utf-8"))


@bp.post("/<int:message_id>/replay")
@requires("hl7.manage")
def replay(message_id: int) -> Any:
    result = svc.replay(db.session(), current_actor(), message_id, current_app.extensions["emr.settings"])
    new_id = getattr(result, "message_id", None) or getattr(result, "id", None)
    return redirect(url_for("hl7.show", message_id=new_id))
