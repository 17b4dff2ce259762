"""C-MOVE sub-operations sent by the gateway from memory, straight to the destination's socket.

Why: a C-MOVE's time is one C-STORE round trip per instance, in a row.
Orthanc's own C-STORE client (storage_push.py) reads and parses each file
before sending it, ~0.4 ms a CT slice on top of the workstation's own time;
a stock Orthanc's C-MOVE pays the same, and the gateway adds its own fixed
costs (the association with the requestor, resolving, auditing) before the
first image. Here the next instances are read from Orthanc into reused
buffers while the current one goes out (two reads at a time), and each
goes out with one gathered write on an association of direct_store.py:
the round trip is the workstation's time and little else.

Only for instances small enough to hold a few in memory (the caller checks
the sizes Orthanc lists); larger ones are left to Orthanc's job, whose
reads stay on disk.

The presentation contexts are proposed before most files are read: per
series, the SOP class and transfer syntax of its first instance (for the
first series from its file, read first anyway; for the others one metadata
look-up each), plus both uncompressed syntaxes for each SOP class. An
instance that fits none of the accepted contexts, or that cannot be
parsed, and everything after it, goes out from Python as in
storage_push.py's fallback (pynetdicom converts between syntaxes there).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .dimse_fast import CommandError, c_store_rq, file_meta_of
from .dimse_status import status_dataset
from .direct_store import DestinationUnreachable, DirectStoreAssociation, DirectStoreError, StoreRefused
from .storage_push import HandOverAssociation, MovePlan

__all__ = ["DirectPlan", "MemoryPrefetch", "UnreachableDestination"]

log = logging.getLogger(__name__)

# Instances read ahead: at most this many, and about this many bytes.
WINDOW = 8
WINDOW_BYTES = 64 * 1024 * 1024
START_WINDOW = 2


class MemoryPrefetch:
    """Read instances from storage into memory ahead of sending them, in order, a few at a time.

    Bounded by count and by bytes (``WINDOW``, ``WINDOW_BYTES``). The
    buffers are reused: the one handed out by :meth:`take` goes back to the
    pool at the next :meth:`take` (the caller has sent it by then), so
    memory is mapped once, not per instance. :meth:`take` must be called
    with increasing indexes; a read that failed hands back its exception.
    """

    def __init__(self, store: Any, instances: list[Any], workers: int = 2, window: int = WINDOW,
                 max_bytes: int = WINDOW_BYTES, pool: ThreadPoolExecutor | None = None) -> None:
        self.store = store
        self.instances = instances
        self.window = window
        # Until the first take(), only the first few: more reads then would compete for both
        # cores with the association's set-up and the audit, which the first instance waits for.
        self._limit = min(window, START_WINDOW)
        self.max_bytes = max_bytes
        # The readers: the gateway's, kept between moves (no threads started before the
        # first read), or this prefetch's own.
        self._own_pool = pool is None
        self.pool = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retrieve-read")
        self.queued: deque[tuple[int, Future[memoryview]]] = deque()
        self._free: list[bytearray] = []
        self._lent: bytearray | None = None
        self._next = 0
        self._closed = False
        self._fill()

    def _fill(self) -> None:
        held = sum(int(self.instances[i].size or 0) for i, _ in self.queued)
        while not self._closed and self._next < len(self.instances) and len(self.queued) < self._limit:
            size = int(self.instances[self._next].size or 0)
            if self.queued and held + size > self.max_bytes:
                break
            held += size
            buffer = self._free.pop() if self._free else None
            orthanc_id = self.instances[self._next].orthanc_id
            self.queued.append((self._next, self.pool.submit(self.store.read_instance_into, orthanc_id, buffer)))
            self._next += 1

    def peek(self, index: int) -> memoryview | BaseException:
        """The file of instance ``index`` (waits for its read) without taking it: it must be
        one of the next ones read (the first, before any :meth:`take`)."""
        future = next((f for i, f in self.queued if i == index), None)
        if future is None:
            return LookupError(f"instance {index} is not being read")
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - the caller decides
            return exc

    def take(self, index: int) -> memoryview | BaseException:
        """The file of instance ``index`` (waits for its read), or why it could not be read."""
        self._limit = self.window
        if self._lent is not None:
            self._free.append(self._lent)
            self._lent = None
        while self.queued and self.queued[0][0] < index:
            self.queued.popleft()[1].cancel()
        if not self.queued or self.queued[0][0] != index:
            self._next = max(self._next, index)
            self.queued.clear()
            self._fill()
        _, future = self.queued.popleft()
        result: memoryview | BaseException
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - reported as a failed sub-operation
            result = exc
        if isinstance(result, memoryview) and isinstance(result.obj, bytearray):
            self._lent = result.obj
        self._fill()
        return result

    def close(self) -> None:
        """Stop reading ahead and drop what was read (idempotent)."""
        self._closed = True
        if self._own_pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for _, future in self.queued:
            future.cancel()
        self.queued.clear()
        self._free.clear()
        self._lent = None


class DirectPlan(MovePlan):
    """A C-MOVE that the gateway sends from memory."""

    def __init__(self, *args: Any, timeout: float, prefetch: MemoryPrefetch, heads: Future[list[Any]],
                 audit: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.prefetch = prefetch
        # The first instance of each series but the first, described (SOP class, transfer syntax).
        self.heads = heads
        # Writes the retrieve's audit row; run once by open(), whose caller checks
        # ``auditing`` before the first instance goes out.
        self.audit = audit
        self.auditing: Future[None] = Future()

    def audit_once(self) -> None:
        """Run the audit unless it ran; its outcome in :attr:`auditing`."""
        if self.auditing.done():
            return
        try:
            self.audit()
        except Exception as exc:  # noqa: BLE001 - the caller sends nothing then
            self.auditing.set_exception(exc)
        else:
            self.auditing.set_result(None)

    def contexts(self) -> list[tuple[str, str]]:
        """(SOP class, transfer syntax) pairs to propose: the first instance's (from its file,
        read first anyway), each other series head's, and both uncompressed syntaxes."""
        wanted: dict[tuple[str, str], None] = {}
        first = self.prefetch.peek(0)
        try:
            if isinstance(first, BaseException):
                raise CommandError(str(first))
            meta = file_meta_of(first)
            wanted[(meta.sop_class, meta.transfer_syntax)] = None
        except CommandError:
            # Unreadable or unusual: what Orthanc's metadata says about it.
            for head in self.store.describe_instances(self.instances[:1], workers=1):
                wanted.setdefault((head.sop_class_uid, head.transfer_syntax), None)
        for head in self.heads.result():
            if head.sop_class_uid and head.transfer_syntax:
                wanted.setdefault((head.sop_class_uid, head.transfer_syntax), None)
        for sop_class in dict.fromkeys(sop_class for sop_class, _ in list(wanted)):
            wanted.setdefault((sop_class, str(ExplicitVRLittleEndian)), None)
            wanted.setdefault((sop_class, str(ImplicitVRLittleEndian)), None)
        return list(wanted)

    def open(self, connect: Callable[[list[Any]], Any]) -> Any:
        """The stand-in on a direct association, or the real association that replaced it
        (refused or unreachable: pynetdicom then answers 0xA801 before any Pending)."""
        sent = DirectAssociation(self, connect)
        try:
            contexts = self.contexts()
        except Exception as exc:  # noqa: BLE001 - the Python path describes every instance itself
            log.warning("retrieve: cannot describe the study for %s (%s); sending from pynetdicom",
                        self.address.ae_title, exc)
            contexts = []
        if contexts:
            try:
                sent.direct = DirectStoreAssociation.request(
                    self.address.host, self.address.port, calling_aet=self.local_aet,
                    called_aet=self.address.ae_title, contexts=contexts, timeout=self.timeout,
                    # The audit row (Python work) is written while the destination decides,
                    # on this thread: on another one, it held the interpreter while the first
                    # file was read and the answer arrived, delaying both by milliseconds.
                    meanwhile=self.audit_once)
            except (DestinationUnreachable, StoreRefused) as exc:
                # Asking again through pynetdicom would fail the same way, after a second
                # network timeout for a destination that takes connections and never answers.
                log.warning("retrieve: no association to %s (%s)", self.address.ae_title, exc)
                self.audit_once()
                return UnreachableDestination()
            except DirectStoreError as exc:
                log.warning("retrieve: no direct association to %s (%s)", self.address.ae_title, exc)
        self.audit_once()
        return sent if sent.direct is not None else sent.from_python()


