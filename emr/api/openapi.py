"""``/api/openapi.json``: generated from the route registry and the pydantic schemas."""

from __future__ import annotations

import re
from typing import Any

from flask import jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..schemas import ErrorOut
from . import ROUTES, bp

__all__ = ["build_spec"]

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def build_spec() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for r in ROUTES:
        models.update(m for m in (r.body, r.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        path = "/api" + _PARAM.sub(lambda m: "{" + m.group(2) + "}", r.rule)
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary, "parameters": [], "responses": {}}
        for conv, name in _PARAM.findall(r.rule):
            schema = {"type": "integer", "minimum": 1} if conv == "int" else {"type": "string"}
            op["parameters"].append({"name": name, "in": "path", "required": True, "schema": schema})
        if r.query is not None:
            qschema = r.query.model_json_schema()
            for name, prop in qschema.get("properties", {}).items():
                op["parameters"].append(
                    {"name": name, "in": "query", "required": name in qschema.get("required", []), "schema": prop}
                )
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.response.__name__}"}}}
        op["responses"][str(r.status)] = ok
        codes = ["400", "404", "409", "422"]
        if r.action is not None:
            op["security"] = [{"bearer": []}]
            codes += ["401", "403"]
        for code in codes:
            op["responses"][code] = {"description": "error", "content": {"application/json": {"schema": error_ref}}}
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "filmless EMR API", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@bp.get("/openapi.json")
def openapi_json() -> Any:
    return jsonify(build_spec())
