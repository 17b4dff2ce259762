"""Forwarding while modalities send: receiving first, and the starvation guard.

By default no upload runs while an association is sending (the modality
hears "stored" sooner; on a shared machine forwarding afterwards costs no
more CPU). An instance that has waited ``forward_hold_limit`` seconds is
forwarded anyway, so a modality that never closes its association still
reaches Orthanc, and an association that has sent nothing for
``forward_idle_after`` seconds no longer counts as sending. Real pynetdicom
associations into a real gateway; the store records what the forwarders
upload.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.association import Association

from pacs_gateway import Gateway
from tests.corpus import make_ct_series
from tests.helpers import wait_for

from .test_fast_store import RecordingStore


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _sending(make_gateway: Callable[..., Gateway], tmp_path: Path, count: int,
             **settings: Any) -> tuple[RecordingStore, Gateway, list[Path], Association]:
    """A gateway with these settings uploading into a recording store, ``count`` small CT slices,
    and a modality's open association to the gateway."""
    store = RecordingStore()
    gw = make_gateway(store, **settings)
    paths = make_ct_series(tmp_path / "ct", count, rows=16, cols=16)
    ae = AE(ae_title="CT24X7")
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert assoc.is_established
    return store, gw, paths, assoc


def test_a_modality_that_never_stops_sending_still_reaches_orthanc(
    make_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    store, _, paths, assoc = _sending(make_gateway, tmp_path, 3, forwarders_while_receiving=0,
                                      forward_hold_limit=0.2)
    try:
        for path in paths:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
            # The association stays open (still "receiving"): the guard forwards the instance anyway.
            wait_for(partial(operator.contains, store.uploads, _uid(path)), timeout=30,
                     what="an upload while receiving")
            assert assoc.is_established
    finally:
        assoc.release()
    assert set(store.uploads) == {_uid(p) for p in paths}


def test_while_a_modality_sends_nothing_is_uploaded_until_it_closes(
    make_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    # Idle never comes here: the rule under test is "sending", not how long a pause makes it idle.
    store, gw, paths, assoc = _sending(make_gateway, tmp_path, 4, forwarders_while_receiving=0,
                                       forward_hold_limit=3600, forward_idle_after=3600)
    try:
        assert [assoc.send_c_store(pydicom.dcmread(p)).Status for p in paths] == [0] * 4
        assert gw.stats.received == 4
        assert not store.uploads, "uploaded while the modality was still sending"
    finally:
        assoc.release()
    wait_for(lambda: len(store.uploads) == 4, timeout=30, what="the uploads once the association closed")
    assert set(store.uploads) == {_uid(p) for p in paths}


def test_one_upload_while_receiving_when_configured(
    make_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    """``forwarders_while_receiving=1`` (the former default) still forwards during the association."""
    store, _, (path,), assoc = _sending(make_gateway, tmp_path, 1, forwarders_while_receiving=1,
                                        forward_hold_limit=3600)
    try:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
        wait_for(lambda: _uid(path) in store.uploads, timeout=30, what="an upload while receiving")
        assert assoc.is_established
    finally:
        assoc.release()


def test_an_association_left_open_but_idle_does_not_hold_its_images_back(
    make_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    """A modality that keeps its association open after a series (to ask for storage commitment,
    or for the next patient) gets its images into Orthanc once it has been idle a moment, not after
    the hold limit (an hour here; it was 5 s by default and every commitment waited it out)."""
    store, gw, paths, assoc = _sending(make_gateway, tmp_path, 3, forwarders_while_receiving=0,
                                       forward_hold_limit=3600, forward_idle_after=0.3)
    try:
        assert [assoc.send_c_store(pydicom.dcmread(p)).Status for p in paths] == [0] * 3
        wait_for(lambda: len(store.uploads) == 3, timeout=30, what="the uploads while the association idles")
        assert assoc.is_established
        assert set(store.uploads) == {_uid(p) for p in paths}
        # It may send again on the same association; the next pause lets that instance through too.
        more = make_ct_series(tmp_path / "ct2", 1, rows=16, cols=16)
        assert assoc.send_c_store(pydicom.dcmread(more[0])).Status == 0
        wait_for(lambda: len(store.uploads) == 4, timeout=30, what="the next upload after the next pause")
        assert gw.stats.received == 4
    finally:
        assoc.release()
