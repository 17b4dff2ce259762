"""The REST JSON API under /api: token auth, pydantic validation, OpenAPI from the same schemas.

Every route is declared with :func:`endpoint`, which records its schemas for
``/api/openapi.json``, authenticates the bearer token, checks the action in
the permission table, validates the body and query, and maps EMR errors to
400/401/403/404/409/422 JSON answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from emr import db
from emr.access.auth import bearer_token, current_actor, deny
from emr.access.permissions import PERMISSIONS, allowed
from emr.access.users import user_for_token
from emr.core.exceptions import (
    AuthenticationFailed,
    EmrError,
    NotFoundError,
    PermissionDenied,
    PossibleDuplicate,
    ValidationFailed,
)
from emr.documents.service import DocumentChanged, ReportExists
from emr.i18n import t
from emr.models.lookup import parse

__all__ = ["bp", "endpoint", "ROUTES", "RouteSpec", "document_routes", "error_response", "http_error_response"]

bp = Blueprint("api", __name__, url_prefix="/api")

_MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class RouteSpec:
    rule: str
    method: str
    action: str | None
    name: str
    summary: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int


ROUTES: list[RouteSpec] = []


def error_response(exc: EmrError) -> tuple[Response, int]:
    fields: dict[str, str] = {}
    body: dict[str, Any] = {"error": exc.code, "message": exc.message, "fields": fields}
    if isinstance(exc, ValidationFailed):
        body["fields"] = exc.fields
        if exc.field_params:
            body["params"] = exc.field_params  # e.g. {"title": {"max": 100}} for errors.field_too_long_max
    elif getattr(exc, "field", None):
        fields[exc.field] = exc.key  # type: ignore[attr-defined]
    if isinstance(exc, PossibleDuplicate):
        body["duplicates"] = [{"id": pid, "code": code} for pid, code in exc.matches]
    if isinstance(exc, ReportExists):  # the exam's one report: open it (amend it when signed)
        body["existing_document"] = {"id": exc.document_id, "status": exc.status}
    if isinstance(exc, DocumentChanged):  # read the document again (GET) before making the change anew
        body["document"] = {"id": exc.document_id, "current_version": exc.current_version}
    return jsonify(body), exc.http_status


# HTTP status → (machine name, catalogue key of the Vietnamese message).
_HTTP_ERRORS = {
    400: ("bad_request", "errors.bad_request"),
    401: ("unauthorized", "auth.error.token"),
    403: ("forbidden", "errors.forbidden"),
    404: ("not_found", "errors.not_found"),
    405: ("method_not_allowed", "errors.method_not_allowed"),
    413: ("too_large", "errors.too_large"),
}


def http_error_response(exc: HTTPException) -> tuple[Response, int]:
    """A routing or protocol error (404, 405, 413, ...) in the API's JSON error shape, its message in
    Vietnamese (Werkzeug's description is English)."""
    code = exc.code or 500
    name, key = _HTTP_ERRORS.get(code, ("error", "errors.generic"))
    response = jsonify({"error": name, "message": t(key, method=request.method), "fields": {}})
    allow = getattr(exc, "valid_methods", None)  # a 405 names the methods the address takes (RFC 9110 §15.5.6)
    if allow:
        response.headers["Allow"] = ", ".join(allow)
    return response, code


def document_routes(specs: list[RouteSpec]) -> None:
    """List JSON endpoints served by other blueprints in /api/openapi.json (the app calls this once)."""
    known = {(r.rule, r.method) for r in ROUTES}
    ROUTES.extend(r for r in specs if (r.rule, r.method) not in known)


def _authenticate() -> None:
    token = bearer_token()
    if token is None:
        raise AuthenticationFailed("missing bearer token", key="auth.error.token")
    user = user_for_token(db.session(), token)
    if user is None:
        raise AuthenticationFailed("invalid or revoked token", key="auth.error.token")
    g.user = user


def endpoint(
    rule: str,
    method: str,
    action: str | None,
    *,
    summary: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if action is not None and action not in PERMISSIONS:
        raise KeyError(action)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def view(**path: Any) -> Any:
            try:
                if any(isinstance(v, int) and v > _MAX_ID for v in path.values()):
                    raise NotFoundError("resource", request.path)
                if action is not None:
                    _authenticate()
                    if not allowed(g.user.role, action):
                        deny(action)
                        raise PermissionDenied(action)
                kwargs: dict[str, Any] = dict(path)
                if body is not None:
                    payload = request.get_json(silent=True)
                    if payload is None:
                        return jsonify(
                            {
                                "error": "bad_request",
                                "message": t("errors.json"),
                                "fields": {"body": "errors.json"},
                            }
                        ), 400
                    kwargs["body"] = parse(body, payload)
                if query is not None:
                    kwargs["query"] = parse(query, request.args.to_dict())
                result = fn(current_actor(), **kwargs)
            except EmrError as exc:
                db.session().rollback()
                return error_response(exc)
            if isinstance(result, Response):
                return result
            if response is not None:
                result = response.model_validate(result).model_dump(mode="json")
            return jsonify(result), status

        view.__name__ = fn.__name__
        view.required_action = action  # type: ignore[attr-defined]
        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method])
        ROUTES.append(RouteSpec(rule, method, action, fn.__name__, summary, body, query, response, status))
        return fn

    return wrap


from . import openapi, routes  # noqa: E402,F401  (register routes)
