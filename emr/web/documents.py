"""Record documents on screen: create per form type, edit a draft, amend a signed version, discard an unsigned
amendment, cancel, restore.

The edit form carries the version it was filled from and whether it edits a draft or amends a signed version
(``base_version``, ``base_mode``): a form gone stale (another tab amended or signed the document meanwhile)
is answered 409 with the text typed shown again, never saved over the newer version.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.core.exceptions import EmrError, InvalidState, ValidationFailed
from emr.documents import rights as document_rights
from emr.documents import service as documents
from emr.documents.content import content_lines
from emr.imaging import orders
from emr.patients import encounters
from emr.patients import service as patients
from emr.web.document_forms import content_from_form, content_inputs, document_errors, form_fields
from emr.web.forms import form_values

from .. import db
from ..i18n import t
from ..models import FORM_TYPES, ImagingOrder

bp = Blueprint("documents", __name__)

_MAX_ID = 2**31 - 1


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 0 < int(value) <= _MAX_ID else None


@bp.route("/patients/<int:patient_id>/documents/new", methods=["GET", "POST"])
@requires("document.write")
def new(patient_id: int) -> Any:
    s = db.session()
    patient = patients.get_patient(s, current_actor(), patient_id, audit_view=False)
    form_type = request.values.get("form_type", "")
    encs = [e for e in encounters.list_encounters(s, patient_id) if e.status != "cancelled"]
    if form_type not in FORM_TYPES:
        return render_template("documents/pick.html", patient=patient, form_types=FORM_TYPES, encounters=encs)
    ordered_in = None  # the visit of the exam a report is written on (a closed one still takes it)
    if form_type == "radiology_report":
        exam = s.get(ImagingOrder, _int(request.values.get("order_id")) or 0)
        ordered_in = exam.encounter_id if exam is not None and exam.patient_id == patient_id else None
    if form_type not in documents.AFTER_DISCHARGE_FORMS:
        # A visit already ended takes no new paper but its discharge paper (the server refuses others anyway).
        encs = [e for e in encs if e.status == "open" or e.id == ordered_in]
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    if request.method == "POST":
        values = form_values(request.form)
        data = {
            "encounter_id": _int(values.get("encounter_id")) or 0,
            "form_type": form_type,
            "order_id": _int(values.get("order_id")),
            "content": content_from_form(form_type, request.form),
        }
        try:
            doc = documents.create_document(s, current_actor(), data)
        except EmrError as exc:
            s.rollback()
            errors = document_errors(exc)
        else:
            return redirect(url_for("documents.view", document_id=doc.id))
    elif encs:
        values["encounter_id"] = str(ordered_in if ordered_in in {e.id for e in encs} else encs[0].id)
    ords = orders.list_orders(s, patient_id) if form_type == "radiology_report" else []
    if request.args.get("order_id"):
        values.setdefault("order_id", request.args["order_id"])
    # One report per exam: an exam that has one already is pointed to it (the server refuses a second anyway).
    order_id = _int(values.get("order_id")) if form_type == "radiology_report" else None
    existing = documents.live_report(s, order_id) if order_id else None
    if existing is not None and existing.patient_id != patient_id:
        existing = None  # another patient's exam: "documents.error.order" says so on saving
    status = 422 if errors else 200
    if existing is not None:
        status = 409 if request.method == "POST" else 200
        # Said above the form (not as a generic "invalid input"), with the button to the existing report.
        exists = documents.ReportExists(existing.order_id or 0, existing.id, existing.status)
        errors.pop("order_id", None)
        errors["_form"] = t(exists.key, **exists.params)
    return render_template(
        "documents/edit.html",
        mode="new",
        patient=patient,
        form_type=form_type,
        fields=form_fields(form_type),
        encounter_choices=[(str(e.id), f"{e.visit_code} · {t('encounters.kind.' + e.kind)}") for e in encs],
        order_choices=[(str(o.id), f"{o.accession_number} · {o.modality} · {o.procedure_name}") for o in ords],
        values=values,
        errors=errors,
        doc=None,
        base_version=None,
        existing_report=existing,
        reason_max=documents.REASON_MAX_LENGTH,
    ), status


@bp.get("/documents/<int:document_id>")
@requires("document.read")
def view(document_id: int) -> Any:
    s = db.session()
    doc = documents.get_document(s, current_actor(), document_id)
    patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
    return _render_view(doc, patient)


def _render_view(
    doc: Any,
    patient: Any,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Any:
    data = documents.document_dict(doc)
    s = db.session()
    user_id = current_actor().user_id
    current = next(v for v in doc.versions if v.number == doc.current_version)
    may_edit_draft = document_rights.may_edit_draft(doc, user_id)
    return render_template(
        "documents/view.html",
        doc=data,
        may_change=may_edit_draft if not current.locked else document_rights.capacity(s, doc, user_id) is not None,
        may_cancel=document_rights.capacity(s, doc, user_id) is not None,
        # An amendment never signed: its author may drop it, the signed version it amends is current again.
        may_discard=may_edit_draft and current.amends_version_id is not None and doc.status != "cancelled",
        reason_max=documents.REASON_MAX_LENGTH,
        patient=patient,
        # Each version's content in the form's order, fixed choices by their label (never the stored code).
        lines={v["number"]: content_lines(doc.form_type, v["content"]) for v in data["versions"]},
        errors=errors or {},
        values=values or {},
    ), status


@bp.route("/documents/<int:document_id>/edit", methods=["GET", "POST"])
@requires("document.write")
def edit(document_id: int) -> Any:
    """Edit the draft in place, or (when the current version is signed) write an amendment with a reason."""
    s = db.session()
    doc = documents.get_document(s, current_actor(), document_id)
    if doc.status == "cancelled":
        raise InvalidState("document cancelled", key="documents.error.cancelled")
    current = next(v for v in doc.versions if v.number == doc.current_version)
    mode = "amend" if current.locked else "edit"
    values: dict[str, str] = {}
    base: int | None = None
    base_sha: str | None = None
    if request.method == "POST":
        values = form_values(request.form)
        base = _int(values.get("base_version"))
        # The draft text the form was filled from: a draft keeps its number when saved, so only this
        # tells a save from a tab opened before another tab's save (DocumentChanged, 409; any other value too).
        base_sha = values.get("base_sha256") or None
        posted_mode = values.get("base_mode")
        if base is not None and (base != current.number or posted_mode not in (None, mode)):
            # Filled from a version that is no longer current (another tab amended or signed it): before the
            # rights check, since the newer draft may be another user's; the typed text is only shown back.
            return _edit_conflict(doc, values, base, posted_mode)
    if mode == "edit":  # only the author edits a draft; a signed one is amended by a signer or the head
        document_rights.require_author(s, current_actor(), doc, current, "document.edit")
    else:
        document_rights.require_signer_or_head(s, current_actor(), doc, "document.amend")
    patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
    errors: dict[str, str] = {}
    if request.method == "POST":
        content = content_from_form(doc.form_type, request.form)
        try:
            if mode == "amend":
                documents.amend_document(
                    s, current_actor(), doc.id, content, values.get("reason", ""), base_version=base
                )
            else:
                documents.update_draft(s, current_actor(), doc.id, content, base_version=base, base_sha256=base_sha)
        except document_rights.NotAllowedOnDocument:
            raise
        except documents.DocumentChanged:
            s.rollback()
            return _edit_conflict(doc, values, base, mode)
        except EmrError as exc:
            s.rollback()
            errors = document_errors(exc)
        else:
            return redirect(url_for("documents.view", document_id=doc.id))
    else:
        values = content_inputs(doc.form_type, json.loads(current.content_json))
        values["base_sha256"] = current.content_sha256
    return _render_edit(doc, patient, mode, current.number, values, errors, 422 if errors else 200)


def _render_edit(
    doc: Any,
    patient: Any,
    mode: str,
    base_version: int,
    values: dict[str, str],
    errors: dict[str, str],
    status: int,
    conflict: bool = False,
) -> Any:
    return render_template(
        "documents/edit.html",
        mode=mode,
        patient=patient,
        form_type=doc.form_type,
        fields=form_fields(doc.form_type),
        encounter_choices=[],
        order_choices=[],
        values=values,
        errors=errors,
        doc=doc,
        base_version=base_version,
        reason_max=documents.REASON_MAX_LENGTH,
        conflict=conflict,
    ), status


def _edit_conflict(doc: Any, values: dict[str, str], base: int | None, posted_mode: str | None) -> Any:
    """409: the document changed since the form was filled; the text typed (and the reason) is shown again,
    with a link to the current version, but cannot be saved from this stale form."""
    s = db.session()
    patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
    mode = posted_mode if posted_mode in ("edit", "amend") else "edit"
    errors = {"_form": t("documents.error.changed")}
    return _render_edit(doc, patient, mode, base or doc.current_version, values, errors, 409, conflict=True)


@bp.post("/documents/<int:document_id>/discard")
@requires("document.write")
def discard(document_id: int) -> Any:
    """Drop an amendment never signed (its author, with a reason); the signed version is current again."""
    s = db.session()
    reason = request.form.get("reason", "")
    try:
        documents.discard_amendment(
            s, current_actor(), document_id, reason, base_version=_int(request.form.get("base_version"))
        )
    except document_rights.NotAllowedOnDocument:
        raise  # 403 page: only the amendment's author drops it
    except EmrError as exc:
        s.rollback()
        doc = documents.get_document(s, current_actor(), document_id)
        patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
        if isinstance(exc, ValidationFailed):  # beside the reason field
            errors = {"discard_reason": next(iter(document_errors(exc).values()))}
        else:  # the document moved on (another tab): at the top, the discard form may be gone
            errors = {"_form": t(exc.key)}
        return _render_view(doc, patient, errors, {"discard_reason": reason}, exc.http_status)
    return redirect(url_for("documents.view", document_id=document_id))


def _state_change(document_id: int, restore: bool) -> Any:
    s = db.session()
    reason = request.form.get("reason", "")
    try:
        if restore:
            documents.restore_document(s, current_actor(), document_id, reason)
        else:
            documents.cancel_document(s, current_actor(), document_id, reason)
    except document_rights.NotAllowedOnDocument:
        raise  # 403 page: not this user's document to cancel or restore
    except EmrError as exc:
        s.rollback()
        doc = documents.get_document(s, current_actor(), document_id)
        patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
        errors = {("restore_reason" if restore else "cancel_reason"): msg for msg in document_errors(exc).values()}
        values = {("restore_reason" if restore else "cancel_reason"): reason}
        return _render_view(doc, patient, errors, values, 422)
    return redirect(url_for("documents.view", document_id=document_id))


@bp.post("/documents/<int:document_id>/cancel")
@requires("document.cancel")
def cancel(document_id: int) -> Any:
    return _state_change(document_id, restore=False)


@bp.post("/documents/<int:document_id>/restore")
@requires("document.cancel")
def restore(document_id: int) -> Any:
    return _state_change(document_id, restore=True)
