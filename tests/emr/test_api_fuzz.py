"""Property-based fuzzing of the API from its own OpenAPI routes: never a 500.

Bodies are arbitrary JSON and schema-shaped objects with hostile values
(NUL, huge numbers, wrong types, long strings); the answer must be a JSON
error (400/404/409/422) or a success, never a server error. Bounded to a few
dozen examples per route so it stays quick.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emr.api import ROUTES

from .conftest import patient_data

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "\x00",
            "2026-02-30",
            "9999-12-31T23:59:59",
            "",
            " ",
            "CT",
            "079190001234",
            "DN4790123456789",
            "'; DROP TABLE patients; --",
            "Nguyễn",
            "%",
            "*",
        ]
    ),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=12,
)


def _shaped(model: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the model's own field names but hostile values."""
    names = list(model.model_fields) if model is not None else []
    if not names:
        return st.dictionaries(st.text(max_size=8), _json, max_size=4)
    return st.dictionaries(st.sampled_from(names), _json, max_size=len(names))


def _url(rule: str, ident: int) -> str:
    return "/api" + re.sub(r"<int:\w+>", str(ident), rule)


FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_no_route_answers_500(app: Flask, client: FlaskClient, tokens: dict[str, str], data: st.DataObject) -> None:
    if not hasattr(app, "_fuzz_seeded"):
        r = client.post(
            "/api/patients", json=patient_data(), headers={"Authorization": f"Bearer {tokens['physician']}"}
        )
        assert r.status_code == 201
        app._fuzz_seeded = True  # type: ignore[attr-defined]
    route = data.draw(st.sampled_from([r for r in ROUTES if r.action is not None]))
    role = data.draw(st.sampled_from(["physician", "radiologist", "records_clerk"]))
    ident = data.draw(st.sampled_from([1, 2, 0, 2**31, 2**63]))
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {tokens[role]}"}}
    if route.body is not None:
        kind = data.draw(st.sampled_from(["shaped", "any", "raw"]))
        if kind == "raw":
            kwargs["data"] = data.draw(st.binary(max_size=60))
            kwargs["headers"]["Content-Type"] = "application/json"
        else:
            kwargs["json"] = data.draw(_shaped(route.body) if kind == "shaped" else _json)
    if route.query is not None:
        kwargs["query_string"] = data.draw(
            st.dictionaries(st.sampled_from(["q", "limit", "x"]), st.text(max_size=30), max_size=3)
        )
    r = client.open(_url(route.rule, ident), method=route.method, **kwargs)
    assert r.status_code < 500, (route.rule, kwargs, r.get_data(as_text=True)[:500])
    if r.status_code >= 400:
        assert r.is_json and r.json["error"], r.get_data(as_text=True)[:200]
