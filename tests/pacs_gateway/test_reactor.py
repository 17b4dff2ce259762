"""The gateway's associations wait for work instead of polling (pacs_gateway/reactor.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pacs_gateway import Gateway
from pacs_gateway.reactor import IDLE_CHECK, EventDrivenAssociation, EventDrivenDUL
from storage import OrthancStore


def test_the_copied_loops_match_the_locked_pynetdicom() -> None:
    # reactor.py repeats pynetdicom 3.0's two reactor loops with other waits;
    # a new pynetdicom must be compared with them before it is locked.
    assert pynetdicom.__version__.startswith("3.0."), pynetdicom.__version__


def test_an_idle_association_sleeps_and_still_answers(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway(orthanc)
    naps: dict[int, int] = {}
    lock = threading.Lock()
    original = EventDrivenDUL._sleep_until_work

    def counted(self: EventDrivenDUL) -> None:
        with lock:
            naps[id(self)] = naps.get(id(self), 0) + 1
        original(self)

    monkeypatch.setattr(EventDrivenDUL, "_sleep_until_work", counted)
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert assoc.is_established
    served: list[Any] = []
    try:
        assert assoc.send_c_echo().Status == 0x0000
        with lock:
            naps.clear()
        idle = 10 * IDLE_CHECK
        time.sleep(idle)
        with lock:
            during_idle = dict(naps)
        # Polling every millisecond would be hundreds of rounds per DUL; waiting
        # in select wakes about once per IDLE_CHECK.
        assert len(during_idle) == 1  # the gateway's side; the requestor here is pynetdicom's own
        assert all(n <= 3 * idle / IDLE_CHECK for n in during_idle.values()), during_idle
        served.append(assoc.send_c_echo())
        with gw._handlers._lock:
            accepted = list(gw._handlers._assocs)
    finally:
        assoc.release()
    assert served[0].Status == 0x0000
    assert len(accepted) == 1 and isinstance(accepted[0], EventDrivenAssociation)
