"""Small JSON state files that survive a crash the moment a peer is told "success".

Used for MPPS steps and storage commitment requests: the modality forgets
what it asked once it hears success, so the request must already be on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .exceptions import OutOfResources

__all__ = ["write_json"]


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
