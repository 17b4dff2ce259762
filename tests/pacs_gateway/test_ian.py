"""Instance Availability Notification (IHE RAD-49): subscribers hear when a study is complete in storage.

Real Orthanc (StableAge 1 s), real gateway, a pynetdicom IAN SCP as the
subscriber (DCMTK has none).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, InstanceAvailabilityNotification  # type: ignore[attr-defined]

from pacs_gateway import Gateway
from storage import OrthancProcess
from tests.corpus import make_ct_series
from tests.helpers import free_port, wait_for


class Subscriber:
    """A RIS taking IAN N-CREATEs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.notes: list[Dataset] = []
        self.got = threading.Event()
        self._server: Any = None

    def _on_create(self, event: evt.Event) -> tuple[int, Dataset]:
        self.notes.append(event.attribute_list)
        self.got.set()
        return 0x0000, Dataset()

    def start(self) -> None:
        ae = AE(ae_title="RIS01")
        ae.add_supported_context(InstanceAvailabilityNotification)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_N_CREATE, self._on_create)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    sub = Subscriber()
    yield sub
    sub.stop()


def _send(port: int, paths: list[Path]) -> set[str]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS")
    uids = set()
    for path in paths:
        ds = pydicom.dcmread(path)
        assert int(assoc.send_c_store(ds).Status) == 0
        uids.add(str(ds.SOPInstanceUID))
    assoc.release()
    return uids


def _referenced(note: Dataset) -> set[str]:
    return {str(ref.ReferencedSOPInstanceUID) for series in note.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence}


def test_a_stable_study_is_notified_with_every_instance(
    fresh_orthanc: Callable[..., OrthancProcess], make_gateway: Callable[..., Gateway], tmp_path: Path,
    subscriber: Subscriber,
) -> None:
    proc = fresh_orthanc(config_overrides={"StableAge": 1})
    subscriber.start()
    gw = make_gateway(proc.store(), ian_subscribers=(f"RIS01@127.0.0.1:{subscriber.port}",))
    wait_for(lambda: (gw.settings.spool_dir / "ian" / "feed.position").exists(), timeout=10, what="feed position")
    paths = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32, patient_name="Phạm^Văn Bình")
    sent = _send(gw.settings.port, paths)
    assert subscriber.got.wait(60), "no IAN"
    note = subscriber.notes[0]
    assert str(note.StudyInstanceUID) == str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    assert _referenced(note) == sent
    ref = note.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.InstanceAvailability == "ONLINE" and ref.RetrieveAETitle == "FILMLESS"
    assert ref.ReferencedSOPClassUID == CTImageStorage


def test_a_subscriber_that_was_down_is_notified_after_a_restart(
    fresh_orthanc: Callable[..., OrthancProcess], make_gateway: Callable[..., Gateway], tmp_path: Path,
    subscriber: Subscriber,
) -> None:
    proc = fresh_orthanc(config_overrides={"StableAge": 1})
    spool = tmp_path / "spool"
    subscribers = (f"RIS01@127.0.0.1:{subscriber.port}",)
    gw = make_gateway(proc.store(), spool_dir=spool, ian_subscribers=subscribers)
    wait_for(lambda: (spool / "ian" / "feed.position").exists(), timeout=10, what="feed position")
    sent = _send(gw.settings.port, make_ct_series(tmp_path / "ct", 2, rows=32, cols=32))
    wait_for(lambda: any((spool / "ian").glob("*.json")), timeout=60, what="the notification kept on disk")
    gw.stop()
    subscriber.start()
    make_gateway(proc.store(), spool_dir=spool, ian_subscribers=subscribers)
    assert subscriber.got.wait(30), "the kept notification was not delivered after the restart"
    assert _referenced(subscriber.notes[0]) == sent
    wait_for(lambda: not any((spool / "ian").glob("*.json")), timeout=10, what="notification done")
