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

from emr import db
from emr.access import audit
from emr.access.auth import current_actor
from emr.access.permissions import PERMISSIONS, allowed
from emr.access.users import user_for_token
from emr.core.exceptions import AuthenticationFailed, EmrError, NotFoundError, PermissionDenied, ValidationFailed
from emr.models.lookup import parse

__all__ = ["bp", "endpoint", "ROUTES", "RouteSpec", "error_response"]

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
    if isinstance(exc, ValidationFailed):
        fields = exc.fields
    elif getattr(exc, "field", None):
        fields = {exc.field: exc.key}  # type: ignore[attr-defined, dict-item]
    return jsonify({"error": exc.code, "message": exc.message, "fields": fields}), exc.http_status


def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing bearer token", key="auth.error.token")
    user = user_for_token(db.session(), token.strip())
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
                        s = db.session()
                        audit.record(
                            s,
                            current_actor(),
                            action,
                            outcome="denied",
                            object_type="route",
                            object_id=request.path[:64],
                            details={"method": method},
                        )
                        s.commit()
                        raise PermissionDenied(action)
                kwargs: dict[str, Any] = dict(path)
                if body is not None:
                    payload = request.get_json(silent=True)
                    if payload is None:
                        return jsonify(
                            {
                                "error": "bad_request",
                                "message": "body must be a JSON object",
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
