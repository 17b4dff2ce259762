"""Helpers shared by the service functions."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emr.core.exceptions import NotFoundError, ValidationFailed

from ..models import Counter

__all__ = ["next_number", "parse", "get_or_404", "pydantic_fields"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# pydantic error type → catalogue key (others fall back to errors.field_invalid).
_KEYS = {
    "missing": "errors.field_required",
    "string_too_short": "errors.field_required",
    "string_too_long": "errors.field_too_long",
    "string_pattern_mismatch": "errors.field_format",
    "literal_error": "errors.field_choice",
    "date_parsing": "errors.field_date",
    "date_from_datetime_parsing": "errors.field_date",
    "date_type": "errors.field_date",
    "datetime_parsing": "errors.field_datetime",
    "datetime_from_date_parsing": "errors.field_datetime",
    "int_parsing": "errors.field_number",
    "int_type": "errors.field_number",
    "extra_forbidden": "errors.field_unknown",
    "icd10_format": "errors.field_icd10",  # emr.schemas._icd10_codes, naming the codes
    "icd10_one": "errors.field_icd10_one",
    "ae_title": "orders.error.station_format",  # emr.schemas.OrderIn: PS3.5 VR AE
}
# Error types whose message names what was typed: these context values fill the message.
_CTX_PARAMS = {"icd10_format": ("codes",), "icd10_one": ("codes",)}


def pydantic_fields(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    return _pydantic_problems(exc, prefix)[0]


def _pydantic_problems(exc: ValidationError, prefix: str = "") -> tuple[dict[str, str], dict[str, dict[str, object]]]:
    """field → catalogue key, and the message parameters where the key has some (the length limit)."""
    fields: dict[str, str] = {}
    params: dict[str, dict[str, object]] = {}
    for err in exc.errors():
        field = prefix + (".".join(str(p) for p in err["loc"]) or "body")
        if field in fields:
            continue
        limit = (err.get("ctx") or {}).get("max_length")
        if err["type"] == "string_too_long" and isinstance(limit, int):
            fields[field] = "errors.field_too_long_max"
            params[field] = {"max": limit}
        else:
            fields[field] = _KEYS.get(err["type"], "errors.field_invalid")
            ctx = err.get("ctx") or {}
            named = {k: ctx[k] for k in _CTX_PARAMS.get(err["type"], ()) if k in ctx}
            if named:
                params[field] = named
    return fields, params


def _nul_fields(data: Any, path: str = "") -> dict[str, str]:
    """NUL characters are refused everywhere (PostgreSQL cannot store them in text)."""
    if isinstance(data, str):
        return {path or "body": "errors.field_invalid"} if "\x00" in data else {}
    found: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                found[path or "body"] = "errors.field_invalid"
            found.update(_nul_fields(v, key))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found.update(_nul_fields(v, f"{path}.{i}" if path else str(i)))
    return found


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` into ``model`` or raise :class:`ValidationFailed` with per-field keys."""
    if isinstance(data, model):
        return data
    nul = _nul_fields(data)
    if nul:
        raise ValidationFailed({prefix + k: v for k, v in nul.items()})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields, params = _pydantic_problems(exc, prefix)
        raise ValidationFailed(fields, params=params) from None


def get_or_404(session: Session, model: type[T], ident: int, what: str) -> T:
    obj = session.get(model, ident)
    if obj is None:
        raise NotFoundError(what, ident)
    return obj


def next_number(session: Session, name: str) -> int:
    """Increment and return a named counter inside the caller's transaction."""
    for _ in range(3):
        row = session.execute(
            update(Counter).where(Counter.name == name).values(value=Counter.value + 1).returning(Counter.value)
        ).first()
        if row is not None:
            return int(row[0])
        try:
            with session.begin_nested():
                session.execute(insert(Counter).values(name=name, value=1))
            return 1
        except IntegrityError:
            continue
    raise RuntimeError(f"counter {name} could not be incremented")
