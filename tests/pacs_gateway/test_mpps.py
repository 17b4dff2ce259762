"""Modality Performed Procedure Step: N-CREATE / N-SET from a pynetdicom SCU (as a modality sends them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from pacs_gateway import Gateway
from storage import OrthancStore
from tests.helpers import wait_for

from .conftest import gateway_settings

ACCESSION = "A2001"
STUDY_UID = "1.2.826.0.1.3680043.8.498.2001"


class Recorder:
    """An ``mpps`` callable that records events; fails the first ``fail`` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.fail:
                raise ConnectionError("EMR database down")
            self.events.append(event)

    def statuses(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["sop_instance_uid"], e["status"]) for e in self.events]


@pytest.fixture
def gateways(tmp_path: Path, orthanc: OrthancStore) -> Iterator[Any]:
    started: list[Gateway] = []

    def make(mpps: Any = None, spool: str = "spool", port: int | None = None) -> Gateway:
        settings = gateway_settings(spool_dir=tmp_path / spool)
        if port is not None:
            from dataclasses import replace

            settings = replace(settings, port=port)
        gw = Gateway(settings, orthanc, mpps=mpps)
        gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _associate(gw: Gateway, aet: str = "CT01") -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert assoc.is_established
    return assoc


def _in_progress(accession: str = ACCESSION, study_uid: str = STUDY_UID, status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    step = Dataset()
    step.AccessionNumber = accession
    step.StudyInstanceUID = study_uid
    step.ScheduledProcedureStepID = "SPS1"
    step.RequestedProcedureID = accession
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = "Nguyễn^Thị Hồng Nhung"
    ds.PatientID = "BN001"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261123"
    ds.PerformedProcedureStepStartTime = "093000"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def _final(status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261123"
    ds.PerformedProcedureStepEndTime = "094512"
    series = Dataset()
    series.PerformingPhysicianName = "Trần^Văn Đức"
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def _create(assoc: Association, uid: str, ds: Dataset) -> int:
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
    return int(status.Status)


def _set(assoc: Association, uid: str, ds: Dataset) -> tuple[int, str]:
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    return int(status.Status), str(status.get("ErrorComment", ""))


def test_in_progress_then_completed_reaches_the_emr_callable(gateways: Any) -> None:
    mpps = Recorder()
    gw = gateways(mpps)
    uid = generate_uid()
    assoc = _associate(gw)
    try:
        assert _create(assoc, uid, _in_progress()) == 0x0000
        wait_for(lambda: mpps.statuses() == [(uid, "IN PROGRESS")], timeout=10, what="IN PROGRESS event")
        first = mpps.events[0]
        assert first["accession_numbers"] == [ACCESSION]
        assert first["study_instance_uids"] == [STUDY_UID]
        assert first["modality"] == "CT" and first["station_ae"] == "CT01"
        assert first["start"] == "2026-11-23T09:30:00" and first["end"] == ""
        assert _set(assoc, uid, _final("COMPLETED"))[0] == 0x0000
    finally:
        assoc.release()
    wait_for(lambda: len(mpps.statuses()) == 2, timeout=10, what="COMPLETED event")
    done = mpps.events[1]
    assert done["status"] == "COMPLETED"
    assert done["end"] == "2026-11-23T09:45:12"
    assert done["performing_physician"] == "Trần^Văn Đức"
    assert done["accession_numbers"] == [ACCESSION]  # carried over from the N-CREATE
    assert gw.mpps_store.pending == 0


def test_invalid_requests_get_the_standard_statuses(gateways: Any) -> None:
    mpps = Recorder()
    gw = gateways(mpps)
    uid = generate_uid()
    assoc = _associate(gw)
    try:
        # N-CREATE must start IN PROGRESS (0x0106 invalid attribute value).
        assert _create(assoc, generate_uid(), _in_progress(status="COMPLETED")) == 0x0106
        # ... and must say which order it performs (0x0120 missing attribute).
        no_step = _in_progress()
        del no_step.ScheduledStepAttributesSequence
        assert _create(assoc, generate_uid(), no_step) == 0x0120
        # N-SET of an instance never created: no such object instance.
        assert _set(assoc, generate_uid(), _final())[0] == 0x0112
        assert _create(assoc, uid, _in_progress()) == 0x0000
        # Duplicate N-CREATE.
        assert _create(assoc, uid, _in_progress()) == 0x0111
        # A status the standard does not know.
        assert _set(assoc, uid, _final("PAUSED"))[0] == 0x0106
        # An update while IN PROGRESS without status change is fine.
        update = Dataset()
        update.PerformedProcedureStepDescription = "CT sọ não"
        assert _set(assoc, uid, update)[0] == 0x0000
        assert _set(assoc, uid, _final("DISCONTINUED"))[0] == 0x0000
        # After a final state: processing failure with a comment.
        status, comment = _set(assoc, uid, _final("COMPLETED"))
        assert status == 0x0110
        assert "DISCONTINUED" in comment
        # The association survived every refusal.
        assert assoc.is_established
    finally:
        assoc.release()
    wait_for(lambda: len(mpps.statuses()) == 2, timeout=10, what="two events")
    assert mpps.statuses() == [(uid, "IN PROGRESS"), (uid, "DISCONTINUED")]
    assert gw.mpps_store.get(uid)["status"] == "DISCONTINUED"


def test_restart_keeps_the_instance_and_queued_changes(gateways: Any) -> None:
    gw = gateways(None)  # no EMR: accepted and kept, only logged
    uid = generate_uid()
    assoc = _associate(gw)
    assert _create(assoc, uid, _in_progress()) == 0x0000
    assoc.release()
    port = gw.settings.port
    gw.stop()

    mpps = Recorder()
    gw2 = gateways(mpps, port=port)
    assert gw2.mpps_store.get(uid)["status"] == "IN PROGRESS"
    assoc = _associate(gw2)
    try:
        assert _set(assoc, uid, _final("COMPLETED"))[0] == 0x0000
        assert _set(assoc, uid, _final("COMPLETED"))[0] == 0x0110
    finally:
        assoc.release()
    wait_for(lambda: mpps.statuses() == [(uid, "COMPLETED")], timeout=10, what="COMPLETED after restart")
    assert mpps.events[0]["accession_numbers"] == [ACCESSION]


def test_failing_callable_is_retried_in_order_and_survives_restart(gateways: Any) -> None:
    failing = Recorder(fail=10**6)
    gw = gateways(failing)
    uid = generate_uid()
    assoc = _associate(gw)
    try:
        assert _create(assoc, uid, _in_progress()) == 0x0000
        assert _set(assoc, uid, _final("COMPLETED"))[0] == 0x0000
    finally:
        assoc.release()
    wait_for(lambda: failing.attempts >= 3, timeout=10, what="retries")
    # Retries go to the oldest change of a step first: COMPLETED never overtakes IN PROGRESS.
    assert failing.events == [] and gw.mpps_store.pending == 2
    port = gw.settings.port
    gw.stop()

    # The EMR recovers after two more failures, in a restarted gateway.
    mpps = Recorder(fail=2)
    gateways(mpps, port=port)
    wait_for(lambda: len(mpps.statuses()) == 2, timeout=15, what="delivery after retries")
    assert mpps.statuses() == [(uid, "IN PROGRESS"), (uid, "COMPLETED")]
    assert mpps.attempts == 4


def test_finished_steps_are_forgotten_after_the_keep_period(tmp_path: Path) -> None:
    from pacs_gateway.mpps import MppsStore

    store = MppsStore(tmp_path / "mpps", keep_final=30 * 86400)
    store.open()
    try:
        done, running = generate_uid(), generate_uid()
        store.create(done, _in_progress(accession="A1"), "CT01")
        store.update(done, _final())
        store.create(running, _in_progress(accession="A2"), "CT01")
        assert store.prune() == 0  # finished just now: kept
        assert store.prune(now=time.time() + 31 * 86400) == 1
        assert store.get(done) is None and not (tmp_path / "mpps" / "instances" / f"{done}.json").exists()
        assert store.get(running) is not None  # still in progress: never forgotten
    finally:
        store.close()
    reopened = MppsStore(tmp_path / "mpps")
    reopened.open()
    try:
        assert reopened.get(done) is None and reopened.get(running) is not None
    finally:
        reopened.close()
