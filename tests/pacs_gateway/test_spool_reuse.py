"""Forwarded spool files overwritten by the next received instance (Spool.recycle / Spool.reuse).

A reused file still holds the bytes of the instance it carried before: what
reaches the store must be the new instance exactly, whatever the old file's
size, and a file another forwarder still reads must never be handed out.
Real DCMTK storescu into a real gateway; the store records what it gets.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pacs_gateway import Gateway
from pacs_gateway.forwarder import Forwarder
from pacs_gateway.spool import Spool
from storage import UploadResult
from tests.corpus import make_ct_series
from tests.helpers import wait_for

from .conftest import dcmtk
from .test_fast_store import RecordingStore


def _data_set(part10: bytes) -> bytes:
    """The bytes after the File Meta Information group (preamble, DICM, group length, group)."""
    group_length = struct.unpack_from("<L", part10, 132 + 8)[0]
    return part10[132 + 12 + group_length:]


def _send(port: int, path: Path) -> None:
    result = dcmtk("storescu", "-aec", "FILMLESS", "127.0.0.1", str(port), str(path))
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("larger_first", [True, False], ids=["smaller-into-larger", "larger-into-smaller"])
def test_an_instance_in_a_reused_file_arrives_exactly(
    make_gateway: Callable[..., Gateway], tmp_path: Path, larger_first: bool
) -> None:
    store = RecordingStore()
    gw = make_gateway(store, fast_store=True)
    big = make_ct_series(tmp_path / "big", 1, rows=256, cols=256, patient_id="BIG")[0]
    small = make_ct_series(tmp_path / "small", 1, rows=16, cols=16, patient_id="SMALL")[0]
    first, second = (big, small) if larger_first else (small, big)

    _send(gw.settings.port, first)
    wait_for(lambda: gw.forwarder.pending == 0 and len(store.uploads) == 1, timeout=30, what="the first upload")
    # Forwarded, the first file waits in spare/ for the next instance instead of being deleted.
    wait_for(lambda: len(list(gw.spool.spare.iterdir())) == 1, timeout=10, what="the forwarded file kept")
    before = next(gw.spool.spare.iterdir()).stat()
    assert (before.st_size > 100_000) == larger_first

    _send(gw.settings.port, second)
    wait_for(lambda: len(store.uploads) == 2 and gw.forwarder.pending == 0, timeout=30, what="the second upload")
    # The same file (inode) carried the second instance, cut to its length, and is spare again.
    wait_for(lambda: len(list(gw.spool.spare.iterdir())) == 1, timeout=10, what="the file kept again")
    after = next(gw.spool.spare.iterdir()).stat()
    assert after.st_ino == before.st_ino
    assert (after.st_size < 10_000) == larger_first and (after.st_size > before.st_size) != larger_first
    # Byte for byte, to the end: nothing of the first instance after the second one.
    assert sorted(_data_set(data) for data in store.uploads.values()) == \
        sorted(_data_set(path.read_bytes()) for path in (big, small))


def test_spare_files_are_dropped_at_start_up_and_large_files_not_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    (spool.spare / "left-over.spare").write_bytes(b"x" * 100)
    spool.open()
    assert not list(spool.spare.iterdir())

    large = spool.ready / "large.dcm"
    with open(large, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # a multi-frame instance: giving its space back beats reusing it
    spool.recycle(large)
    assert not large.exists()
    assert not list(spool.spare.iterdir())
    assert not spool.reuse(spool.incoming / "next.tmp")


class _BlockingStore:
    """Uploads wait until released, so two workers can hold the same spool file at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.uploads: list[bytes] = []
        self._lock = threading.Lock()

    def upload(self, data: bytes | object) -> UploadResult:
        raw = data if isinstance(data, bytes) else data.read()  # type: ignore[attr-defined]
        self.started.release()
        self.release.wait(30)
        with self._lock:
            self.uploads.append(raw)
        return UploadResult(instance_id="x", study_id="", series_id="", patient_id="", already_stored=False)

    def set_study_metadata(self, study_id: str, key: str, value: str) -> None:
        pass


def test_a_file_two_workers_forward_at_once_is_deleted_not_reused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    path = make_ct_series(spool.ready, 1, rows=16, cols=16)[0]
    queued = spool.ready / "00000000000000000001-1-abc-00000000.dcm"
    path.rename(queued)
    store = _BlockingStore()
    forwarder = Forwarder(spool, store, workers=2)
    forwarder.start([queued, queued])  # e.g. a backlog listed twice at start-up
    try:
        assert store.started.acquire(timeout=10) and store.started.acquire(timeout=10)
        store.release.set()
        wait_for(lambda: forwarder.pending == 0, timeout=10, what="both uploads")
    finally:
        forwarder.stop()
    assert len(store.uploads) == 2
    assert not queued.exists()
    # Reusing it could have overwritten a file the other worker was still reading.
    assert not list(spool.spare.iterdir())
    assert not spool.reuse(spool.incoming / "next.tmp")