class UnreachableDestination:
    """What pynetdicom's C-MOVE SCP gets for a destination that refused or never answered:
    not established, so it answers 0xA801 before any Pending (and closes the "socket")."""

    is_established = False

    def __init__(self) -> None:
        self.dul = SimpleNamespace(socket=SimpleNamespace(close=lambda: None))

    def release(self) -> None:
        pass

    def abort(self) -> None:
        pass


class DirectAssociation(HandOverAssociation):
    """The stand-in while the gateway sends from memory on a :class:`DirectStoreAssociation`."""

    def __init__(self, plan: DirectPlan, connect: Callable[[list[Any]], Any]) -> None:
        super().__init__(plan, connect)
        self.direct: DirectStoreAssociation | None = None

    def _sent_by_primary(self, index: int, msg_id: int, priority: int, originator_aet: str | None,
                         originator_id: int | None) -> Dataset | None:
        plan: DirectPlan = self.plan
        instance = plan.instances[index]
        direct = self.direct
        if direct is None or not direct.is_established:
            self._stop_primary()  # broken on an earlier instance: the rest through pynetdicom
            return None
        data = plan.prefetch.take(index)
        if isinstance(data, BaseException):
            # Deleted meanwhile or storage failing: this instance fails, the next ones are tried.
            raise RuntimeError(f"cannot read {instance.sop_instance_uid} from storage: {data}")
        try:
            meta = file_meta_of(data)
            command = c_store_rq(message_id=msg_id, sop_class=meta.sop_class, sop_instance=meta.sop_instance,
                                 priority=priority, originator_aet=plan.originator_aet or originator_aet,
                                 originator_id=plan.originator_id if plan.originator_aet else originator_id)
        except CommandError as exc:
            log.info("retrieve: %s goes out through pynetdicom (%s)", instance.sop_instance_uid, exc)
            self._stop_primary()
            return None
        if instance.sop_instance_uid and meta.sop_instance != instance.sop_instance_uid:
            raise RuntimeError(f"storage handed {meta.sop_instance} for {instance.sop_instance_uid}")
        if not direct.accepts(meta.sop_class, meta.transfer_syntax):
            log.info("retrieve: %s accepts no context for %s as stored; the rest goes through pynetdicom",
                     plan.address.ae_title, instance.sop_instance_uid)
            self._stop_primary()
            return None
        status = direct.store(meta.sop_class, meta.transfer_syntax, command, data[meta.data_set_offset:])
        return status_dataset(status)

    def _stop_primary(self, abort: bool = False) -> None:
        self.plan.prefetch.close()
        direct, self.direct = self.direct, None
        if direct is not None:
            if abort:
                direct.abort()
            else:
                direct.release(wait=False)
