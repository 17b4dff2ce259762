"""The file pynetdicom streams a C-STORE data set into, made to survive a full disk.

Why: with ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each P-DATA
fragment into a ``NamedTemporaryFile`` as it arrives. When the spool's file
system fills up in the middle of an instance, that ``write`` raises inside
pynetdicom's DIMSE decoding and the association is dropped: the modality
sees a broken connection instead of a status it can act on (issue 12, §5).

:class:`ReceiveFile` takes the temporary file's place. The first write that
fails is remembered, the partial file is truncated at once (giving the space
back) and the rest of the instance is read off the network and discarded.
The C-STORE handler then sees :attr:`ReceiveFile.error` and answers 0xA700
(Refused: Out of Resources); the association stays usable.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

from pynetdicom import dimse_messages

__all__ = ["ReceiveFile", "install", "receive_error"]

_installed = threading.Lock()


class ReceiveFile:
    """A ``NamedTemporaryFile(delete=False)`` look-alike whose write failures are kept, not raised."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tmp = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115 - closed by pynetdicom
        self.name: str = self._tmp.name
        self.error: OSError | None = None

    @property
    def file(self) -> ReceiveFile:
        # pynetdicom calls ``.file.flush()`` after every fragment.
        return self

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
        try:
            # Give the space back now; the instance is refused anyway.
            os.ftruncate(self._tmp.fileno(), 0)
        except (OSError, ValueError):
            pass

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is None:
            try:
                return int(self._tmp.file.write(data))
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._tmp.file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        try:
            self._tmp.close()
        except OSError as exc:
            # Buffered bytes that could not be written: the file is incomplete.
            self._fail(exc)
            try:
                self._tmp.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return int(self._tmp.fileno())


def install() -> None:
    """Make pynetdicom create :class:`ReceiveFile` objects (process-wide, idempotent)."""
    with _installed:
        dimse_messages.NamedTemporaryFile = ReceiveFile  # type: ignore[misc,assignment]


def receive_error(request: Any) -> OSError | None:
    """The write error met while receiving ``request``'s data set, if any."""
    received = getattr(request, "_dataset_file", None)
    error = getattr(received, "error", None)
    return error if isinstance(error, OSError) else None
