"""direct_move.py without a network: which presentation contexts a C-MOVE proposes, and reading ahead."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage

from pacs_gateway.commitment import ReturnAddress
from pacs_gateway.direct_move import DirectPlan, MemoryPrefetch
from storage import StoredInstance
from storage.client import _room
from tests.corpus import make_ct_series


def _listed(orthanc_id: str, series_id: str, size: int) -> StoredInstance:
    """As ``list_instances`` lists it: no SOP class or transfer syntax yet."""
    return StoredInstance(orthanc_id, series_id, sop_instance_uid="", sop_class_uid="", transfer_syntax="",
                          size=size)


class _Store:
    """Files by Orthanc ID; the metadata of any other instance says MR in JPEG."""

    def __init__(self, files: dict[str, bytes], broken: frozenset[str] = frozenset()) -> None:
        self.files = files
        self.broken = broken
        self.reads: list[str] = []
        self.described: list[list[str]] = []

    def read_instance_into(self, orthanc_id: str, buffer: bytearray | None) -> memoryview:
        self.reads.append(orthanc_id)
        if orthanc_id in self.broken:
            raise OSError("storage unavailable")
        data = self.files[orthanc_id]
        view = _room(buffer, len(data))  # as OrthancStore allocates
        view[:] = data
        return view

    def describe_instances(self, instances: list[Any], workers: int = 4) -> list[Any]:
        self.described.append([i.orthanc_id for i in instances])
        kind = {"0": (CTImageStorage, ExplicitVRLittleEndian)}
        return [replace(i, sop_class_uid=kind.get(i.orthanc_id, (MRImageStorage, JPEGBaseline8Bit))[0],
                        transfer_syntax=kind.get(i.orthanc_id, (MRImageStorage, JPEGBaseline8Bit))[1])
                for i in instances]


def _plan(store: _Store, listed: list[StoredInstance]) -> DirectPlan:
    heads: Future[list[Any]] = Future()
    heads.set_result(store.describe_instances(listed[1:2]))
    prefetch = MemoryPrefetch(store, listed)
    return DirectPlan(store, listed, ReturnAddress("WS01", "127.0.0.1", 104), local_aet="FILMLESS",
                      originator_aet="WS01", originator_id=1, timeout=5, prefetch=prefetch, heads=heads,
                      audit=lambda: None, prepare=lambda remaining: ([], None, []))


def _study(tmp_path: Path) -> tuple[dict[str, bytes], list[StoredInstance]]:
    paths = make_ct_series(tmp_path, 3, rows=32, cols=32, patient_name="Đinh^Thị Lan")
    files = {str(n): p.read_bytes() for n, p in enumerate(paths)}
    listed = [_listed(n, series, len(files[n])) for n, series in (("0", "a"), ("1", "b"), ("2", "b"))]
    return files, listed


def test_the_first_file_and_the_other_series_heads_give_the_contexts(tmp_path: Path) -> None:
    files, listed = _study(tmp_path)
    store = _Store(files)
    plan = _plan(store, listed)
    try:
        contexts = plan.contexts()
    finally:
        plan.prefetch.close()
    assert set(contexts) == {
        (CTImageStorage, ExplicitVRLittleEndian), (CTImageStorage, ImplicitVRLittleEndian),  # from file 0
        (MRImageStorage, JPEGBaseline8Bit),  # the second series' head, as stored
        (MRImageStorage, ExplicitVRLittleEndian), (MRImageStorage, ImplicitVRLittleEndian),
    }
    assert store.described == [["1"]]  # the first series needed no look-up
    assert store.reads[0] == "0"


def test_an_unreadable_first_file_is_described_instead(tmp_path: Path) -> None:
    files, listed = _study(tmp_path)
    store = _Store(files, broken=frozenset({"0"}))
    plan = _plan(store, listed)
    try:
        contexts = plan.contexts()
        taken = plan.prefetch.take(0)
    finally:
        plan.prefetch.close()
    assert (CTImageStorage, ExplicitVRLittleEndian) in contexts
    assert store.described == [["1"], ["0"]]
    assert isinstance(taken, OSError)  # instance 0 is then reported failed, the others go


def test_reading_ahead_reuses_its_buffers_and_stays_within_its_window(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path, 12, rows=32, cols=32, patient_name="Đinh^Thị Lan")
    files = {str(n): p.read_bytes() for n, p in enumerate(paths)}
    listed = [_listed(str(n), "a", len(files[str(n)])) for n in range(12)]
    store = _Store(files)
    prefetch = MemoryPrefetch(store, listed, window=3)
    buffers = set()
    try:
        for n in range(12):
            view = prefetch.take(n)
            assert isinstance(view, memoryview) and bytes(view) == files[str(n)]
            assert len(prefetch.queued) <= 3
            buffers.add(id(view.obj))
            view.release()
    finally:
        prefetch.close()
    assert store.reads == [str(n) for n in range(12)]
    assert len(buffers) <= 4  # the window and the one being sent, reused
