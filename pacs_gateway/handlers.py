"""pynetdicom event handlers: the edge where gateway errors become DICOM statuses.

Status codes (PS3.4 Annex B.2.3, Storage Service Class):

* ``0x0000`` success — only after the instance is fsynced into ``ready/``.
* ``0xA700`` *Refused: Out of Resources* — the spool disk is (nearly) full or
  cannot be written; the modality keeps the instance and may retry later.
* ``0xA900`` *Error: Data Set does not match SOP Class* — the SOP Class UID is
  missing, invalid, or differs from the one in the C-STORE command.
* ``0xC000`` *Error: Cannot understand* — truncated or non-DICOM bytes, a
  missing or invalid SOP Instance UID, or one that differs from the command.

Refused bytes go to quarantine with the reason; an Error Comment (0000,0902)
carries a short form of it back to the modality's log.

MPPS N-CREATE / N-SET statuses (PS3.4 Annex F.7, PS3.7 Annex C):
``0x0111`` duplicate SOP instance, ``0x0112`` no such object instance,
``0x0110`` processing failure (step already COMPLETED/DISCONTINUED),
``0x0106`` invalid attribute value, ``0x0120`` missing attribute,
``0x0213`` resource limitation (the state could not be kept on disk).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated module
    ModalityWorklistInformationFind,
    uid_to_service_class,
)

from .commitment import COMMITMENT_INSTANCE, parse_request
from .dimse_status import Status
from .exceptions import (
    CommitmentInvalid,
    DuplicateMpps,
    MppsError,
    MppsFinal,
    MppsInvalidValue,
    MppsMissingAttribute,
    NoSuchMpps,
    NotUnderstood,
    OutOfResources,
    SopClassMismatch,
)
from .fast_store import FastStore, StoreRequest
from .pdu_limits import LimitedDUL
from .query import read_identifier
from .receive_file import receive_error
from .validate import inspect_file
from .worklist import build_responses

if TYPE_CHECKING:
    from .server import Gateway

__all__ = ["GatewayHandlers", "STATUS_SUCCESS", "STATUS_OUT_OF_RESOURCES", "STATUS_SOP_CLASS_MISMATCH",
           "STATUS_CANNOT_UNDERSTAND"]

log = logging.getLogger("pacs_gateway.association")

# Kept for callers of the earlier names; the table is pacs_gateway.dimse_status.Status.
STATUS_SUCCESS = Status.SUCCESS
STATUS_OUT_OF_RESOURCES = Status.OUT_OF_RESOURCES
STATUS_SOP_CLASS_MISMATCH = Status.SOP_CLASS_MISMATCH
STATUS_CANNOT_UNDERSTAND = Status.CANNOT_UNDERSTAND

_MPPS_STATUS: dict[type[MppsError], Status] = {
    DuplicateMpps: Status.DUPLICATE_SOP_INSTANCE,
    NoSuchMpps: Status.NO_SUCH_OBJECT_INSTANCE,
    MppsFinal: Status.PROCESSING_FAILURE,
    MppsInvalidValue: Status.INVALID_ATTRIBUTE_VALUE,
    MppsMissingAttribute: Status.MISSING_ATTRIBUTE,
}


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    # Error Comment is LO: at most 64 characters, no backslash.
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


@dataclass
class AssociationStats:
    calling_aet: str = ""
    peer: str = ""
    started: float = field(default_factory=time.monotonic)
    instances: int = 0
    bytes: int = 0
    failures: int = 0
    refused: int = 0
    echoes: int = 0
    finds: int = 0
    fast_path: int = 0  # C-STOREs taken by the DUL thread (fast_store.py)
    outcome: str = "open"
    receiving: bool = False
    reasons: list[str] = field(default_factory=list)


class GatewayHandlers:
    """Handlers bound to one :class:`~pacs_gateway.server.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._assocs: dict[Any, AssociationStats] = {}
        self._lock = threading.Lock()

    def bindings(self) -> list[Any]:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self.on_conn_open),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
        ]
        if self.gw.worklist is not None or self.gw.query_retrieve is not None:
            handlers.append((evt.EVT_C_FIND, self.on_find))
        if self.gw.query_retrieve is not None:
            handlers += [(evt.EVT_C_MOVE, self.on_move), (evt.EVT_C_GET, self.on_get)]
        if self.gw.commitments is not None:
            handlers += [(evt.EVT_N_ACTION, self.on_n_action), (evt.EVT_DIMSE_SENT, self.on_dimse_sent)]
        return handlers

    # -- association lifecycle ---------------------------------------------
    def _stats(self, assoc: Any) -> AssociationStats:
        with self._lock:
            stats = self._assocs.get(assoc)
            if stats is None:
                stats = self._assocs[assoc] = AssociationStats()
            return stats

    def on_conn_open(self, event: evt.Event) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            try:
                # Without this every C-STORE response waits for a delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        dul = event.assoc.dul
        if isinstance(dul, LimitedDUL) and self.gw.settings.fast_store:
            # C-STOREs taken by the DUL thread itself once the contexts are agreed (fast_store.py).
            dul.fast_store_factory = self.fast_store_for
        stats = self._stats(event.assoc)
        address = getattr(event, "address", None)
        stats.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        address = assoc.requestor.address
        stats = self._stats(assoc)
        stats.calling_aet = calling
        reason = self.gw.peers.check(calling, address)
        if reason is not None:
            stats.outcome = "rejected"
            stats.reasons.append(reason)
            self.gw.count_event("associations_rejected")
            log.warning("association rejected: %s (peer %s)", reason, stats.peer or address)
            # A-ASSOCIATE-RJ: rejected-permanent, service-user, calling-AE-title-not-recognized.
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            # As pynetdicom does for its own rejections: let the DUL deliver
            # the A-ASSOCIATE-RJ before the socket is shut down.
            assoc.kill()

    def on_accepted(self, event: evt.Event) -> None:
        stats = self._stats(event.assoc)
        stats.outcome = "accepted"
        self.gw.count_event("associations")
        if self.gw.commitments is not None:
            self.gw.commitments.association_opened(stats.calling_aet, event.assoc)

    def on_released(self, event: evt.Event) -> None:
        self._stats(event.assoc).outcome = "released"
        if self.gw.commitments is not None:
            self.gw.commitments.association_closed(event.assoc)

    def on_aborted(self, event: evt.Event) -> None:
        self._stats(event.assoc).outcome = "aborted"

    def on_conn_close(self, event: evt.Event) -> None:
        dul = event.assoc.dul
        if isinstance(dul, LimitedDUL):
            dul.close_fast()
        self._drop_partial(event.assoc)
        if self.gw.commitments is not None:
            self.gw.commitments.association_closed(event.assoc)
        with self._lock:
            stats = self._assocs.pop(event.assoc, None)
        if stats is None:
            return
        if stats.receiving:
            self.gw.forwarder.receiving(-1)
        line = {
            "event": "association",
            "calling_aet": stats.calling_aet,
            "called_aet": self.gw.settings.ae_title,
            "peer": stats.peer,
            "outcome": stats.outcome if stats.outcome != "accepted" else "closed",
            "instances": stats.instances,
            "bytes": stats.bytes,
            "duration_s": round(time.monotonic() - stats.started, 3),
            "failures": stats.failures,
            "refused": stats.refused,
            "echoes": stats.echoes,
            "finds": stats.finds,
            "fast_path": stats.fast_path,
        }
        if stats.reasons:
            line["reasons"] = stats.reasons[:10]
        log.info(json.dumps(line, ensure_ascii=False))

    def _drop_partial(self, assoc: Any) -> None:
        """Remove the half-received file of an association that ended mid-instance.

        pynetdicom leaves it open when the association breaks off (peer
        abort, network timeout, disk full while streaming). It was never
        acknowledged; without this it would hold disk space until the next
        start. Best effort: older leftovers are swept from incoming/ too.
        """
        message = getattr(getattr(assoc, "dimse", None), "message", None)
        partial = getattr(message, "_data_set_file", None)
        if partial is not None:
            try:
                partial.close()
            except OSError:
                pass
            Path(partial.name).unlink(missing_ok=True)
        self.gw.spool.sweep_incoming(older_than=2 * self.gw.settings.network_timeout)

    # -- services -----------------------------------------------------------
    def on_echo(self, event: evt.Event) -> int:
        self._stats(event.assoc).echoes += 1
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int | Dataset:
        """C-STORE through pynetdicom (a context or message the fast path left to it)."""
        request = cast(C_STORE, event.request)
        # pynetdicom has streamed the data set, PDU by PDU, into a Part-10
        # file in the spool's incoming/ (see server.py): memory stays flat
        # whatever the instance size, and committing is a rename, not a copy.
        streamed = event.dataset_path
        stats = self._stats(event.assoc)
        received: Path | None = None
        failed = receive_error(request)
        if failed is None:
            try:
                if streamed is None:
                    # Chunked receiving switched off by someone else in this process.
                    received = self.gw.spool.receive(encode_file_meta(event.file_meta), request.DataSet)
                elif Path(streamed).parent != self.gw.spool.incoming:
                    # Another gateway in this process owns the temp dir: move into ours.
                    received = self.gw.spool.adopt(Path(streamed))
                else:
                    received = Path(streamed)
            except OSError as exc:
                failed = exc
        elif streamed is not None:
            Path(streamed).unlink(missing_ok=True)
        return self.store_received(stats, received, failed, str(event.context.transfer_syntax),
                                   request.AffectedSOPClassUID, request.AffectedSOPInstanceUID)

    def on_fast_store(self, assoc: Any, request: StoreRequest) -> int | Dataset:
        """C-STORE taken by the DUL thread's fast path (fast_store.py): same checks, same answers."""
        failed = request.error
        if failed is not None and request.path is not None:
            request.path.unlink(missing_ok=True)
        stats = self._stats(assoc)
        stats.fast_path += 1
        return self.store_received(stats, None if failed else request.path, failed,
                                   request.transfer_syntax, request.sop_class_uid, request.sop_instance_uid)

    def fast_store_for(self, assoc: Any) -> FastStore | None:
        """The fast path for an association whose contexts are now accepted (None: nothing to take)."""
        contexts = {
            int(cx.context_id): str(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if cx.as_scp and cx.transfer_syntax and uid_to_service_class(cx.abstract_syntax) is StorageServiceClass
        }
        if not contexts:
            return None
        return FastStore(assoc, contexts, self.gw.spool.incoming, self.on_fast_store,
                         PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, reuse=self.gw.spool.reuse)

    def store_received(self, stats: AssociationStats, received: Path | None, failed: OSError | None,
                       transfer_syntax: str, sop_class: str | None, sop_instance: str | None) -> int | Dataset:
        """Check, spool durably and queue one received data set; the C-STORE status to answer.

        ``received`` is the Part-10 file in incoming/, or None when writing it
        failed with ``failed`` (the disk filled up while the data set streamed in).
        """
        if not stats.receiving:
            # From its first C-STORE until it closes, an association counts
            # as sending: uploads then yield the cores to it (forwarder.py).
            stats.receiving = True
            self.gw.forwarder.receiving(+1)
        size = 0
        if received is not None and failed is None:
            try:
                size = received.stat().st_size
            except OSError as exc:
                failed = exc
        if failed is not None or received is None:
            if received is not None:
                received.unlink(missing_ok=True)
            why_full = failed is not None and failed.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "disk full" if why_full else (failed.strerror if failed is not None else "no file")
            stats.refused += 1
            stats.reasons.append(f"spool write failed: {failed}")
            log.error("refusing instance from %s: spool write failed while receiving: %s", stats.calling_aet, failed)
            self.gw.count_event("refused")
            return _status(Status.OUT_OF_RESOURCES, f"spool write failed: {why}")
        try:
            header = inspect_file(received, transfer_syntax, sop_class, sop_instance)
            path = self.gw.spool.commit(received, stats.calling_aet)
        except (NotUnderstood, SopClassMismatch) as exc:
            code = STATUS_SOP_CLASS_MISMATCH if isinstance(exc, SopClassMismatch) else STATUS_CANNOT_UNDERSTAND
            stats.failures += 1
            stats.reasons.append(exc.reason)
            self.gw.spool.quarantine(
                received,
                exc.reason,
                stage="receive",
                status=f"0x{code:04X}",
                calling_aet=stats.calling_aet,
                peer=stats.peer,
                affected_sop_instance_uid=str(sop_instance or ""),
                transfer_syntax=transfer_syntax,
                size=size,
            )
            self.gw.count_event("quarantined")
            return _status(code, exc.reason)
        except OutOfResources as exc:
            received.unlink(missing_ok=True)
            stats.refused += 1
            stats.reasons.append(str(exc))
            log.error("refusing instance from %s: %s", stats.calling_aet, exc)
            self.gw.count_event("refused")
            return _status(STATUS_OUT_OF_RESOURCES, "out of resources: spool disk full")
        except OSError as exc:
            # Any other write failure: the instance is not safe, so it is not acknowledged.
            received.unlink(missing_ok=True)
            stats.refused += 1
            stats.reasons.append(f"spool write failed: {exc}")
            log.error("refusing instance from %s: spool write failed: %s", stats.calling_aet, exc)
            self.gw.count_event("refused")
            return _status(STATUS_OUT_OF_RESOURCES, f"spool write failed: {exc.strerror}")
        stats.instances += 1
        stats.bytes += size
        self.gw.count_event("received")
        self.gw.forwarder.submit(path, header.sop_instance_uid)
        log.debug("stored %s as %s", header.sop_instance_uid, path.name)
        return STATUS_SUCCESS

    def on_find(self, event: evt.Event) -> Any:
        stats = self._stats(event.assoc)
        stats.finds += 1
        if str(event.context.abstract_syntax) != str(ModalityWorklistInformationFind):
            assert self.gw.query_retrieve is not None  # the Q/R contexts are offered only then
            yield from self.gw.query_retrieve.find(event, stats.calling_aet, stats.peer)
            return
        provider = self.gw.worklist
        if provider is None:  # pragma: no cover - the context is not offered then
            yield Status.SUCCESS, None
            return
        self.gw.count_event("worklist_queries")
        try:
            identifier = read_identifier(event, "worklist C-FIND", stats.calling_aet)
            responses = list(build_responses(identifier, provider, stats.calling_aet))
        except Exception as exc:  # noqa: BLE001 - the provider failing must not break the AE
            log.error("worklist query from %s failed: %s", stats.calling_aet, exc)
            stats.failures += 1
            yield _status(Status.UNABLE_TO_PROCESS, "worklist unavailable"), None
            return
        for ds in responses:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, ds
        yield Status.SUCCESS, None

    def on_move(self, event: evt.Event) -> Any:
        """C-MOVE: see :mod:`pacs_gateway.retrieve`."""
        assert self.gw.query_retrieve is not None
        stats = self._stats(event.assoc)
        return self.gw.query_retrieve.move(event, stats.calling_aet, stats.peer)

    def on_get(self, event: evt.Event) -> Any:
        """C-GET: see :mod:`pacs_gateway.retrieve`."""
        assert self.gw.query_retrieve is not None
        stats = self._stats(event.assoc)
        return self.gw.query_retrieve.get(event, stats.calling_aet, stats.peer)

    # -- MPPS -----------------------------------------------------------------
    def _mpps(self, event: evt.Event, apply: Any) -> tuple[int | Dataset, Dataset | None]:
        stats = self._stats(event.assoc)
        try:
            result = apply(stats)
        except MppsError as exc:
            stats.failures += 1
            stats.reasons.append(exc.reason)
            log.warning("mpps from %s refused: %s", stats.calling_aet or "?", exc.reason)
            return _status(_MPPS_STATUS.get(type(exc), Status.PROCESSING_FAILURE), exc.reason), None
        except OutOfResources as exc:
            stats.refused += 1
            log.error("mpps from %s refused: %s", stats.calling_aet or "?", exc)
            return _status(Status.RESOURCE_LIMITATION, "resource limitation: cannot keep MPPS state"), None
        log.info("mpps: %s %s from %s (accession %s)", result["sop_instance_uid"], result["status"],
                 stats.calling_aet or "?", ",".join(result["accession_numbers"]) or "-")
        return STATUS_SUCCESS, None

    def on_n_create(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", None) or "")
        return self._mpps(event, lambda stats: self.gw.mpps_store.create(uid, event.attribute_list, stats.calling_aet))

    def on_n_set(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", None) or "")
        return self._mpps(event, lambda stats: self.gw.mpps_store.update(uid, event.modification_list))

    def on_dimse_sent(self, event: evt.Event) -> None:
        """An N-ACTION response is going out: the commitment report may follow it on that association."""
        if isinstance(event.message, N_ACTION_RSP) and self.gw.commitments is not None:
            self.gw.commitments.response_sent(event.assoc)

    def on_n_action(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """Storage commitment request: kept durably, answered later by N-EVENT-REPORT."""
        stats = self._stats(event.assoc)
        commitments = self.gw.commitments
        assert commitments is not None  # bound only then
        instance = str(getattr(event.request, "RequestedSOPInstanceUID", None) or "")
        if instance != COMMITMENT_INSTANCE:
            return _status(Status.NO_SUCH_SOP_INSTANCE, "not the Storage Commitment Push Model SOP Instance"), None
        if event.action_type != 1:
            return _status(Status.NO_SUCH_ACTION_TYPE, f"no such action type {event.action_type}"), None
        try:
            transaction, references = parse_request(event.action_information)
            commitments.request(transaction, references, stats.calling_aet, assoc=event.assoc)
        except CommitmentInvalid as exc:
            stats.failures += 1
            stats.reasons.append(exc.reason)
            log.warning("storage commitment from %s refused: %s", stats.calling_aet or "?", exc.reason)
            code = Status.MISSING_ATTRIBUTE if exc.missing else Status.INVALID_ATTRIBUTE_VALUE
            return _status(code, exc.reason), None
        except OutOfResources as exc:
            stats.refused += 1
            log.error("storage commitment from %s refused: %s", stats.calling_aet or "?", exc)
            return _status(Status.RESOURCE_LIMITATION, "resource limitation: cannot keep the request"), None
        return STATUS_SUCCESS, None
