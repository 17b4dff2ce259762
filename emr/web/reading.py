"""The reading room: worklist, report panel beside the images, saved measurements, share slips."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for

from emr.access.auth import current_actor, requires
from emr.access.care import ensure_patient_access
from emr.access.permissions import allowed
from emr.core.clock import local_isoformat
from emr.core.exceptions import EmrError, NotFoundError
from emr.core.states import StudyState
from emr.documents import service as documents
from emr.models.lookup import get_or_404
from emr.network.incoming import read_requests_for, sender_name
from emr.reading import service as reading
from emr.sharing import service as sharing
from emr.web.document_forms import content_from_form, content_inputs, document_errors, form_fields
from emr.web.forms import form_values

from .. import db
from ..i18n import t
from ..imaging.order_visit import visit_for_report
from ..models import MODALITIES, URGENCIES, DocumentVersion, ImagingOrder, Patient, Study, utcnow

bp = Blueprint("reading", __name__, url_prefix="/reading")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMPLATE_MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "XA")


def _day(value: str) -> date | None:
    """A date typed in the filter: ``yyyy-mm-dd`` (what a date field sends) or ``dd/mm/yyyy`` (typed by hand)."""
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _date_filter(values: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """The StudyDate range (YYYYMMDD, empty: open) and Vietnamese errors (``date_from``/``date_to``: not a
    date, ``range``: from after to); a date that cannot be used is said, never dropped silently."""
    errors: dict[str, str] = {}
    days: dict[str, date | None] = {}
    for name in ("date_from", "date_to"):
        text = values[name]
        day = days[name] = _day(text) if text else None
        if text and day is None:
            errors[name] = t("reading.error.date", field=t(f"reading.filter.{name}"), value=text)
        elif day is not None:
            values[name] = day.isoformat()  # what a date field shows (it would blank dd/mm/yyyy)
    lo, hi = days["date_from"], days["date_to"]
    if lo is not None and hi is not None and lo > hi:
        errors["range"] = t(
            "reading.error.date_order", date_from=lo.strftime("%d/%m/%Y"), date_to=hi.strftime("%d/%m/%Y")
        )
    return (lo.strftime("%Y%m%d") if lo else "", hi.strftime("%Y%m%d") if hi else "", errors)


@bp.get("/")
@requires("reading.worklist")
def worklist() -> Any:
    """The studies of patients in the user's care: radiologists and physicians read them; technicians
    check the images they acquired (no report content: that is document.read, on the study's page)."""
    args = request.args
    # What was typed, shown again as typed (a bad date included), printable characters only.
    values = {
        k: "".join(c for c in args.get(k, "")[:40] if c.isprintable()).strip()
        for k in ("modality", "date_from", "date_to", "urgency", "status")
    }
    date_from, date_to, errors = _date_filter(values)
    flt = reading.WorklistFilter(
        modality=values["modality"] if values["modality"] in MODALITIES else "",
        date_from=date_from,
        date_to=date_to,
        urgency=values["urgency"] if values["urgency"] in URGENCIES else "",
        status=values["status"] if values["status"] in reading.REPORT_STATUSES else "",
    )
    s = db.session()
    rows: list[reading.WorklistRow] = []
    if not errors:  # a range that cannot be applied lists nothing rather than everything
        # Issue 10: only patients in the user's care (in the query, before its limit); the listing is audited.
        rows = reading.reading_list(s, current_actor(), flt)
    return render_template(
        "reading/worklist.html",
        rows=rows,
        remote=read_requests_for(s, [r.order.id for r in rows]),  # issue 15: tele-radiology rows
        values=values,
        errors=errors,
        modalities=MODALITIES,
        urgencies=URGENCIES,
        statuses=reading.REPORT_STATUSES,
    ), (422 if errors else 200)


def _sign_url(document_id: int) -> str | None:
    """The signing page of a document, when the signing workflow (issue 5) has mounted one."""
    if "signing.sign" in current_app.view_functions:
        return url_for("signing.sign", document_id=document_id)
    for rule in current_app.url_map.iter_rules():
        if "sign" in rule.endpoint and "document_id" in rule.arguments and "GET" in (rule.methods or ()):
            try:
                return url_for(rule.endpoint, document_id=document_id)
            except Exception:  # noqa: BLE001 - a rule needing more arguments is not the one
                continue
    return None


def _report_templates() -> dict[str, dict[str, str]]:
    return {
        m: {f: t(f"reading.template.{m}.{f}") for f in ("technique", "findings", "conclusion")}
        for m in TEMPLATE_MODALITIES
    }


def _template_inputs(modality: str) -> dict[str, str]:
    """A modality's normal-report text as form input values (``c_<field>``), for a new report only."""
    text = _report_templates().get(modality, {})
    return {f.input_name: text[f.name] for f in form_fields("radiology_report") if text.get(f.name)}


def _render_read(
    study: Study,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    saved: bool = False,
    slip: dict[str, Any] | None = None,
    conflict: bool = False,
) -> Any:
    s = db.session()
    order = get_or_404(s, ImagingOrder, study.order_id or 0, "order")
    patient = get_or_404(s, Patient, study.patient_id or 0, "patient")
    doc = reading.latest_report(s, order.id)
    current: dict[str, Any] = {}
    version: DocumentVersion | None = None
    if doc is not None and allowed(g.user.role, "document.read"):
        # Report content only for roles that may read documents (issue 10); every showing is audited.
        version = next(v for v in doc.versions if v.number == doc.current_version)
        current = json.loads(version.content_json)
        reading.record_report_view(s, current_actor(), doc, version.number, study)
    shared = reading.signed_version(doc) is not None if doc is not None else False
    # The one place a template's normal text is offered: the first opening of a new report.
    # A re-render after a failed save (values given) shows exactly what was submitted, so an
    # emptied conclusion stays empty instead of coming back as "no abnormality".
    prefill = ""
    if values is None:
        values = content_inputs("radiology_report", current)
        if doc is None and order.modality in TEMPLATE_MODALITIES:
            prefill = order.modality
            values = _template_inputs(prefill)
        # What the form is filled from, sent back with the save (:func:`save_report`): the draft's version
        # and text hash, or an empty hash for "no report yet". A re-render keeps what was posted.
        values["base_sha256"] = version.content_sha256 if version is not None else ""
        if version is not None:
            values["base_version"] = str(version.number)
    return render_template(
        "reading/read.html",
        study=study,
        order=order,
        patient=patient,
        doc=doc,
        report_status=reading.report_status(doc),
        fields=form_fields("radiology_report"),
        values=values,
        errors=errors or {},
        templates=_report_templates(),
        template_prefilled=prefill,
        sign_url=_sign_url(doc.id) if doc is not None else None,
        can_share=shared,
        share_links=sharing.share_link_rows(s, study.id),
        sender=sender_name(s, study.study_instance_uid),
        saved=saved,
        conflict=conflict,
        now=utcnow(),
    ), status


def _linked(study_id: int) -> Study:
    """A linked study of a patient in the user's care (issue 10)."""
    s = db.session()
    study = get_or_404(s, Study, study_id, "study")
    if study.state != StudyState.LINKED or study.order_id is None:
        raise NotFoundError("study", study_id)
    ensure_patient_access(s, current_actor(), study.patient_id)
    return study


@bp.get("/studies/<int:study_id>")
@requires("image.view")
def read(study_id: int) -> Any:
    return _render_read(_linked(study_id), saved=request.args.get("saved") == "1")


@bp.post("/studies/<int:study_id>/report")
@requires("document.write")
def save_report(study_id: int) -> Any:
    """Draft save: create the order's radiology report, or edit its unsigned current version.

    The form carries the report it was filled from (``base_sha256``, ``base_version``; an empty hash: there
    was no report yet). When that is no longer the report (another tab or reader saved, signed, amended or
    cancelled it meanwhile), 409 with the typed text shown again to copy, and nothing is written: a draft is
    edited in place, so without the hash the later save silently replaced the earlier one. A post without
    the field (a client older than it) is not checked, as before.
    """
    s = db.session()
    study = _linked(study_id)
    order = get_or_404(s, ImagingOrder, study.order_id or 0, "order")
    values = form_values(request.form)
    content = content_from_form("radiology_report", request.form)
    doc = reading.latest_report(s, order.id)
    checked = "base_sha256" in request.form
    base_sha = values.get("base_sha256") or None
    base_text = values.get("base_version", "")
    base = int(base_text) if base_text.isdigit() and len(base_text) < 10 else None
    if checked and (doc is None) != (base_sha is None):
        # A report appeared since the form was opened on none, or the one it was filled from is gone.
        return _read_conflict(study, values)
    try:
        if doc is None:
            visit = visit_for_report(s, current_actor(), order)
            documents.create_document(
                s,
                current_actor(),
                {
                    "encounter_id": visit.id,
                    "form_type": "radiology_report",
                    "order_id": order.id,
                    "content": content,
                },
            )
        else:
            documents.update_draft(s, current_actor(), doc.id, content, base_version=base, base_sha256=base_sha)
    except documents.DocumentChanged:
        s.rollback()
        return _read_conflict(study, values)
    except documents.ReportExists as exc:  # another reader's report was saved first: one report per exam
        s.rollback()
        return _render_read(study, errors={"_form": t(exc.key, **exc.params)}, values=values, status=409,
                            conflict=True)
    except EmrError as exc:
        s.rollback()
        errors = document_errors(exc)
        return _render_read(study, errors=errors, values=values, status=422 if errors else 409)
    return redirect(url_for("reading.read", study_id=study.id, saved=1))


def _read_conflict(study: Study, values: dict[str, str]) -> Any:
    """409: the report changed since the form was filled (the edit page's message); the typed text is shown
    again to copy, with a link to reload the page, but cannot be saved from this stale form."""
    return _render_read(study, errors={"_form": t("documents.error.changed")}, values=values, status=409,
                        conflict=True)


@bp.get("/studies/<int:study_id>/share")
@requires("share.manage")
def share_page(study_id: int) -> Any:
    """Print or revoke share slips (desk staff who do not read images use this page)."""
    s = db.session()
    study = _linked(study_id)
    order = get_or_404(s, ImagingOrder, study.order_id or 0, "order")
    doc = reading.latest_report(s, order.id)
    return render_template(
        "reading/share.html",
        study=study,
        order=order,
        patient=get_or_404(s, Patient, study.patient_id or 0, "patient"),
        report_status=reading.report_status(doc),
        can_share=doc is not None and reading.signed_version(doc) is not None,
        share_links=sharing.share_link_rows(s, study.id),
        now=utcnow(),
    )


def _share_days(text: str | None) -> int:
    """The validity typed on the share form; the service refuses anything outside 1..365 (after its access
    checks). A value that is not a whole number becomes 0, so it gets the same refusal: -5, 99999 or "abc"
    used to become a 30-day slip without a word."""
    if text is None:  # no field at all (not the form): the default validity
        return sharing.DEFAULT_DAYS
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,9}", text) else 0


