"""The viewer package's exception tree (one root, mapped to HTTP at the edge)."""

from __future__ import annotations

__all__ = ["AccessDenied", "ViewerError", "ViewerNotBuilt"]


class ViewerError(Exception):
    """Root of everything the viewer package raises."""


class ViewerNotBuilt(ViewerError):
    """``viewer/dist`` is missing: ``npm ci && npm run build`` has not run."""


class AccessDenied(ViewerError):
    """Raised by an access-check callable to say *why* a study is refused.

    ``reason`` is what the browser shows a message for: ``"login"`` (no
    session: HTTP 401), ``"forbidden"`` (no right to this patient: 403) or
    ``"expired"`` (a share link that expired or was revoked: 410).
    """

    STATUS = {"login": 401, "forbidden": 403, "expired": 410}

    def __init__(self, reason: str = "forbidden") -> None:
        if reason not in self.STATUS:
            raise ValueError(f"unknown access-denied reason {reason!r}")
        super().__init__(reason)
        self.reason = reason

    @property
    def status(self) -> int:
        return self.STATUS[self.reason]
