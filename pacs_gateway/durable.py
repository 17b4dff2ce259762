"""Small JSON state files that survive a crash the moment a peer is told "success".

Used for MPPS steps and storage commitment requests: the modality forgets
what it asked once it hears success, so the request must already be on disk.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .exceptions import OutOfResources

__all__ = ["write_json", "DurableQueue"]


def write_json(path: Path, data: dict[str, Any], what: str) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    Temp file, fsync, rename, fsync of the folder; ``OutOfResources`` (naming
    ``what``) when the disk refuses, so the caller answers the peer with a
    failure instead of a success it cannot keep.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutOfResources(f"cannot keep {what} in {path.parent}: {exc.strerror}") from exc


class DurableQueue:
    """A folder of JSON files still to act on, and the thread that acts on them.

    Subclasses implement :meth:`_work_due` (one pass over the folder, returning
    the seconds until the next pass is due, or ``None`` to sleep until
    :meth:`wake`). MPPS status changes and storage commitment reports share it.
    """

    thread_name = "durable-queue"

    def __init__(self, folder: Path) -> None:
        self.queue_dir = Path(folder)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_worker(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    @property
    def pending(self) -> int:
        """Files in the queue (work not done yet)."""
        try:
            return sum(1 for _ in self.queue_dir.glob("*.json"))
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self._work_due()
            self._wake.wait(wait)

    def _work_due(self) -> float | None:
        raise NotImplementedError
