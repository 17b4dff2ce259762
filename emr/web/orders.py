"""The imaging order form and order cancellation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.billing import prices
from emr.core.clock import local_today, to_local
from emr.core.exceptions import EmrError
from emr.imaging import orders
from emr.patients import encounters
from emr.patients import service as patients
from emr.web.forms import field_errors, form_dict

from .. import db
from ..models import MODALITIES

bp = Blueprint("orders", __name__, url_prefix="/orders")


@bp.route("/new/<int:patient_id>", methods=["GET", "POST"])
@requires("order.create")
def new(patient_id: int) -> Any:
    s = db.session()
    patient = patients.get_patient(s, current_actor(), patient_id, audit_view=False)
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if request.method == "POST":
        values = form_dict(request.form)
        values["patient_id"] = patient_id
        try:
            orders.create_order(s, current_actor(), values, typed=True, stations=_stations())
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(url_for("patients.chart", patient_id=patient_id))
    open_encounters = [e for e in encounters.list_encounters(s, patient_id) if e.status == "open"]
    start, end = orders.schedule_window()
    return render_template(
        "orders/new.html",
        patient=patient,
        modalities=MODALITIES,
        errors=errors,
        values=values,
        encounters=open_encounters,
        services=prices.current_prices(s, local_today()),
        stations=_stations(),
        # The datetime-local input's own limits (the server checks again): facility-local wall time.
        scheduled_min=f"{to_local(start):%Y-%m-%dT%H:%M}",
        scheduled_max=f"{to_local(end - timedelta(minutes=1)):%Y-%m-%dT%H:%M}",
    ), (422 if errors else 200)


def _stations() -> tuple[str, ...]:
    """The modalities the gateway admits by name (``EmrSettings.modality_stations``); empty: any AE title."""
    return tuple(getattr(current_app.extensions.get("emr.settings"), "modality_stations", ()))


@bp.post("/<int:order_id>/cancel")
@requires("order.cancel")
def cancel(order_id: int) -> Any:
    s = db.session()
    order = orders.cancel_order(s, current_actor(), order_id, request.form.get("reason", "")[:1000])
    return redirect(url_for("patients.chart", patient_id=order.patient_id))


@bp.post("/<int:order_id>/price")
@requires("export.insurance")
def price(order_id: int) -> Any:
    """The price valid on the order's date, for an order placed before its code was in the price list."""
    order = orders.apply_catalogue_price(db.session(), current_actor(), order_id)
    return redirect(url_for("patients.chart", patient_id=order.patient_id))
