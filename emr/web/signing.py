"""Signing on screen: the "Ký số" form, signed PDF downloads, signing keys, and the public
verification page the printed QR code opens (plus its JSON API)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from emr.access import substitutes
from emr.access.auth import current_actor, requires
from emr.access.permissions import allowed
from emr.api import RouteSpec
from emr.core.clock import local_today
from emr.core.exceptions import EmrError, NotFoundError, ValidationFailed
from emr.documents import service as documents
from emr.documents.content import content_lines
from emr.patients import service as patients
from emr.signing import service as svc

from .. import db
from ..i18n import t
from ..models import SUBSTITUTE_CAPACITIES, Department, Document, User
from ..signing import SigningError
from .forms import message

bp = Blueprint("signing", __name__)
log = logging.getLogger(__name__)
verify_bp = Blueprint("verify", __name__)
verify_api_bp = Blueprint("verify_api", __name__, url_prefix="/api/verify")  # JSON errors, like /api

_MAX_P12 = 256 * 1024
_LOCAL_PATH = re.compile(r"/[A-Za-z0-9/_.-]*")  # no scheme, host, control characters or query


def _config() -> svc.SigningConfig:
    return current_app.extensions["emr.signing_config"]  # type: ignore[no-any-return]


def _field_errors(exc: EmrError) -> dict[str, str]:
    if isinstance(exc, ValidationFailed):
        return {k: message(exc, k) for k in exc.fields}
    return {"_form": t(exc.key)}


def _back_to(target: str | None) -> str | None:
    """Where the signer came from (e.g. the reading panel, to print the slip next); local paths only."""
    if target and _LOCAL_PATH.fullmatch(target) and not target.startswith("//"):
        return target
    return None


def _answer_read_request(s: Any, document_id: int) -> None:
    """A signed report that answers another facility's read request goes back to it (issue 15)."""
    from emr.network import outgoing

    try:
        outgoing.report_signed(s, current_actor(), document_id)
    except Exception:  # noqa: BLE001 - the signature stands; the failure is logged for the operator
        s.rollback()
        log.exception("could not queue the signed report %s for the requesting site", document_id)


@bp.route("/signing/documents/<int:document_id>/sign", methods=["GET", "POST"])
@requires("document.sign")
def sign(document_id: int) -> Any:
    s = db.session()
    doc = documents.get_document(s, current_actor(), document_id)
    patient = patients.get_patient(s, current_actor(), doc.patient_id, audit_view=False)
    version, _artifact, slot = svc.next_slot(s, doc)
    user = g.user
    keys = {k: svc._active_key(s, user.id, k) is not None for k in ("pkcs11", "pkcs12")}
    errors: dict[str, str] = {}
    method = request.form.get("method") or ("pkcs11" if keys["pkcs11"] or not keys["pkcs12"] else "pkcs12")
    status = 200
    if request.method == "POST":
        secret = request.form.get("secret", "")[:256]
        shown = request.form.get("content_sha256", "")[:64]
        try:
            svc.sign_document(
                s, current_actor(), doc.id, _config(), method=method, secret=secret, expected_sha256=shown
            )
        except SigningError as exc:
            # The user sees the Vietnamese summary; the cause (TSA, token, certificate, PDF) is for the admin.
            log.warning("signing document %s as %s failed: %s", doc.id, current_actor().username, exc,
                        exc_info=type(exc) is SigningError)
            errors = {"secret": exc.user_message()}
            status = 422
        except svc.ContentChanged as exc:
            errors = {"_form": t(exc.key)}  # the form below now shows the current text and its hash
            status = 409
        except svc.NotYourTurn as exc:
            errors = {"_form": t(exc.key)}
            status = 403
        except EmrError as exc:
            s.rollback()
            errors = _field_errors(exc)
            status = 422
        else:
            _answer_read_request(s, doc.id)
            return redirect(_back_to(request.args.get("next")) or url_for("documents.view", document_id=doc.id))
        doc = documents.get_document(s, current_actor(), document_id)
        version, _artifact, slot = svc.next_slot(s, doc)
    turn = svc.can_sign_now(s, doc, user)
    # The head's signature: who may give it today, or that nobody may until an admin names someone.
    why = svc.head_refusal(s, doc) if slot is not None and slot.who == "head" and not turn else ""
    own = svc.signed_already(s, version, user.id) if slot is not None else None
    if own is not None and slot is not None:  # one person gives one signature of a paper
        why = t("signing.sign.already_signed", slot=svc.capacity_label(own.capacity, own.signer_role),
                next=t(f"signing.slot.{slot.who}"))
        if slot.who == "head":
            why += " " + svc.head_refusal(s, doc, exclude=user.id)
    content = json.loads(version.content_json)
    pending = svc.discharge_pending(s, doc) if slot else None  # a discharge paper of a visit not yet closed
    return render_template(
        "signing/sign.html",
        doc=doc,
        patient=patient,
        version=version,
        shown=content_lines(doc.form_type, content),  # the form's order, choices by their label
        slot=slot,
        turn=turn,
        slot_label=t(f"signing.slot.{slot.who}") if slot else "",
        keys=keys,
        method=method,
        errors=errors,
        pending=pending,
        why=why,
        already_signed=own is not None,
    ), status


