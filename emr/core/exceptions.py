"""One exception tree for the EMR; translated to HTTP status only at the edge.

Each error carries a catalogue key (``emr/i18n/vi.json``) so the web UI can
show the Vietnamese message, and a machine ``code`` for the API.
"""

from __future__ import annotations

__all__ = [
    "EmrError",
    "NotFoundError",
    "ValidationFailed",
    "ConflictError",
    "PermissionDenied",
    "AuthenticationFailed",
    "InvalidState",
    "FileRejected",
]


class EmrError(Exception):
    """Root of every EMR error."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, key: str = "errors.generic", **params: object) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.params = params

    def user_message(self) -> str:
        """The Vietnamese message for people (a command's output, a plain-text answer); ``message``
        is the English text for logs and developers."""
        from emr.i18n import t

        return t(self.key, **self.params)


class NotFoundError(EmrError):
    code = "not_found"
    http_status = 404

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident!r} not found", key="errors.not_found")
        self.what = what
        self.ident = ident


class ValidationFailed(EmrError):
    """Input failed validation; ``fields`` maps field name → catalogue key.

    ``params`` gives the ``{placeholders}`` of a field's message where it has some
    (the code that is not in the catalogue, the length limit): field → {name: value}.
    """

    code = "validation_failed"
    http_status = 422

    def __init__(
        self,
        fields: dict[str, str],
        message: str = "invalid input",
        *,
        params: dict[str, dict[str, object]] | None = None,
    ) -> None:
        super().__init__(f"{message}: {', '.join(f'{k}={v}' for k, v in fields.items())}", key="errors.validation")
        self.fields = fields
        self.field_params: dict[str, dict[str, object]] = {k: v for k, v in (params or {}).items() if k in fields}

    def user_message(self) -> str:
        """Each field's Vietnamese message with its placeholders filled in; a generic one
        (``errors.field_*``, e.g. "required") says which field it is about."""
        from emr.i18n import t

        parts = []
        for name, key in self.fields.items():
            text = t(key, **self.field_params.get(name, {}))
            parts.append(f"{name}: {text}" if key.startswith("errors.field_") else text)
        return " ".join(parts)


class ConflictError(EmrError):
    """The change would break uniqueness (e.g. a CCCD already on file)."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, *, field: str | None = None, key: str = "errors.conflict") -> None:
        super().__init__(message, key=key)
        self.field = field


class PossibleDuplicate(ConflictError):
    """A patient with the same name, birth date and sex is on file: the same person registered twice?

    ``matches`` are their (id, code) pairs; registering anyway needs the
    caller's confirmation that this is another person.
    """

    code = "possible_duplicate"

    def __init__(self, matches: list[tuple[int, str]]) -> None:
        codes = [code for _, code in matches]
        super().__init__(f"possible duplicate of {codes}", key="patients.error.possible_duplicate")
        self.matches = matches


class InvalidState(EmrError):
    """The object is not in a state that allows this (e.g. editing a signed version)."""

    code = "invalid_state"
    http_status = 409


class PermissionDenied(EmrError):
    code = "forbidden"
    http_status = 403

    def __init__(self, action: str) -> None:
        super().__init__(f"not allowed: {action}", key="errors.forbidden")
        self.action = action


class Busy(EmrError):
    """A bounded resource is in use by others; the client should try again shortly."""

    code = "busy"
    http_status = 503
    retry_after = 30


class AuthenticationFailed(EmrError):
    code = "unauthorized"
    http_status = 401


class FileRejected(EmrError):
    """An input file (e.g. a catalogue) has bad lines: nothing of it was loaded.

    ``problems`` lists (line number, catalogue key, parameters), every bad
    line of the file, in file order; :meth:`messages` gives them in Vietnamese.
    """

    code = "file_rejected"
    http_status = 422

    def __init__(self, filename: str, problems: list[tuple[int, str, dict[str, object]]]) -> None:
        super().__init__(f"{filename}: {len(problems)} bad line(s), nothing loaded", key="catalog.error.rejected")
        self.filename = filename
        self.problems = problems

    def messages(self) -> list[str]:
        from emr.i18n import t

        return [t(key, line=line, **params) for line, key, params in self.problems]
