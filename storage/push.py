"""Orthanc sending stored instances to a DICOM peer itself (its C-STORE SCU, as a job).

Why: a C-MOVE that the gateway performs in Python reads every file over
HTTP and writes it again to the workstation, three to four milliseconds of
interpreter time per instance; Orthanc's own C-STORE SCU reads its files
from disk and sends them in C++, as its own C-MOVE does. The gateway keeps
the decisions (who may retrieve what, to which destination, the audit) and
hands Orthanc the list of instances; Orthanc's DICOM server stays off, as
it only acts as a client here.

Orthanc reports a job's progress as a rounded percentage;
:attr:`PushProgress.sent` turns it into the number of instances certainly
sent (a lower bound, exact up to 100 instances), so a caller that must
report failures per instance can send the rest itself after a failure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .exceptions import NotFound

if TYPE_CHECKING:  # pragma: no cover
    from .client import OrthancStore

__all__ = ["PushJob", "PushProgress", "peer_name"]

PushState = Literal["pending", "running", "done", "failed"]
_STATES: dict[str, PushState] = {"Pending": "pending", "Running": "running", "Success": "done",
                                 "Failure": "failed", "Paused": "pending", "Retry": "pending"}


@dataclass(frozen=True)
class PushProgress:
    """Where a push job is: ``sent`` instances have certainly reached the peer, in the order given."""

    state: PushState
    sent: int
    total: int
    error: str = ""


def sent_lower_bound(percent: int, total: int) -> int:
    """Instances certainly done when Orthanc says ``percent`` (``round(100 * done / total)``) of ``total``.

    round(x) = p means x >= p - 0.5, so done >= (2p - 1) * total / 200; the
    last instance only counts once the job says it succeeded.
    """
    if percent <= 0 or total <= 0:
        return 0
    return min(total - 1, max(0, math.ceil((2 * percent - 1) * total / 200)))


def peer_name(ae_title: str, host: str, port: int) -> str:
    """The symbolic name under which Orthanc knows a destination (stable for an address)."""
    digest = hashlib.sha256(f"{ae_title}@{host}:{port}".encode()).hexdigest()[:16]
    return f"filmless-{digest}"


class PushJob:
    """One Orthanc job sending instances to a peer, read and cancelled on the Orthanc that runs it."""

    def __init__(self, store: OrthancStore, job_id: str, total: int) -> None:
        self._store = store
        self.job_id = job_id
        self.total = total

    def progress(self) -> PushProgress:
        """The job's state now (one small request); raises :class:`StorageError` if Orthanc cannot say."""
        info = self._store._read_json(f"/jobs/{self.job_id}")
        state = _STATES.get(str(info.get("State", "")), "failed")
        if state == "done":
            return PushProgress("done", self.total, self.total)
        sent = sent_lower_bound(int(info.get("Progress", 0) or 0), self.total)
        error = ""
        if state == "failed":
            error = str(info.get("ErrorDetails") or info.get("ErrorDescription") or "job failed")
        return PushProgress(state, sent, self.total, error)

    def cancel(self) -> None:
        """Stop the job (nothing more is sent); a job already ended or forgotten is left alone."""
        try:
            self._store._post_json(f"/jobs/{self.job_id}/cancel", {})
        except NotFound:
            pass


def start_push(store: OrthancStore, instance_ids: Sequence[str], *, ae_title: str, host: str, port: int,
               local_aet: str, originator_aet: str | None = None, originator_id: int | None = None,
               timeout: float = 60.0) -> PushJob:
    """Start sending ``instance_ids`` in order; the peer is registered with Orthanc (in memory,
    idempotent) when Orthanc does not know it: on first use, and after Orthanc restarted."""
    name = peer_name(ae_title, host, port)
    body: dict[str, object] = {
        "Resources": list(instance_ids),
        "Synchronous": False,
        "LocalAet": local_aet,
        # Stop at the first refused instance: the caller then reports and
        # retries the rest one by one (Orthanc does not say which one failed).
        "Permissive": False,
        "Timeout": max(1, int(timeout)),
    }
    if originator_aet:
        body["MoveOriginatorAet"] = originator_aet
        body["MoveOriginatorID"] = int(originator_id or 0)
    endpoint = f"/modalities/{name}/store"
    try:
        answer = store._read_json(endpoint, body, command=True)
    except NotFound:
        store._put_json(f"/modalities/{name}", {"AET": ae_title, "Host": host, "Port": port})
        answer = store._read_json(endpoint, body, command=True)
    return PushJob(store, str(answer["ID"]), len(instance_ids))
