"""Test-only runner: one EMR process's background jobs (linker, audit anchor), for the run-once test.

``python -m tests.emr.run_jobs SETTINGS_JSON START_AT SECONDS`` starts the real
linker and anchor scheduler threads at ``START_AT`` (epoch seconds, so that
several processes begin together), lets them run ``SECONDS`` with short
periods, stops them and prints what this process did as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from emr.access.anchor_scheduler import AnchorScheduler
from emr.core.settings import EmrSettings
from emr.imaging.linker import Linker
from storage import OrthancStore


def main(argv: list[str]) -> None:
    raw = json.loads(Path(argv[0]).read_text("utf-8"))
    start_at, seconds = float(argv[1]), float(argv[2])
    settings = EmrSettings(data_dir=Path(raw["data_dir"]), database_url=raw["database_url"], tsa_url=raw["tsa_url"])
    store = OrthancStore(raw["orthanc_url"], raw["orthanc_user"], raw["orthanc_password"])
    time.sleep(max(0.0, start_at - time.time()))
    linker = Linker(settings, store, interval=0.02).start()
    scheduler = AnchorScheduler(settings, initial_delay=0.0, check_interval=0.02).start()
    time.sleep(seconds)
    linker.stop()
    scheduler.stop()
    print(json.dumps({"linker_passes": linker.passes, "linker_skipped": linker.skipped,
                      "tsa_requests": scheduler.attempts}))


if __name__ == "__main__":
    main(sys.argv[1:])
