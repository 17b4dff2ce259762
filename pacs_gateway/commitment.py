"""Storage Commitment Push Model (PS3.4 Annex J): "do you keep these now?"

A modality that receives a success report deletes its own copies, so the
answer has to be true: an instance counts as committed only once Orthanc
has it (with the SOP class the modality named), never when it is merely in
the spool. So:

* each N-ACTION request is kept as a JSON file under ``<spool>/commitment/``
  (fsynced before the modality hears success) and survives a restart;
* a background thread decides each referenced instance: in Orthanc (success,
  or failure 0x0119 for every reference naming a class other than the one
  stored, also when one request names the same instance under two classes);
  acknowledged but not forwarded yet (wait); quarantined (0x0110); never
  received (0x0112); still not in Orthanc after ``wait_limit`` seconds (0x0110);
* the N-EVENT-REPORT goes back on the requesting association when it is
  still open (a release or abort arriving meanwhile ends the wait at once),
  else on another open association of that modality with the commitment
  context, else on a new association to its configured return address
  (``AET@host:port``, as SCP by role selection), retried with capped
  back-off. A modality without a return address gets its report the next
  time it associates with the commitment context; if it does not within
  ``wait_limit`` seconds the request is set aside (``.undelivered``), never
  retried forever.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]  # generated module

from .backoff import Backoff
from .dimse_status import Status
from .durable import DurableQueue, write_json
from .exceptions import CommitmentInvalid

__all__ = [
    "COMMITMENT_INSTANCE",
    "CLASS_INSTANCE_CONFLICT",
    "NO_SUCH_OBJECT",
    "PROCESSING_FAILURE",
    "Commitments",
    "ReturnAddress",
    "parse_request",
]

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model class.
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
# Failure Reason values (PS3.3 C.14.1.1), from the one status table.
PROCESSING_FAILURE = Status.PROCESSING_FAILURE
NO_SUCH_OBJECT = Status.NO_SUCH_OBJECT_INSTANCE
CLASS_INSTANCE_CONFLICT = Status.CLASS_INSTANCE_CONFLICT

MAX_REFERENCES = 100_000
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

# SOP Instance UID → SOP Class UID as stored in Orthanc, None when not there.
# May raise (Orthanc down): the instance is then decided later.
Lookup = Callable[[str], str | None]
# SOP Instance UID → ("in_flight" | "quarantined" | "unknown", reason).
Whereabouts = Callable[[str], tuple[str, str]]


# After the N-ACTION response's EVT_DIMSE_SENT, how long the report waits so the response's
# PDUs are surely queued first; and how long a response may take before the report goes anyway.
RESPONSE_MARGIN = 0.2
RESPONSE_WAIT_LIMIT = 10.0

def _uid(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text if text and len(text) <= 64 and _UID.fullmatch(text) else ""


def parse_request(ds: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """Transaction UID and (SOP Class UID, SOP Instance UID) pairs of an
    N-ACTION request (PS3.4 J.3.2.1.1); :class:`CommitmentInvalid` says what is wrong."""
    if ds is None:
        raise CommitmentInvalid("no Action Information", missing=True)
    if "TransactionUID" not in ds or not str(ds.TransactionUID or "").strip():
        raise CommitmentInvalid("Transaction UID missing", missing=True)
    transaction = _uid(ds.TransactionUID)
    if not transaction:
        raise CommitmentInvalid("Transaction UID is not a valid UID")
    items = ds.get("ReferencedSOPSequence") or []
    if not items:
        raise CommitmentInvalid("Referenced SOP Sequence missing or empty", missing=True)
    if len(items) > MAX_REFERENCES:
        raise CommitmentInvalid(f"more than {MAX_REFERENCES} instances in one request")
    references: list[tuple[str, str]] = []
    for n, item in enumerate(items, 1):
        sop_class, sop_instance = _uid(item.get("ReferencedSOPClassUID")), _uid(item.get("ReferencedSOPInstanceUID"))
        if not sop_class or not sop_instance:
            raise CommitmentInvalid(f"item {n} of Referenced SOP Sequence lacks a valid SOP Class or Instance UID")
        references.append((sop_class, sop_instance))
    return transaction, references


@dataclass(frozen=True)
class ReturnAddress:
    """Where a modality listens for reports: ``AET@host:port`` (``[v6]:port`` for IPv6)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, entry: str) -> ReturnAddress:
        aet, sep, rest = entry.strip().partition("@")
        host, colon, port = rest.rpartition(":")
        host = host.strip().removeprefix("[").removesuffix("]")
        if not sep or not aet.strip() or not colon or not host or not port.strip().isdigit():
            raise ValueError(f"{entry!r} is not AET@host:port")
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(f"{entry!r}: port out of range")
        return cls(aet.strip(), host, number)


