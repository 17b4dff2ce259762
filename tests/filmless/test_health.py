"""`filmless check` reports a gateway queue that has stopped draining."""

from __future__ import annotations

import os
import time
from pathlib import Path

from filmless.health import STUCK_AFTER_S, spool_health
from filmless.settings import load


def _queued(folder: Path, name: str, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"{}")
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_counts_and_stuck_queues_are_reported(tmp_path: Path) -> None:
    settings = load({"FILMLESS_DATA_DIR": str(tmp_path)})
    spool = settings.gateway.spool_dir
    healthy, detail = spool_health(settings)
    assert healthy and "spool backlog 0" in detail  # no spool yet: nothing waits

    _queued(spool / "ready", "a.dcm", 60)
    _queued(spool / "mpps" / "outbox", "1.json", 30)
    _queued(spool / "commitment", "1.2.3.json", 10)
    healthy, detail = spool_health(settings)
    assert healthy, detail  # busy, not stuck
    assert "spool backlog 1" in detail and "MPPS changes waiting for the EMR 1" in detail
    assert "storage commitment reports waiting 1" in detail

    _queued(spool / "ready", "b.dcm", STUCK_AFTER_S + 600)
    _queued(spool / "commitment", "1.2.4.json", 3 * STUCK_AFTER_S)
    healthy, detail = spool_health(settings)
    assert not healthy
    assert "STUCK" in detail and "images not yet in Orthanc waiting for 1.2 h (is Orthanc up?)" in detail
    assert "storage commitment reports waiting for 3.0 h" in detail
    assert "MPPS changes waiting for 0" not in detail and "EMR database" not in detail  # that one moves
