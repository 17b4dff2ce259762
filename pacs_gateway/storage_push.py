"""C-MOVE sub-operations sent by the archive itself, reported to the requestor as pynetdicom's.

Why: sending a study from Python costs an HTTP read and a DIMSE write per
instance in this process; Orthanc's own C-STORE SCU sends its files in C++
(``storage.push``), as fast as a stock Orthanc's C-MOVE. The gateway keeps
everything a C-MOVE decides: who asked, which instances (resolved and
audited before anything leaves), which destination (only those configured),
and the responses to the requestor, Pending after each instance with the
counts, as pynetdicom's C-MOVE SCP sends them.

How: pynetdicom's C-MOVE SCP asks the gateway's AE for an association to the
destination and then calls ``send_c_store`` once per instance the handler
yields. :meth:`PushPlan.open` answers that request with a
:class:`PushedAssociation` instead: it starts the Orthanc job, and each
``send_c_store`` returns success once the job has certainly sent that
instance. When the job fails (a refused instance, the destination
unreachable from Orthanc), stalls, or cannot start, the instances not yet
certainly sent go out from Python on a real association, one by one, so a
refused instance is reported under its own UID. A few instances may then
reach the destination twice, which a storage SCP accepts (same SOP
Instance UID). A cancel, or the requestor going away, cancels the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset

from .commitment import ReturnAddress
from .dimse_status import Status, status_dataset

__all__ = ["HandOverAssociation", "MovePlan", "PushPlan", "PushedAssociation"]

log = logging.getLogger(__name__)

# How often the job is asked how far it got: every POLL_MIN seconds near its
# start and end, less often in between (a quarter of the time it should still
# take, at most POLL_MAX): each question costs Orthanc and this process CPU
# that the sending and the workstation need (2 cores), and only the last
# answer's delay adds to the C-MOVE's time.
POLL_MIN = 0.001
POLL_MAX = 0.010
# A job still queued behind others after this long is cancelled and the
# move sent from Python instead (Orthanc runs only a few jobs at once).
PENDING_LIMIT = 2.0


class MovePlan:
    """What one C-MOVE sends, and to whom: what every way of sending it needs.

    Opened (``open(connect)``) in place of the association to the destination.
    """

    def __init__(self, store: Any, instances: list[Any], address: ReturnAddress, *, local_aet: str,
                 originator_aet: str, originator_id: int,
                 prepare: Callable[[list[Any]], tuple[list[Any], Any, list[Any]]]) -> None:
        self.store = store
        self.instances = instances
        self.address = address
        self.local_aet = local_aet
        # Who asked for the move, and the C-MOVE's message ID (PS3.7 9.3.1.1).
        self.originator_aet = originator_aet
        self.originator_id = originator_id
        # For sending from Python what the primary sender did not: instances ->
        # (those still stored, an iterable of (instance, data set to send) in
        # that order with a ``close()``, the presentation contexts to propose).
        self.prepare = prepare

    def open(self, connect: Callable[[list[Any]], Any]) -> Any:
        """Everything through pynetdicom (the plans below have a faster sender first)."""
        return HandOverAssociation(self, connect).from_python()


class PushPlan(MovePlan):
    """A C-MOVE that Orthanc's job sends."""

    def __init__(self, *args: Any, stall_limit: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall_limit = stall_limit

    def open(self, connect: Callable[[list[Any]], Any]) -> Any:
        """Start the job; the association stand-in, or the real association that replaced it.

        ``connect(contexts)`` requests a real association to the destination
        (pynetdicom's ``AE.associate``), for what the job does not send.

        Waits until the job has sent its first instance (or failed): a
        destination nobody can reach is then refused before any Pending
        response, like a failed association (0xA801).
        """
        pushed = PushedAssociation(self, connect)
        pushed.start()
        return pushed if pushed.sent else pushed.from_python()


class HandOverAssociation:
    """What pynetdicom's C-MOVE SCP sees as the association to the destination, when another
    sender does the sending; what that sender does not send goes out from Python.

    Subclasses send instance ``index`` in :meth:`_sent_by_primary` (its status
    once it certainly reached the destination; None: from Python, it and the
    rest) and stop in :meth:`_stop_primary`. This class alone sends everything
    from Python.
    """

    def __init__(self, plan: Any, connect: Callable[[list[Any]], Any]) -> None:
        self.plan = plan
        self._connect = connect
        self.fallback_association: Any = None
        self._fallback_files: Iterator[tuple[Any, Dataset]] | None = None
        self._fallback_ids: set[str] = set()
        self._close_fallback: Callable[[], None] | None = None

    @property
    def is_established(self) -> bool:
        if self.fallback_association is not None:
            return bool(self.fallback_association.is_established)
        return True

    def send_c_store(self, dataset: Any, msg_id: int = 1, priority: int = 2, originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        index = int(dataset.__dict__["_push_index"])
        if self.fallback_association is None:
            status = self._sent_by_primary(index, msg_id, priority, originator_aet, originator_id)
            if status is not None:
                return status
        return self._send_from_python(index, msg_id, priority, originator_aet, originator_id)

    def release(self) -> None:
        self._end()
        if self.fallback_association is not None and self.fallback_association.is_established:
            self.fallback_association.release()

    def abort(self) -> None:
        self._end(abort=True)
        if self.fallback_association is not None:
            self.fallback_association.abort()

    def _sent_by_primary(self, index: int, msg_id: int, priority: int, originator_aet: str | None,
                         originator_id: int | None) -> Dataset | None:
        return None

    def _stop_primary(self, abort: bool = False) -> None:
        pass

    def from_python(self) -> Any:
        """Everything from Python, from the first instance on: this stand-in, or the real
        association when it could not be established (pynetdicom then answers 0xA801
        before any Pending)."""
        self._stop_primary()
        self._open_fallback(0)
        return self if self.fallback_association.is_established else self.fallback_association

    def _end(self, abort: bool = False) -> None:
        """Stop the primary sender and drop the files read for the rest (the association is the caller's)."""
        self._stop_primary(abort)
        if self._close_fallback is not None:
            self._close_fallback()
            self._close_fallback = None

    # -- what is left, from Python ---------------------------------------------
    def _open_fallback(self, index: int) -> None:
        stored, files, contexts = self.plan.prepare(self.plan.instances[index:])
        self._close_fallback = files.close
        self._fallback_ids = {i.orthanc_id for i in stored}
        self._fallback_files = iter(files)
        self.fallback_association = self._connect(contexts)
        if not self.fallback_association.is_established:
            files.close()
            self._close_fallback = None

    def _send_from_python(self, index: int, msg_id: int, priority: int, originator_aet: str | None,
                          originator_id: int | None) -> Dataset:
        if self.fallback_association is None:
            self._open_fallback(index)
        instance = self.plan.instances[index]
        if not self.fallback_association.is_established:
            raise RuntimeError(f"the destination {self.plan.address.ae_title} cannot be reached")
        if instance.orthanc_id not in self._fallback_ids:
            raise RuntimeError(f"{instance.sop_instance_uid} is no longer in the archive")
        assert self._fallback_files is not None
        _, ds = next(self._fallback_files)
        return self.fallback_association.send_c_store(  # type: ignore[no-any-return]
            ds, msg_id=msg_id, priority=priority, originator_aet=originator_aet, originator_id=originator_id)


class PushedAssociation(HandOverAssociation):
    """The stand-in while Orthanc's job sends the instances."""

    def __init__(self, plan: PushPlan, connect: Callable[[list[Any]], Any]) -> None:
        super().__init__(plan, connect)
        self.job: Any = None
        self.sent = 0
        self.ended = False
        self._started = time.monotonic()
        self._advanced = self._started
        # (time, instances sent) when the job was first seen sending: its pace since then.
        self._first: tuple[float, int] | None = None

    def _sent_by_primary(self, index: int, msg_id: int, priority: int, originator_aet: str | None,
                         originator_id: int | None) -> Dataset | None:
        return status_dataset(Status.SUCCESS) if self._wait_sent(index) else None

    def _stop_primary(self, abort: bool = False) -> None:
        self._stop_job()

    # -- the job --------------------------------------------------------------
    def start(self) -> None:
        plan = self.plan
        try:
            self.job = plan.store.push_instances(
                [i.orthanc_id for i in plan.instances], ae_title=plan.address.ae_title, host=plan.address.host,
                port=plan.address.port, local_aet=plan.local_aet, originator_aet=plan.originator_aet,
                originator_id=plan.originator_id)
        except Exception as exc:  # noqa: BLE001 - sent from Python instead
            log.warning("retrieve: the archive cannot send to %s (%s); sending from the gateway",
                        plan.address.ae_title, exc)
            self.ended = True
        if not self.ended:
            self._wait_sent(0)

    def _wait_sent(self, index: int) -> bool:
        """True once instance ``index`` has certainly been sent by the job; False if the job ended short of it."""
        while index >= self.sent:
            if self.ended:
                return False
            self._poll()
            if index >= self.sent and not self.ended:
                time.sleep(self._poll_interval(time.monotonic()))
        return True

    def _poll(self) -> None:
        try:
            progress = self.job.progress()
        except Exception as exc:  # noqa: BLE001 - the rest goes from Python
            self._give_up(f"cannot follow the job: {exc}")
            return
        now = time.monotonic()
        if progress.sent > self.sent:
            self.sent = progress.sent
            self._advanced = now
        if progress.state == "done":
            self.sent = len(self.plan.instances)
            self.job = None
            self.ended = True
        elif progress.state == "failed":
            self.job = None
            self._give_up(progress.error)
        elif progress.state == "pending" and now - self._started > PENDING_LIMIT:
            self._give_up("the archive's job queue is busy")
        elif now - self._advanced > self.plan.stall_limit:
            self._give_up(f"no progress for {self.plan.stall_limit:.0f} s")

    def _poll_interval(self, now: float) -> float:
        """Seconds to wait before asking again: a quarter of the time the job should still take
        at its pace so far; before its pace is known, half the time since it last moved."""
        if self._first is None and self.sent:
            self._first = (now, self.sent)
        guess = (now - self._advanced) / 2
        if self._first is not None and self.sent > self._first[1] and now > self._first[0]:
            since, at = self._first
            guess = (len(self.plan.instances) - self.sent) * (now - since) / (self.sent - at) / 4
        return min(POLL_MAX, max(POLL_MIN, guess))

    def _give_up(self, reason: str) -> None:
        if self.sent < len(self.plan.instances):
            log.warning("retrieve: the archive stopped sending to %s after %d of %d instances (%s); "
                        "the gateway sends the rest", self.plan.address.ae_title, self.sent,
                        len(self.plan.instances), reason)
        self._stop_job()
        self.ended = True

    def _stop_job(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            try:
                job.cancel()
            except Exception as exc:  # noqa: BLE001 - the job ends with its association anyway
                log.warning("retrieve: cannot cancel the archive's job: %s", exc)