@bp.post("/studies/<int:study_id>/share")
@requires("share.create")
def create_share(study_id: int) -> Any:
    """A new share link; the answer is the A5 slip (PDF) — the only time the PIN is shown.

    The slip opens the images and the signed report: only roles that may see both
    create one, for a patient in their care (issue 10).
    """
    from emr.reading.slip import render_slip

    s = db.session()
    _linked(study_id)
    days = _share_days(request.form.get("days"))
    link, code, pin = sharing.create_share_link(s, current_actor(), study_id, days=days)
    study = get_or_404(s, Study, study_id, "study")
    patient = get_or_404(s, Patient, link.patient_id, "patient")
    order = s.get(ImagingOrder, study.order_id or 0)
    settings = current_app.extensions["emr.settings"]
    url = settings.public_url.rstrip("/") + url_for("share.landing", code=code)
    pdf = render_slip(
        hospital=settings.hospital_name,
        patient_name=patient.full_name,
        patient_code=patient.code,
        procedure=order.procedure_name if order else (study.description or ""),
        study_date=study.study_date or "",
        url=url,
        code=code,
        pin=pin,
        expires_at=link.expires_at,
    )
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="phieu-xem-anh-{link.id}.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/shares/<int:link_id>/revoke")
@requires("share.manage")
def revoke_share(link_id: int) -> Any:
    link = sharing.revoke_share_link(db.session(), current_actor(), link_id)
    return redirect(url_for("reading.share_page", study_id=link.study_id))


