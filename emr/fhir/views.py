"""FHIR R4 read and search API under /fhir (JSON), for HIS, the provincial record warehouse, other hospitals.

Same bearer tokens and permission table as /api; every read and search is
audited with the patients it returned; errors are OperationOutcome
resources. The resources are built and validated in :mod:`emr.exports.fhir`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from emr import db
from emr.access import audit
from emr.access.auth import bearer_user, current_actor, deny
from emr.access.permissions import allowed
from emr.core.exceptions import AuthenticationFailed, EmrError
from emr.exports.fhir import FhirError, validated
from emr.fhir.search import capability_statement, read_resource, search_resources

__all__ = ["bp", "FHIR_ACTIONS", "emr_error_response", "http_error_response"]

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

# Resource type → action in emr.access.permissions.PERMISSIONS.
FHIR_ACTIONS: dict[str, str] = {
    "Patient": "patient.read",
    "Encounter": "encounter.read",
    "ServiceRequest": "order.read",
    "ImagingStudy": "study.read",
    "DiagnosticReport": "document.read",
    "DocumentReference": "document.read",
    "Provenance": "document.read",
    "AuditEvent": "audit.read",
}
_MEDIA = "application/fhir+json; charset=utf-8"


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/fhir+json", content_type=_MEDIA
    )


def _outcome(status: int, code: str, message: str) -> Response:
    body = validated(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message}],
        }
    )
    return _json(body, status)


def _authenticate(action: str) -> Response | None:
    user = bearer_user()
    if user is None:
        resp = _outcome(401, "login", "bearer token missing, invalid or revoked")
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    g.user = user
    if not allowed(user.role, action):
        deny(action)
        return _outcome(403, "forbidden", f"role {user.role} may not {action}")
    return None


def _context() -> dict[str, Any]:
    settings = current_app.extensions["emr.settings"]
    public = settings.public_url.rstrip("/")
    return {
        "public_url": public,
        "dicomweb_url": f"{public}/dicomweb",
        "artifacts": current_app.extensions.get("emr.signed_artifacts"),
    }


def _count() -> int:
    raw = request.args.get("_count", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise FhirError("_count must be 1..200")
    return int(raw)


def _make_views(kind: str, action: str) -> None:
    def search() -> Response:
        denied = _authenticate(action)
        if denied is not None:
            return denied
        try:
            args = {k: request.args.getlist(k) for k in request.args}
            args.pop("_count", None)
            args.pop("_format", None)
            s = db.session()
            result = search_resources(s, kind, args, limit=_count(), **_context())
            base = request.base_url
            bundle = validated(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": result.total,
                    "link": [{"relation": "self", "url": request.url}],
                    "entry": [
                        {"fullUrl": f"{base}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                        for r in result.resources
                    ],
                }
            )
            pats = sorted(result.patient_ids)
            audit.record(
                s,
                current_actor(),
                "fhir.search",
                patient_id=pats[0] if len(pats) == 1 else None,
                object_type=kind,
                object_id=request.query_string.decode("utf-8", "replace")[:64] or None,
                details={"count": len(result.resources), "total": result.total, "patients": pats[:100]},
            )
            s.commit()
            return _json(bundle)
        except FhirError as exc:
            db.session().rollback()
            return _outcome(exc.http_status, exc.issue_code, exc.message)

    def read(ident: str) -> Response:
        denied = _authenticate(action)
        if denied is not None:
            return denied
        try:
            s = db.session()
            resource, patient_id = read_resource(s, kind, ident, **_context())
            audit.record(s, current_actor(), "fhir.read", patient_id=patient_id, object_type=kind, object_id=ident)
            s.commit()
            return _json(resource)
        except FhirError as exc:
            db.session().rollback()
            return _outcome(exc.http_status, exc.issue_code, exc.message)

    search.__name__ = f"search_{kind}"
    read.__name__ = f"read_{kind}"
    search.required_action = read.required_action = action  # type: ignore[attr-defined]
    bp.add_url_rule(f"/{kind}", endpoint=f"search_{kind}", view_func=search, methods=["GET"])
    bp.add_url_rule(f"/{kind}/<ident>", endpoint=f"read_{kind}", view_func=read, methods=["GET"])


for _kind, _action in FHIR_ACTIONS.items():
    _make_views(_kind, _action)


@bp.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement (public, as FHIR clients expect)."""
    return _json(capability_statement(request.url_root.rstrip("/") + "/fhir"))


_HTTP_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               413: "too-long"}


def http_error_response(exc: HTTPException) -> Response:
    """Routing and protocol errors under /fhir (unknown path, wrong method, ...) as an OperationOutcome."""
    status = exc.code or 500
    return _outcome(status, _HTTP_ISSUE.get(status, "exception"), exc.description or str(status))


def emr_error_response(exc: EmrError) -> Response:
    """An EMR error raised under /fhir as an OperationOutcome (the app has rolled the session back)."""
    code = {401: "login", 403: "forbidden", 404: "not-found", 409: "conflict"}.get(exc.http_status, "invalid")
    if isinstance(exc, AuthenticationFailed):
        code = "login"
    return _outcome(exc.http_status, code, exc.message)
