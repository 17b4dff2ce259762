"""A record form's fields in the order the form shows them, and stored values as people read them.

The content schema of a form type (``emr.schemas.FORM_CONTENT``) lists its fields in the order the
clinician fills them in; that order is the one truth for every place a version's content is shown
again: the document page (current and earlier versions), the signing form and the signed PDF. Stored
content is canonical JSON with sorted keys (what is hashed and signed), so its own key order is
alphabetical and never shown as is.

A fixed choice is stored as its code (a discharge paper's result ``"2"``, KET_QUA_DTRI) and shown
by its Vietnamese label (``Đỡ``) wherever a person reads it.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..i18n import catalogue, t
from ..schemas import FORM_CONTENT

__all__ = ["ContentField", "content_fields", "content_lines", "display_value"]


@dataclass(frozen=True)
class ContentField:
    name: str  # the content key
    label: str  # Vietnamese label (documents.field.<name>)
    required: bool
    choices: tuple[tuple[str, str], ...] = ()  # (stored code, Vietnamese label) for fixed choices


def content_fields(form_type: str) -> list[ContentField]:
    """The fields of ``form_type`` in the form's order (the schema's declaration order)."""
    out = []
    for name, info in FORM_CONTENT[form_type].model_fields.items():
        choices: tuple[tuple[str, str], ...] = ()
        if typing.get_origin(info.annotation) is typing.Literal:
            choices = tuple((str(v), t(f"documents.{name}.{v}")) for v in typing.get_args(info.annotation))
        out.append(ContentField(name, t(f"documents.field.{name}"), info.is_required(), choices))
    return out


def display_value(field: ContentField | None, value: Any) -> str:
    """A stored value as a person reads it: a fixed choice by its label (an unknown code as stored)."""
    text = "" if value is None else str(value)
    if field is not None and field.choices:
        return dict(field.choices).get(text, text)
    return text


def _label(name: str) -> str:
    key = f"documents.field.{name}"
    return t(key) if key in catalogue() else name


def content_lines(form_type: str, content: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) of each filled field of a stored version, in the form's order.

    Keys the form no longer has (a version stored before a schema change) follow, in their stored
    order, so nothing signed is left off the screen or the paper."""
    fields = content_fields(form_type) if form_type in FORM_CONTENT else []
    known = {f.name for f in fields}
    lines = [(f.label, display_value(f, content.get(f.name))) for f in fields if content.get(f.name) not in (None, "")]
    lines += [(_label(k), display_value(None, v)) for k, v in content.items() if k not in known and v not in (None, "")]
    return lines
