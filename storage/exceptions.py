"""One exception tree for everything that can go wrong talking to Orthanc.

Callers decide on the *kind* of failure: :class:`StorageUnavailable` is
transient (retry later, nothing is lost), :class:`StorageRejected` is final
for that input (quarantine it), :class:`NotFound` is a missing resource.
Every exception carries the URL it concerned.
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "StorageUnavailable",
    "StorageTimeout",
    "StorageRejected",
    "NotFound",
    "LauncherError",
]


class StorageError(Exception):
    """Root of all storage errors."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} ({self.url})" if self.url else self.message


class StorageUnavailable(StorageError):
    """Orthanc cannot be reached or answered with a server error: try again."""


class StorageTimeout(StorageUnavailable):
    """Orthanc accepted the connection but did not answer in time."""


class StorageRejected(StorageError):
    """Orthanc refused the request for what it contains (e.g. not DICOM)."""


class NotFound(StorageError):
    """The study, series or instance does not exist in Orthanc."""


class LauncherError(StorageError):
    """The managed Orthanc could not be configured or started."""
