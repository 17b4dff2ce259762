"""Errors of the export package, under the EMR's one root (:class:`emr.core.exceptions.EmrError`).

An export that fails its pre-submission check raises :class:`ExportCheckFailed`
carrying every problem found (table, row, field, Vietnamese message), so the
clerk fixes them all in one pass; nothing is written in that case.
"""

from __future__ import annotations

from dataclasses import dataclass

from emr.core.exceptions import EmrError

__all__ = ["ExportError", "ExportCheckFailed", "FieldProblem", "FacilityKeyError", "SchemaInvalid"]


class ExportError(EmrError):
    """Root of every export error."""

    code = "export_failed"
    http_status = 422


@dataclass(frozen=True)
class FieldProblem:
    """One missing or malformed field of one row of one table."""

    table: str  # "XML1" ... "XML5"
    row: int  # STT (1-based) within the table
    field: str  # element name, e.g. "MA_THE_BHYT"
    key: str  # catalogue key, e.g. "exports.check.missing"
    message: str  # the Vietnamese sentence

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "row": self.row, "field": self.field, "key": self.key, "message": self.message}


class ExportCheckFailed(ExportError):
    """The visit fails the pre-submission check; ``problems`` lists every field."""

    code = "export_check_failed"

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(
            f"{len(problems)} problem(s): " + "; ".join(f"{p.table}[{p.row}].{p.field}" for p in problems[:20]),
            key="exports.error.check_failed",
            count=len(problems),
        )
        self.problems = problems


class SchemaInvalid(ExportError):
    """A generated table does not validate against the project's XSD (a bug, never user input)."""

    code = "export_schema_invalid"
    http_status = 500

    def __init__(self, table: str, errors: list[str]) -> None:
        super().__init__(f"{table} fails its XSD: {errors[:5]}", key="exports.error.schema")
        self.table = table
        self.errors = errors


class FacilityKeyError(ExportError):
    """The facility's signing key is not configured or cannot be opened."""

    code = "facility_key"
    http_status = 409