def _json_error(status: int, code: str) -> Response:
    response = jsonify(error=code)
    response.status_code = status
    return response


def _study_in_care(study_uid: str) -> tuple[Study | None, Any]:
    """The linked study a viewer call names, once the user's care of its patient is checked (a refusal is
    audited and raised), or None and the JSON error to answer (a malformed or unknown UID)."""
    if not _UID.match(study_uid) or len(study_uid) > 64:
        return None, _json_error(400, "bad_study_uid")
    study = reading.find_linked_study(db.session(), study_uid)
    if study is None:
        return None, _json_error(404, "not_found")
    ensure_patient_access(db.session(), current_actor(), study.patient_id)
    return study, None


@bp.get("/reports/<study_uid>")
@requires("document.read")
def report_pdfs(study_uid: str) -> Any:
    """The study's signed report PDFs, for the viewer's "Báo cáo (PDF)" entry: the version in force and the ones
    an amendment superseded, each with the EMR's own PDF address.

    The PACS holds one Encapsulated PDF per signed version, all alike (same series number and title), so the
    viewer cannot tell from DICOM which one stands; and the viewer opens the PDF through the EMR's PDF route
    rather than over DICOMweb, which checks the role and the patient's care again and audits the reading
    (``document.view``). This list carries no report content; the care check runs (a refusal is audited) all the
    same."""
    study, refusal = _study_in_care(study_uid)
    if study is None:
        return refusal
    s = db.session()
    doc = reading.latest_report(s, study.order_id) if study.order_id else None
    rows = reading.report_pdfs(s, doc) if doc is not None else []
    return jsonify(
        reports=[
            {
                "version": r.version,
                "current": r.current,
                "url": url_for("signing.pdf", document_id=r.document_id, number=r.version, inline=1),
                "signed_at": local_isoformat(r.signed_at) if r.signed_at else None,
                "sop_instance_uid": r.pacs_sop_instance_uid,
                "in_pacs": r.pacs_sop_instance_uid is not None,
            }
            for r in rows
        ]
    )  # not cached: the app answers every page with Cache-Control: no-store


@bp.get("/measurements/<study_uid>")
@requires("image.view")
def get_measurements(study_uid: str) -> Any:
    study, refusal = _study_in_care(study_uid)
    if study is None:
        return refusal
    data, updated = reading.get_measurements(db.session(), g.user.id, study_uid)
    return jsonify(measurements=data, updated_at=updated.isoformat() + "Z" if updated else None)


@bp.put("/measurements/<study_uid>")
@requires("image.view")
def put_measurements(study_uid: str) -> Any:
    # CSRF: exempted in the app (the viewer page has no form token); a
    # cross-site PUT with a JSON body needs a CORS preflight we never grant,
    # and the session cookie is SameSite=Lax.
    if not request.is_json:
        return _json_error(415, "json_required")
    study, refusal = _study_in_care(study_uid)
    if study is None:
        return refusal
    s = db.session()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _json_error(400, "bad_json")
    try:
        updated = reading.save_measurements(s, current_actor(), study, body.get("measurements"))
    except EmrError as exc:
        s.rollback()
        return _json_error(exc.http_status, exc.code)
    return jsonify(ok=True, updated_at=updated.isoformat() + "Z")
