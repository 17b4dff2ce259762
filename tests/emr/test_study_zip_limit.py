"""Study ZIPs are built at most MAX_CONCURRENT_BUILDS at a time; others hear "busy" at once."""

from __future__ import annotations

import threading
import zipfile
from typing import Any

import pytest

from emr.core.exceptions import Busy
from emr.imaging import dicomdir
from tests.dicom_factory import ct_instance


class SlowStore:
    """One-instance study whose file is served only when ``release`` is set (a slow Orthanc)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.blob = ct_instance(patient_id="ZIP-1")

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        return [{"ID": "series-1"}]

    def series_instances(self, series_id: str) -> list[dict[str, Any]]:
        return [{"ID": "instance-1"}]

    def instance_file(self, instance_id: str) -> bytes:
        self.started.release()
        assert self.release.wait(30)
        return self.blob


def test_third_download_is_refused_while_two_are_built_then_served() -> None:
    store = SlowStore()
    results: list[Any] = []

    def build() -> None:
        results.append(dicomdir.study_zip(store, "study-1"))

    builders = [threading.Thread(target=build) for _ in range(dicomdir.MAX_CONCURRENT_BUILDS)]
    for b in builders:
        b.start()
    for _ in builders:
        assert store.started.acquire(timeout=30)  # both builds are under way
    with pytest.raises(Busy) as info:
        dicomdir.study_zip(store, "study-1")
    assert info.value.http_status == 503 and info.value.key == "share.error.busy"
    store.release.set()
    for b in builders:
        b.join(30)
    assert len(results) == dicomdir.MAX_CONCURRENT_BUILDS
    # Once they are done, the next request is served, and the ZIP holds a DICOMDIR.
    out = dicomdir.study_zip(store, "study-1")
    with zipfile.ZipFile(out) as zf:
        assert "DICOMDIR" in zf.namelist()
    for f in [*results, out]:
        f.close()