@bp.get("/signing/documents/<int:document_id>/versions/<int:number>/pdf")
@requires("document.read")
def pdf(document_id: int, number: int) -> Any:
    s = db.session()
    doc = documents.get_document(s, current_actor(), document_id)
    version = next((v for v in doc.versions if v.number == number), None)
    artifact = svc.artifact_for(s, version.id) if version else None
    if artifact is None:
        abort(404)
    # The document page offers a download; the viewer opens the report beside the images (?inline=1).
    disposition = "inline" if request.args.get("inline") == "1" else "attachment"
    return Response(
        bytes(artifact.pdf),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'{disposition}; filename="document-{doc.id}-v{number}.pdf"'},
    )


def _keys_page(user: User, admin: bool) -> Any:
    s = db.session()
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    saved = None
    status = 200
    if request.method == "POST":
        kind = request.form.get("kind", "")
        try:
            if kind == "pkcs12":
                upload = request.files.get("p12")
                data = upload.read(_MAX_P12 + 1) if upload else b""
                if not data or len(data) > _MAX_P12:
                    raise ValidationFailed({"p12": "signing.error.p12_file"})
                svc.register_pkcs12(s, current_actor(), user.id, data, request.form.get("password", "")[:256])
            elif kind == "pkcs11":
                svc.register_token_key(
                    s, current_actor(), user.id, request.form.get("token_label", ""), request.form.get("key_label", "")
                )
            elif kind == "head" and admin:
                user.is_department_head = request.form.get("is_head") == "1"
                from emr.access import audit

                audit.record(
                    s,
                    current_actor(),
                    "user.department_head",
                    object_type="user",
                    object_id=user.id,
                    details={"is_department_head": user.is_department_head},
                )
                s.commit()
            elif kind == "substitute" and admin:
                form = {k: request.form.get(k, "").strip()[:200] for k in
                        ("department_id", "capacity", "valid_from", "valid_to", "reference")}
                dep = form["department_id"]
                try:
                    substitutes.designate(
                        s, current_actor(), user.id, int(dep) if dep.isdigit() and len(dep) < 10 else None,
                        form["capacity"], form["valid_from"], form["valid_to"], form["reference"],
                    )
                except EmrError:
                    values = form
                    raise
            elif kind == "substitute_end" and admin:
                ident = request.form.get("substitute_id", "")
                substitutes.end(s, current_actor(), int(ident) if ident.isdigit() and len(ident) < 10 else 0, user.id)
            else:
                raise ValidationFailed({"kind": "signing.error.method"})
            saved = kind
        except SigningError as exc:
            s.rollback()
            errors = {"password": exc.user_message()}
            status = 422
        except EmrError as exc:
            s.rollback()
            if isinstance(exc, NotFoundError):
                raise
            errors = _field_errors(exc)
            status = 422
    keys = {k: svc._active_key(s, user.id, k) for k in ("pkcs11", "pkcs12")}
    extra: dict[str, Any] = {}
    if admin:
        departments = {d.id: d for d in s.scalars(select(Department).order_by(Department.name))}
        extra = {
            "departments": departments,
            "department_choices": [(str(d.id), d.name) for d in departments.values()],
            "designations": substitutes.for_user(s, user.id),
            "today": local_today(),
            "values": values,
            "capacities": [(c, t(f"substitutes.capacity.{c}")) for c in SUBSTITUTE_CAPACITIES],
        }
    return render_template("signing/keys.html", target=user, admin=admin, keys=keys, errors=errors, saved=saved,
                           **extra), status


