"""FHIR R4 read and search API under /fhir (JSON), for HIS, the provincial record warehouse, other hospitals.

Same bearer tokens and permission table as /api; every read and search is
audited with the patients it returned. Every answer is FHIR JSON: errors,
unknown types and wrong methods are OperationOutcome resources, a client that
accepts only XML gets 406. Searches page with ``_count``/``_offset`` and
``next``/``previous`` links; ``Prefer: handling=lenient`` ignores unknown
parameters (strict, the default, refuses them). Reads carry ``meta.versionId``,
``meta.lastUpdated`` and an ``ETag``. The resources are built and validated in
:mod:`emr.exports.fhir`.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from emr import db
from emr.access import audit
from emr.access.auth import bearer_user, current_actor, deny
from emr.access.care import OutOfCareScope, ensure_patient_access, in_care_filter
from emr.access.permissions import allowed
from emr.core.exceptions import AuthenticationFailed, EmrError
from emr.exports.fhir import FhirError, validated
from emr.fhir.search import capability_statement, known_params, read_resource, search_resources

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
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir")
_DEFAULT_COUNT, _MAX_COUNT = 50, 200
_MAX_OFFSET = 10**6


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


def _not_acceptable() -> Response | None:
    """406 unless the client takes FHIR JSON (this server writes no XML); ``_format`` overrides Accept."""
    fmt = request.args.get("_format", "").strip().lower()
    if fmt:
        if fmt in ("json", *_JSON_TYPES):
            return None
        return _outcome(406, "not-supported", f"_format {fmt!r}: this server answers in application/fhir+json")
    if not request.headers.get("Accept", "").strip():
        return None
    if request.accept_mimetypes.best_match(_JSON_TYPES) is not None:  # also */* and application/*
        return None
    return _outcome(406, "not-supported", "this server answers in application/fhir+json only")


def _int_param(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default)).strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise FhirError(f"{name} must be an integer {low}..{high}")
    return int(raw)


def _lenient() -> bool:
    prefer = request.headers.get("Prefer", "")
    tokens = {p.strip().lower().replace(" ", "") for p in prefer.split(";")} | {
        p.strip().lower().replace(" ", "") for p in prefer.split(",")
    }
    return "handling=lenient" in tokens


def _page_url(args: dict[str, list[str]], offset: int, count: int) -> str:
    pairs = [(k, v) for k, vs in args.items() for v in vs] + [("_count", str(count)), ("_offset", str(offset))]
    return f"{request.base_url}?{urlencode(pairs)}"


def _make_views(kind: str, action: str) -> None:
    def search() -> Response:
        refused = _not_acceptable()
        if refused is not None:
            return refused
        denied = _authenticate(action)
        if denied is not None:
            return denied
        try:
            lenient = _lenient()
            count = _int_param("_count", _DEFAULT_COUNT, 0, _MAX_COUNT)
            offset = _int_param("_offset", 0, 0, _MAX_OFFSET)
            args = {k: request.args.getlist(k) for k in request.args}
            s = db.session()
            result = search_resources(s, kind, args, limit=count, offset=offset, lenient=lenient, **_context())
            in_care = in_care_filter(s, current_actor())
            outside = sorted(p for p in result.patient_ids if not in_care(p))
            if outside:
                # Issue 10: a clinician's search may not reach patients outside their care.
                s.rollback()
                audit.record(s, current_actor(), "care.denied", outcome="denied", object_type=kind,
                             details={"patients": outside[:100]})
                s.commit()
                return _outcome(403, "forbidden", "patients outside your care")
            # the links repeat only the parameters the search used (lenient: unknown ones dropped)
            used = {k: v for k, v in args.items() if k in known_params(kind) and k not in ("_count", "_offset")}
            links = [{"relation": "self", "url": _page_url(used, offset, count)}]
            if count > 0 and offset + count < result.total:
                links.append({"relation": "next", "url": _page_url(used, offset + count, count)})
            if count > 0 and offset > 0:
                links.append({"relation": "previous", "url": _page_url(used, max(offset - count, 0), count)})
            if count > 0 and result.total:
                last = (result.total - 1) // count * count
                links.append({"relation": "first", "url": _page_url(used, 0, count)})
                links.append({"relation": "last", "url": _page_url(used, last, count)})
            base = request.base_url
            bundle = validated(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": result.total,
                    "link": links,
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
        refused = _not_acceptable()
        if refused is not None:
            return refused
        denied = _authenticate(action)
        if denied is not None:
            return denied
        try:
            s = db.session()
            resource, patient_id = read_resource(s, kind, ident, **_context())
            try:
                ensure_patient_access(s, current_actor(), patient_id)
            except OutOfCareScope:
                return _outcome(403, "forbidden", "patient outside your care")
            audit.record(s, current_actor(), "fhir.read", patient_id=patient_id, object_type=kind, object_id=ident)
            s.commit()
            meta = resource.get("meta", {})
            etag = f'W/"{meta.get("versionId", "")}"'
            if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
                resp = Response(status=304)
            else:
                resp = _json(resource)
            resp.headers["ETag"] = etag
            if meta.get("lastUpdated"):
                resp.headers["Last-Modified"] = format_datetime(datetime.fromisoformat(meta["lastUpdated"]))
            return resp
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
    refused = _not_acceptable()
    if refused is not None:
        return refused
    return _json(capability_statement(request.url_root.rstrip("/") + "/fhir"))


_HTTP_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 413: "too-long"}


def http_error_response(exc: HTTPException) -> Response:
    """Routing and protocol errors under /fhir (unknown path, wrong method, ...) as an OperationOutcome."""
    status = exc.code or 500
    resp = _outcome(status, _HTTP_ISSUE.get(status, "exception"), exc.description or str(status))
    for name, value in exc.get_headers():  # e.g. Allow on 405 (RFC 9110), without the HTML content type
        if name.lower() != "content-type":
            resp.headers[name] = value
    return resp


def emr_error_response(exc: EmrError) -> Response:
    """An EMR error raised under /fhir as an OperationOutcome (the app has rolled the session back)."""
    code = {401: "login", 403: "forbidden", 404: "not-found", 409: "conflict"}.get(exc.http_status, "invalid")
    if isinstance(exc, AuthenticationFailed):
        code = "login"
    return _outcome(exc.http_status, code, exc.message)
