"""What each record form looks like on screen, read from its content schema.

The pydantic model of a form type (``emr.schemas.FORM_CONTENT``) is the one
truth about its fields: required or not, free text or a fixed choice, and
their order (:func:`emr.documents.content.content_fields`). The screen follows
it, so a field added to a schema appears on the form without template changes.
Content inputs are named ``c_<field>`` so they never clash with the form's own
fields (an admission note has a ``reason``, and so has an amendment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from emr.core.exceptions import EmrError, ValidationFailed
from emr.documents.content import content_fields
from emr.web.forms import field_errors, message

from ..schemas import FORM_CONTENT

__all__ = ["FormField", "form_fields", "content_from_form", "content_inputs", "document_errors", "PREFIX"]

PREFIX = "c_"


@dataclass(frozen=True)
class FormField:
    name: str  # the content key
    input_name: str  # the HTML input name
    label: str
    required: bool
    choices: tuple[tuple[str, str], ...] = ()  # (value, Vietnamese label) for fixed choices


def form_fields(form_type: str) -> list[FormField]:
    """The form's inputs, in the order of its content schema."""
    return [FormField(f.name, PREFIX + f.name, f.label, f.required, f.choices) for f in content_fields(form_type)]


def content_from_form(form_type: str, form: MultiDict[str, str]) -> dict[str, Any]:
    """The content dict for the service; empty optional fields are left out (the schema defaults them)."""
    content: dict[str, Any] = {}
    for f in form_fields(form_type):
        value = form.get(f.input_name, "")
        if value.strip() or f.required:
            content[f.name] = value
    return content


def content_inputs(form_type: str, content: dict[str, Any]) -> dict[str, str]:
    """Stored content → input values, for pre-filling an edit or an amendment."""
    return {
        PREFIX + k: "" if v is None else str(v) for k, v in content.items() if k in FORM_CONTENT[form_type].model_fields
    }


def document_errors(exc: EmrError) -> dict[str, str]:
    """Like :func:`field_errors`, but content fields map to their ``c_`` inputs."""
    if isinstance(exc, ValidationFailed):
        out: dict[str, str] = {}
        for key in exc.fields:
            if key.startswith("content."):
                out.setdefault(PREFIX + key.split(".")[1], message(exc, key))
            else:
                out.setdefault(key.split(".")[0], message(exc, key))
        return out
    return field_errors(exc)