@bp.route("/signing/keys", methods=["GET", "POST"])
@requires("document.sign")
def my_keys() -> Any:
    return _keys_page(g.user, admin=False)


@bp.route("/signing/users/<int:user_id>", methods=["GET", "POST"])
@requires("user.manage")
def user_keys(user_id: int) -> Any:
    user = db.session().get(User, user_id)
    if user is None:
        abort(404)
    return _keys_page(user, admin=True)


# -- public verification -------------------------------------------------------------


def _may_see_patient() -> bool:
    user = g.get("user")
    return user is not None and allowed(user.role, "document.read")


@verify_bp.get("/verify/<code>")
def verify_page(code: str) -> Any:
    s = db.session()
    result = svc.verify_code(s, code, _config(), current_actor(), with_patient=_may_see_patient())
    if result is None:
        return render_template("signing/verify.html", result=None, code=code[:64]), 404
    return render_template("signing/verify.html", result=result, code=code)


@verify_api_bp.get("/<code>")
def verify_api(code: str) -> Any:
    result = svc.verify_code(db.session(), code, _config(), current_actor(), with_patient=_may_see_patient(),
                             via="api")
    if result is None:
        return jsonify({"error": "not_found", "message": t("signing.verify.unknown_code"), "fields": {}}), 404
    return jsonify(result.as_dict())


@verify_api_bp.post("")
def verify_upload() -> Any:
    upload = request.files.get("file")
    data = upload.read() if upload is not None else request.get_data(cache=False)
    if not data:
        return jsonify({"error": "bad_request", "message": t("signing.verify.no_file"), "fields": {}}), 400
    return jsonify(svc.verify_uploaded_pdf(db.session(), data, _config(), current_actor()))


def _signing_overview(doc_id: int) -> dict[int, dict[str, Any]]:
    s = db.session()
    doc = s.get(Document, doc_id)
    return svc.signing_overview(s, doc) if doc is not None else {}


def _can_sign_document(doc_id: int) -> bool:
    s = db.session()
    doc = s.get(Document, doc_id)
    user = g.get("user")
    return (
        doc is not None and user is not None and allowed(user.role, "document.sign") and svc.can_sign_now(s, doc, user)
    )


# The public JSON endpoints of this module, listed in /api/openapi.json (registered by emr.app).
PUBLIC_API_ROUTES = [
    RouteSpec("/verify/<code>", "GET", None, "verify_code", "Verify a signed document by its QR code (public; "
              "patient data only with a logged-in session that may read documents)", None, None, None, 200),
    RouteSpec("/verify", "POST", None, "verify_upload", "Verify a signed PDF (public; body: the PDF or a "
              "multipart 'file')", None, None, None, 200),
]  # fmt: skip


def template_helpers() -> dict[str, Any]:
    """Template globals of the signing pages (the app registers them)."""
    return {"signing_overview": _signing_overview, "can_sign_document": _can_sign_document}
