"""Turning HTML form posts into service input, and errors into Vietnamese messages."""

from __future__ import annotations

from typing import Any

from werkzeug.datastructures import MultiDict

from emr.core.exceptions import ConflictError, EmrError, ValidationFailed

from ..i18n import t

__all__ = ["form_dict", "form_values", "field_errors", "message"]


def form_dict(form: MultiDict[str, str], *, lists: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Empty strings become None (optional fields); list fields are split; checkboxes become booleans."""
    data: dict[str, Any] = {}
    for key, value in form.items():
        if key == "csrf_token" or key in lists or key in flags:
            continue
        value = value.strip()
        if value:
            data[key] = value
    for key in lists:
        raw = " ".join(form.getlist(key)).replace(",", " ").replace(";", " ")
        data[key] = [v for v in raw.split() if v]
    for key in flags:
        data[key] = form.get(key) in ("1", "on", "true")
    return data


def form_values(form: MultiDict[str, str]) -> dict[str, str]:
    """The form's fields as typed, to fill the form again after an error (a list field such as
    the diagnoses shows ``J18.9 XYZ`` again, not the list :func:`form_dict` made of it)."""
    return {key: value for key, value in form.items() if key != "csrf_token"}


def message(exc: ValidationFailed, field: str) -> str:
    """The Vietnamese message for one of the error's fields, its placeholders filled in."""
    return t(exc.fields[field], **exc.field_params.get(field, {}))


def field_errors(exc: EmrError) -> dict[str, str]:
    """field → Vietnamese message, for display beside each field."""
    if isinstance(exc, ValidationFailed):
        return {
            k.split(".")[0] if not k.startswith("content.") else k.split(".", 1)[1]: message(exc, k)
            for k in exc.fields
        }
    if isinstance(exc, ConflictError) and exc.field:
        return {exc.field: t(exc.key, **exc.params)}
    return {"_form": t(exc.key, **exc.params)}