def report_dataset(transaction: str, results: Iterable[tuple[str, str, int]], retrieve_aet: str) -> Dataset:
    """The Event Information of the N-EVENT-REPORT (PS3.4 J.3.3.1.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction
    ok, failed = [], []
    for sop_class, sop_instance, reason in results:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if reason:
            item.FailureReason = reason
            failed.append(item)
        else:
            item.RetrieveAETitle = retrieve_aet
            ok.append(item)
    if ok:
        ds.ReferencedSOPSequence = ok
    if failed:
        ds.FailedSOPSequence = failed
    return ds


class Commitments(DurableQueue):
    """The gateway's storage commitment requests (``pending``: reports not delivered yet)."""

    thread_name = "storage-commitment"

    def __init__(
        self,
        root: Path,
        lookup: Lookup,
        whereabouts: Whereabouts,
        *,
        ae_title: str,
        return_addresses: Iterable[str] = (),
        wait_limit: float = 3600.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        network_timeout: float = 30.0,
    ) -> None:
        super().__init__(root)
        self.lookup = lookup
        self.whereabouts = whereabouts
        self.ae_title = ae_title
        self.addresses = {a.ae_title: a for a in (ReturnAddress.parse(e) for e in return_addresses)}
        self.wait_limit = wait_limit
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.network_timeout = network_timeout
        self._assocs: dict[str, Any] = {}  # transaction → requesting association (this run only)
        # PS3.7 and PS3.4 J.3.3: the N-EVENT-REPORT follows the N-ACTION response. A request is
        # kept (and the worker woken) inside the N-ACTION handler, before pynetdicom sends the
        # response: until the response is on its way, the report must not go on that association.
        self._awaiting: dict[str, tuple[Any, float]] = {}  # transaction → (association, asked at)
        self._ready_at: dict[str, float] = {}  # transaction → when its response is surely queued
        # transaction → {instance UID: the class Orthanc stores it as (str), or a Failure Reason (int)}
        self._decided: dict[str, dict[str, str | int]] = {}
        self._live: dict[str, list[Any]] = {}  # calling AE → its open associations with the commitment context
        self._backoff = Backoff(retry_initial, retry_max)  # per transaction
        self._lock = threading.Lock()
        # Instances reported to modalities since start, by verdict (for pacs_gateway.metrics).
        self.reported = {"committed": 0, "failed": 0}

    # -- lifecycle ------------------------------------------------------------
    def open(self) -> None:
        self.queue_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pending = self.pending
        if pending:
            log.info("commitment: %d request(s) to answer from the previous run", pending)
        self._start_worker()

    # -- N-ACTION -------------------------------------------------------------
    def request(self, transaction: str, references: list[tuple[str, str]], calling_aet: str,
                assoc: Any = None) -> None:
        """Keep a request durably (raises ``OutOfResources`` if it cannot be kept).

        The same Transaction UID sent again replaces the first request: the
        modality asks again because it did not hear back.
        """
        data = {"transaction_uid": transaction, "calling_aet": calling_aet, "references": references,
                "received": time.time()}
        write_json(self.queue_dir / f"{transaction}.json", data, "the storage commitment request")
        with self._lock:
            self._decided.pop(transaction, None)
            self._backoff.forget(transaction)
            if assoc is not None:
                self._assocs[transaction] = assoc
                self._awaiting[transaction] = (assoc, time.monotonic())
        log.info("commitment: %s asks for %d instance(s) (transaction %s)", calling_aet or "?", len(references),
                 transaction)
        self._wake.set()

    def response_sent(self, assoc: Any) -> None:
        """The N-ACTION response on ``assoc`` is being sent (pynetdicom's EVT_DIMSE_SENT).

        The event fires just before the response's PDUs are queued, in the association's
        thread: the report waits a moment more so that it cannot overtake them.
        """
        with self._lock:
            for transaction, (owner, _asked) in list(self._awaiting.items()):
                if owner is assoc:
                    del self._awaiting[transaction]
                    self._ready_at[transaction] = time.monotonic() + RESPONSE_MARGIN
        self._wake.set()

    def _hold(self, transaction: str) -> float:
        """Seconds before the report may go out (0: now)."""
        now = time.monotonic()
        with self._lock:
            awaiting = self._awaiting.get(transaction)
            if awaiting is not None:
                if now - awaiting[1] < RESPONSE_WAIT_LIMIT:
                    return 0.05
                del self._awaiting[transaction]  # the response never went (aborted): report anyway
            ready = self._ready_at.get(transaction)
            if ready is not None:
                if ready > now:
                    return ready - now
                del self._ready_at[transaction]
        return 0.0

    # -- the worker -------------------------------------------------------------
    def _work_due(self) -> float:
        """Decide and report what can be; returns seconds until the next look."""
        next_look = 1.0
        for path in sorted(self.queue_dir.glob("*.json")):
            if self._stop.is_set():
                break
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                transaction = str(data["transaction_uid"])
                references = [(str(c), str(i)) for c, i in data["references"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("commitment: unreadable request %s (%s); set aside", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            wait = max(self._backoff.wait_left(transaction), self._hold(transaction))
            if wait > 0:
                next_look = min(next_look, wait)
                continue
            results = self._decide(transaction, references, float(data.get("received", 0)))
            if results is None:
                continue
            calling_aet = str(data.get("calling_aet", ""))
            if self._report(transaction, calling_aet, results):
                path.unlink(missing_ok=True)
                failed = sum(1 for *_, reason in results if reason)
                self.reported["committed"] += len(results) - failed
                self.reported["failed"] += failed
                with self._lock:
                    self._decided.pop(transaction, None)
                    self._backoff.forget(transaction)
                    self._assocs.pop(transaction, None)
            elif calling_aet not in self.addresses and time.time() - float(data.get("received", 0)) > self.wait_limit:
                # Nobody to dial and the modality has not come back: give up
                # rather than retry forever; the modality keeps its copies.
                log.error("commitment: %s never associated again to take its report (%s); set aside as %s",
                          calling_aet or "?", transaction, path.with_suffix(".undelivered").name)
                path.rename(path.with_suffix(".undelivered"))
                with self._lock:
                    self._decided.pop(transaction, None)
                    self._backoff.forget(transaction)
                    self._assocs.pop(transaction, None)
            else:
                next_look = min(next_look, self._backoff.failed(transaction))
        return next_look

    def _decide(self, transaction: str, references: list[tuple[str, str]],
                received: float) -> list[tuple[str, str, int]] | None:
        """Each instance's Failure Reason (0 = committed), or None while any is undecided."""
        with self._lock:
            decided = self._decided.setdefault(transaction, {})
        overdue = time.time() - received > self.wait_limit
        undecided = 0
        for _sop_class, sop_instance in references:
            if sop_instance in decided:
                continue
            # The gateway's own books first: an instance still on its way needs
            # no question to Orthanc (which may be down; a request may name
            # 100,000 instances).
            where, reason = self.whereabouts(sop_instance)
            if where == "in_flight" and not overdue:
                undecided += 1
                continue
            try:
                stored_class = self.lookup(sop_instance)
            except Exception as exc:  # noqa: BLE001 - Orthanc unreachable: nothing more to decide now
                log.debug("commitment: cannot look up %s yet: %s", sop_instance, exc)
                return None
            if stored_class:
                # Kept as the class Orthanc has; each reference is compared with
                # it below, so the same instance named under two classes fails
                # (0x0119) under the wrong one wherever it appears in the list.
                decided[sop_instance] = stored_class
            elif where == "quarantined":
                log.warning("commitment: %s was quarantined: %s", sop_instance, reason)
                decided[sop_instance] = PROCESSING_FAILURE
            elif where == "in_flight":
                log.warning("commitment: %s still not in Orthanc after %.0f s", sop_instance, self.wait_limit)
                decided[sop_instance] = PROCESSING_FAILURE
            else:
                decided[sop_instance] = NO_SUCH_OBJECT
        if undecided:
            return None
        results: list[tuple[str, str, int]] = []
        for c, i in references:
            verdict = decided[i]
            if isinstance(verdict, str):
                results.append((c, i, 0 if verdict == c else CLASS_INSTANCE_CONFLICT))
            else:
                results.append((c, i, verdict))
        return results

    # -- associations -----------------------------------------------------------
    def association_opened(self, calling_aet: str, assoc: Any) -> None:
        """A modality associated with the commitment context: reports it is owed may go on it.

        This is how a modality without a return address gets a report after
        the association it asked on has closed (PS3.4 J.3.3: the report may
        come on any association with it).
        """
        if not any(str(cx.abstract_syntax) == str(StorageCommitmentPushModel) for cx in assoc.accepted_contexts):
            return
        with self._lock:
            self._live.setdefault(calling_aet, []).append(assoc)
            # Try owed reports now, not at the end of their back-off.
            self._backoff = Backoff(self.retry_initial, self.retry_max)
        self._wake.set()

    def association_closed(self, assoc: Any) -> None:
        """Forget a closed association: its reports go straight to a new one."""
        with self._lock:
            for assocs in self._live.values():
                if assoc in assocs:
                    assocs.remove(assoc)
            dropped = [t for t, a in self._assocs.items() if a is assoc]
            for transaction in dropped:
                del self._assocs[transaction]
                self._backoff.forget(transaction)
                self._awaiting.pop(transaction, None)
                self._ready_at.pop(transaction, None)
        if dropped:
            self._wake.set()

    def _open_associations(self, transaction: str, calling_aet: str) -> list[Any]:
        with self._lock:
            first = self._assocs.get(transaction)
            others = list(self._live.get(calling_aet, []))
        found = [first] if first is not None else []
        return found + [a for a in others if a is not first]

    def _report(self, transaction: str, calling_aet: str, results: list[tuple[str, str, int]]) -> bool:
        """Deliver the N-EVENT-REPORT; True once the modality answered success."""
        ds = report_dataset(transaction, results, self.ae_title)
        failed = sum(1 for *_, reason in results if reason)
        event_type = 2 if failed else 1  # 1: all committed; 2: failures exist
        summary = f"transaction {transaction}: {len(results) - failed} committed, {failed} failed"
        for assoc in self._open_associations(transaction, calling_aet):
            if _closing(assoc):
                continue
            try:
                status = _send_watching(assoc, ds, event_type)
            except Exception as exc:  # noqa: BLE001 - released meanwhile: try the next way
                log.info("commitment: association of %s unusable (%s)", calling_aet, exc)
                continue
            if status == 0:
                log.info("commitment: reported to %s on its association: %s", calling_aet, summary)
                return True
            log.warning("commitment: %s did not accept the report on its association (status %s)",
                        calling_aet, status)
        address = self.addresses.get(calling_aet)
        if address is None:
            log.info("commitment: %s has no return address (FILMLESS_GATEWAY_COMMITMENT_PEERS) and no open "
                     "association; %s waits for its next association", calling_aet, summary)
            return False
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.network_timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = ae.associate(address.host, address.port, ae_title=address.ae_title, ext_neg=[role])
        if not assoc.is_established:
            log.warning("commitment: cannot associate with %s at %s:%d; %s waits", address.ae_title, address.host,
                        address.port, summary)
            return False
        try:
            status = _send(assoc, ds, event_type)
        finally:
            assoc.release()
        if status == 0:
            log.info("commitment: reported to %s at %s:%d: %s", address.ae_title, address.host, address.port, summary)
            return True
        log.warning("commitment: %s refused the report (status %s); %s waits", address.ae_title, status, summary)
        return False


def _closing(assoc: Any) -> bool:
    """True when the association is gone or the peer has asked to release or abort it."""
    if not assoc.is_established or assoc.is_released or assoc.is_aborted:
        return True
    pending = assoc.dul.peek_next_pdu()
    return isinstance(pending, (A_RELEASE, A_ABORT, A_P_ABORT))


def _send_watching(assoc: Any, ds: Dataset, event_type: int) -> int | None:
    """Send on a modality's own association, without waiting out the DIMSE
    timeout if it releases meanwhile: pynetdicom would sit on the response
    for ``dimse_timeout`` seconds (the 30 s a released association used to
    cost); a watcher ends the wait as soon as a release or abort arrives."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            if _closing(assoc):
                assoc.dimse.msg_queue.put((None, None))
                return

    watcher = threading.Thread(target=watch, name="commitment-watch", daemon=True)
    watcher.start()
    try:
        return _send(assoc, ds, event_type)
    finally:
        done.set()
        watcher.join()


def _send(assoc: Any, ds: Dataset, event_type: int) -> int | None:
    """Send the report; the peer's status, or None without an answer."""
    status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    return int(status.Status) if "Status" in status else None
