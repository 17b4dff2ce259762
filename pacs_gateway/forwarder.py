"""Threads that move the spool into Orthanc, forever patient.

Each spooled file is uploaded and only then unlinked. Orthanc unreachable or
failing (:class:`storage.StorageUnavailable`) → the same file is retried with
exponential backoff capped at ``retry_max``; it is never dropped. Orthanc
refusing the content (:class:`storage.StorageRejected`) → quarantine with the
reason. A crash at any point leaves the file in ``ready/``; the next start
uploads it again and Orthanc answers "AlreadyStored" if it got there before.

The EMR's identity lookup may fail too (database down, not yet migrated).
That holds an instance back only for ``identity_timeout`` seconds, counted
from its study's first failed lookup (or from when the provider started
failing for everyone, if earlier): then it is uploaded with the identity the
modality sent, and a warning says so. The EMR's study linker puts such
studies into its reconciliation queue; a PACS must not sit on images.

Memory stays bounded by the instance header: files are streamed to Orthanc
from disk and rewritten (charset, identity) into ``scratch/`` piecewise.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from storage import StorageError, StorageRejected, StorageUnavailable, UploadResult

from .normalise import IdentityProvider, normalise_file
from .spool import Spool, sender_of

__all__ = ["Forwarder", "Store"]

log = logging.getLogger(__name__)


class Store(Protocol):
    def upload(self, data: bytes | BinaryIO) -> UploadResult: ...

    def set_study_metadata(self, study_id: str, key: str, value: str) -> None: ...


# Orthanc study metadata naming the calling AE title the study came from
# (storage.METADATA_KEYS): the EMR lists studies a registered facility's PACS
# sent as "received from other facilities" (issue 15 §1).
SENDER_KEY = "FilmlessSenderAet"
_TAGGED_KEPT = 4096


class IdentityUnavailable(Exception):
    """The identity provider failed; ``since`` is when lookups for this study began failing."""

    def __init__(self, message: str, since: float) -> None:
        super().__init__(message)
        self.since = since


class _CachedIdentity:
    """Ask the EMR once per study for a short while, not once per slice.

    Also remembers since when lookups fail, per study and for the provider
    as a whole, so the forwarder can bound how long it waits.
    """

    def __init__(self, provider: IdentityProvider, ttl: float = 30.0) -> None:
        self.provider = provider
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, str] | None]] = {}
        self._failing: dict[tuple[str, str], float] = {}
        self._failing_since: float | None = None  # provider-wide, reset by any success
        self._lock = threading.Lock()

    def __call__(self, accession: str, study_uid: str) -> Mapping[str, str] | None:
        key = (accession, study_uid)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        try:
            value = self.provider(accession, study_uid)
        except Exception as exc:  # noqa: BLE001 - any provider failure means "try later"
            with self._lock:
                if len(self._failing) > 4096:
                    self._failing.clear()
                first = self._failing.setdefault(key, now)
                if self._failing_since is None:
                    self._failing_since = now
                since = min(first, self._failing_since)
            raise IdentityUnavailable(f"identity lookup failed: {exc!r}", since) from exc
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now, value)
            self._failing.pop(key, None)
            self._failing_since = None
        return value


_STOP = Path("/nonexistent/stop-sentinel")

# Quarantined SOP Instance UIDs remembered for storage commitment answers.
_LOST_KEPT = 10_000


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        store: Store,
        *,
        workers: int = 4,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        identity: IdentityProvider | None = None,
        identity_timeout: float = 120.0,
        busy_uploads: int = 0,
        hold_limit: float = 5.0,
        idle_after: float = 0.5,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.spool = spool
        self.store = store
        self.workers = max(1, workers)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.identity = _CachedIdentity(identity) if identity is not None else None
        self.identity_timeout = identity_timeout
        self._on_event = on_event or (lambda name: None)
        self._queue: queue.Queue[Path] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inflight = 0
        self._lock = threading.Lock()
        # Spool files a worker is forwarding, with how many workers: a file is
        # handed back for reuse (Spool.recycle) only by the last one, since
        # reuse overwrites it (the same file can be queued twice at start-up).
        self._holders: dict[Path, int] = {}
        # Uploads compete with receiving for the same cores (and the GIL):
        # while modalities are sending, only ``busy_uploads`` run at once
        # (0: none; receiving and then forwarding costs no more CPU than doing
        # both at once, and the modalities hear "stored" sooner). Starvation
        # guard: an instance queued for ``hold_limit`` seconds is forwarded
        # anyway, with every worker, so a modality that never stops sending
        # (or one association per slice, back to back) still reaches Orthanc,
        # at most about ``hold_limit`` behind. An open association that has
        # sent nothing for ``idle_after`` seconds does not count as sending: a
        # modality that keeps its association open after a series (to ask for
        # storage commitment, or for the next patient) must not hold its
        # images back from the PACS until ``hold_limit``.
        self.busy_uploads = max(0, min(busy_uploads, self.workers))
        self.hold_limit = max(0.0, hold_limit)
        self.idle_after = max(0.0, idle_after)
        self._receiving = 0
        self._last_received = 0.0  # monotonic time of the last instance queued by an association
        self._queued_at: dict[Path, float] = {}  # when each queued file was queued (monotonic)
        self._uploading = 0
        self._gate = threading.Condition()
        # Where acknowledged instances are, for storage commitment: SOP
        # Instance UIDs still on their way to Orthanc, spooled files of the
        # previous run not yet forwarded (their UIDs are not read back), and
        # recently quarantined UIDs with the reason.
        self._uids: dict[Path, str] = {}
        self._in_flight: dict[str, int] = {}
        self._resumed = 0
        self._lost: OrderedDict[str, str] = OrderedDict()
        # (study, sender) pairs already written to Orthanc: once per study, not per slice.
        self._tagged: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- lifecycle ----------------------------------------------------------
    def start(self, backlog: list[Path]) -> None:
        self._stopping.clear()
        while True:  # a previous run's queue: every file in it is in ``backlog`` again
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        now = time.monotonic()
        with self._lock:
            self._queued_at.clear()
            self._uids.clear()
            self._in_flight.clear()
            self._resumed = len(backlog)
            for path in backlog:
                self._queued_at.setdefault(path, now)
        for path in backlog:
            self._queue.put(path)
        if backlog:
            log.info("forwarder: resuming %d spooled instance(s)", len(backlog))
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"pacs-forwarder-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current uploads; unsent files stay spooled for the next start."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def submit(self, path: Path, sop_instance_uid: str | None = None) -> None:
        """Queue an acknowledged spool file; its UID makes it visible to :meth:`whereabouts`."""
        now = time.monotonic()
        self._last_received = now
        with self._lock:
            self._queued_at.setdefault(path, now)
            if sop_instance_uid:
                self._uids[path] = sop_instance_uid
                self._in_flight[sop_instance_uid] = self._in_flight.get(sop_instance_uid, 0) + 1
        self._queue.put(path)

    def whereabouts(self, sop_instance_uid: str) -> tuple[str, str]:
        """Where an instance that is not (yet) in Orthanc is: ``("in_flight", "")``
        when acknowledged and still to be forwarded (or possibly so: a resumed
        backlog is not read back), ``("quarantined", reason)``, or ``("unknown", "")``."""
        with self._lock:
            if self._in_flight.get(sop_instance_uid) or self._resumed:
                return "in_flight", ""
            if sop_instance_uid in self._lost:
                return "quarantined", self._lost[sop_instance_uid]
        return "unknown", ""

    def _settle(self, path: Path, outcome: str, reason: str = "") -> None:
        """A queued file left the spool (forwarded or quarantined)."""
        with self._lock:
            uid = self._uids.pop(path, None)
            if uid is None:
                self._resumed = max(0, self._resumed - 1)
                return
            left = self._in_flight.get(uid, 0) - 1
            if left > 0:
                self._in_flight[uid] = left
            else:
                self._in_flight.pop(uid, None)
            if outcome == "quarantined":
                self._lost[uid] = reason
                while len(self._lost) > _LOST_KEPT:
                    self._lost.popitem(last=False)

    def receiving(self, delta: int) -> None:
        """An association started (+1) or stopped (-1) sending instances."""
        with self._gate:
            self._receiving = max(0, self._receiving + delta)
            self._gate.notify_all()

    def _quiet_in(self) -> float:
        """Seconds until the open associations count as idle (0: they do now, or none is open)."""
        if not self._receiving:
            return 0.0
        return max(0.0, self.idle_after - (time.monotonic() - self._last_received))

    def _limit(self, waited: float) -> int:
        """Uploads allowed at once for an instance queued ``waited`` seconds ago."""
        if waited >= self.hold_limit or self._quiet_in() <= 0.0:
            return self.workers
        return self.busy_uploads

    @property
    def pending(self) -> int:
        """Instances queued or being uploaded."""
        with self._lock:
            return self._queue.qsize() + self._inflight

    # -- work ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            path = self._queue.get()
            if path is _STOP or self._stopping.is_set():
                return
            with self._lock:
                self._inflight += 1
                self._holders[path] = self._holders.get(path, 0) + 1
                queued_at = self._queued_at.pop(path, None)
            try:
                outcome, reason = self._forward(path, time.monotonic() if queued_at is None else queued_at)
                if outcome != "stopped":
                    self._settle(path, outcome, reason)
            except Exception:  # noqa: BLE001 - a bug must not kill the worker; the file stays spooled
                log.exception("forwarder: unexpected error on %s; it stays in the spool", path.name)
            finally:
                with self._lock:
                    self._inflight -= 1
                    left = self._holders.pop(path) - 1
                    if left:
                        self._holders[path] = left

    def _remove_forwarded(self, path: Path) -> None:
        """Take a forwarded file out of ``ready/``: kept for reuse unless another worker still reads it.

        Decided and done under the lock another worker takes before it looks
        at the file, so none can open it between the check and the rename.
        """
        with self._lock:
            if self._holders.get(path, 0) <= 1:
                self.spool.recycle(path)
                return
        self.spool.remove(path)

    def _prepare(self, path: Path, identity: IdentityProvider | None) -> Path:
        """The file to upload: ``path`` itself, or a rewritten copy in scratch/."""
        target = self.spool.scratch_file()
        try:
            result = normalise_file(path, target, identity)
        except IdentityUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - upload as received rather than hold it back
            target.unlink(missing_ok=True)
            log.warning("forwarder: cannot normalise %s (%s); uploading it as received", path.name, exc)
            return path
        if result.changed:
            log.info("forwarder: %s normalised: %s", path.name, "; ".join(result.changes))
        return result.path

    def _upload(self, path: Path, queued_at: float) -> UploadResult:
        with self._gate:
            while not self._stopping.is_set():
                waited = time.monotonic() - queued_at
                if self._uploading < self._limit(waited):
                    break
                # Woken when an upload ends or an association stops sending; else when the hold
                # runs out or the associations fall idle.
                self._gate.wait(min(0.5, max(0.01, min(self.hold_limit - waited, self._quiet_in()))))
            self._uploading += 1
        try:
            with open(path, "rb") as f:
                # The open file, whatever its size: OrthancStore sends it with
                # sendfile() to a plain-HTTP Orthanc (no copy through Python),
                # else hands it to requests, which streams it with a
                # Content-Length (and rewinds it if urllib3 retries).
                return self.store.upload(f)
        finally:
            with self._gate:
                self._uploading -= 1
                self._gate.notify()

    def _forward(self, path: Path, queued_at: float) -> tuple[str, str]:
        """Upload one spool file (queued at ``queued_at``, monotonic) until Orthanc has it or rejects it.

        Returns ``(outcome, reason)``: ``forwarded``, ``quarantined`` (with the
        reason), ``gone`` (another worker already did it) or ``stopped``.
        """
        delay = self.retry_initial
        attempt = 0
        identity: IdentityProvider | None = self.identity
        while not self._stopping.is_set():
            attempt += 1
            if not path.exists():
                return "gone", ""  # already forwarded (e.g. queued twice at start-up)
            upload = path
            try:
                upload = self._prepare(path, identity)
                result = self._upload(upload, queued_at)
                self._tag_sender(path, result)
            except FileNotFoundError:
                if not path.exists():
                    return "gone", ""
                raise
            except IdentityUnavailable as exc:
                waited = time.monotonic() - exc.since
                if waited >= self.identity_timeout:
                    log.warning(
                        "forwarder: %s: EMR identity lookups failing for %.0f s (%s); forwarding it "
                        "with the identity the modality sent, for reconciliation in the EMR",
                        path.name, waited, exc,
                    )
                    identity = None
                    delay = self.retry_initial
                    continue
                self._log_retry(path, attempt, delay, exc)
                self._stopping.wait(min(delay, max(0.0, self.identity_timeout - waited)))
                delay = min(delay * 2, self.retry_max)
                continue
            except StorageUnavailable as exc:
                self._log_retry(path, attempt, delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            except StorageRejected as exc:
                reason = f"Orthanc rejected the instance: {exc}"
                self.spool.quarantine(path, reason, stage="forward")
                self._on_event("quarantined")
                return "quarantined", reason
            finally:
                if upload != path:
                    upload.unlink(missing_ok=True)
            self._remove_forwarded(path)
            self._on_event("forwarded")
            if result.already_stored:
                log.debug("forwarder: %s was already stored (duplicate)", path.name)
            return "forwarded", ""
        return "stopped", ""

    def _tag_sender(self, path: Path, result: UploadResult) -> None:
        """Note in Orthanc which AE sent the study. Orthanc down → :class:`StorageUnavailable`
        (the file is retried, the upload is idempotent); any other refusal (an external Orthanc
        without the metadata declared) only loses the note, never the images."""
        sender = sender_of(path)
        key = (result.study_id, sender)
        if not sender or not result.study_id:
            return
        with self._lock:
            if key in self._tagged:
                return
        try:
            self.store.set_study_metadata(result.study_id, SENDER_KEY, sender)
        except StorageUnavailable:
            raise
        except (StorageError, ValueError) as exc:
            log.warning("forwarder: cannot note sender %s of study %s in Orthanc: %s", sender, result.study_id, exc)
        with self._lock:
            self._tagged[key] = None
            while len(self._tagged) > _TAGGED_KEPT:
                self._tagged.popitem(last=False)

    @staticmethod
    def _log_retry(path: Path, attempt: int, delay: float, exc: Exception) -> None:
        level = logging.WARNING if attempt in (1, 2, 4, 8) or attempt % 32 == 0 else logging.DEBUG
        log.log(level, "forwarder: %s not forwarded (attempt %d, retry in %.1f s): %s",
                path.name, attempt, delay, exc)
