"""Query/Retrieve C-MOVE and C-GET SCP (PS3.4 Annex C, IHE RAD-16), plus the Q/R glue.

Instances are read from Orthanc through ``storage`` (never with Orthanc's own
C-MOVE: its DICOM server is off in filmless) and sent by the gateway: C-MOVE
on a new association to a destination declared in
``FILMLESS_GATEWAY_DESTINATIONS`` (``AET@host:port``; an unknown destination
gets 0xA801), C-GET on the requesting association (PS3.4 C.4.3: the
workstation offered the storage classes with the SCP role).

Speed: a few threads copy the next instances from Orthanc into files while
the current one is on the wire (starting as soon as the instances are
listed), so the workstation waits on the network, not on HTTP; each file is
sent as stored, streamed without decoding, its C-STORE command encoded
without pydicom (see :class:`_RawSendingAssociation`). A bounded window
keeps memory and disk use flat whatever the study size. The association to
the move destination is event-driven from its start (:class:`MoveAE`).

pynetdicom sends a Pending response after each C-STORE sub-operation with
the remaining/completed/failed/warning counts, honours C-CANCEL (checked
before every sub-operation) and lists failed SOP Instance UIDs in the final
response. An instance that cannot be read from Orthanc is such a failure:
it is handed to pynetdicom without a transfer syntax, which it counts as a
failed sub-operation under that instance's UID.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, _config, build_context, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated module
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from .commitment import ReturnAddress
from .dimse_fast import CommandError, FileMeta, c_store_rq, read_file_meta
from .dimse_status import Status, status_dataset
from .direct_move import DirectPlan, MemoryPrefetch
from .query import (
    UNIQUE_KEYS,
    AuditProvider,
    IndexStore,
    Match,
    QueryFailed,
    find_matches,
    find_responses,
    model_of,
    query_level,
    read_identifier,
)
from .reactor import EventDrivenAssociation, EventDrivenDUL, make_requestor_event_driven
from .storage_push import MovePlan, PushPlan
from .stream_send import StreamingDIMSE, dimse_sent_handlers, stream_files

__all__ = ["MoveAE", "QueryRetrieve", "QR_CONTEXTS", "add_query_retrieve_contexts"]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("pacs_gateway.audit")

QR_CONTEXTS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
STATUS_PENDING = int(Status.PENDING)
STATUS_CANCELLED = int(Status.CANCEL)
# At most this many instances, and about this many bytes, read ahead of the one being sent.
PREFETCH_WINDOW = 8
PREFETCH_BYTES = 64 * 1024 * 1024
# pynetdicom's limit on presentation contexts in one association request.
_MAX_CONTEXTS = 128
# Default largest instance a C-MOVE sends from memory (a few are held at once, direct_move.py).
DIRECT_MAX_SIZE = 16 * 1024 * 1024
# Threads shared by the C-MOVEs running at once (see QueryRetrieve.workers).
RETRIEVE_WORKERS = 4
# Threads reading files ahead of the C-MOVEs sent from memory (direct_move.MemoryPrefetch).
RETRIEVE_READERS = 2


def add_query_retrieve_contexts(ae: AE) -> None:
    """Offer Q/R, and let C-GET requestors take the storage SCP role (PS3.7 D.3.3.4).

    Existing storage contexts keep their transfer syntaxes; the SCU role is
    kept for modalities that propose role selection for plain C-STORE.
    """
    for uid in QR_CONTEXTS:
        ae.add_supported_context(uid)
    for cx in list(ae.supported_contexts):
        if cx.abstract_syntax and str(cx.abstract_syntax).startswith("1.2.840.10008.5.1.4.1.1."):
            ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax, scu_role=True, scp_role=True)


def _no_delay(event: evt.Event) -> None:
    """Ready the C-MOVE sub-association: files sent as stored; Nagle off
    (otherwise each small C-STORE command PDU waits for the workstation's
    delayed ACK, ~40 ms an image)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    _send_raw(event.assoc)
    dul = event.assoc.dul
    if not isinstance(dul, EventDrivenDUL) and hasattr(dul, "_run_loop_delay"):
        # Not requested through MoveAE: pynetdicom's polling DUL naps 1 ms
        # when idle, so answer sooner on a transfer.
        dul._run_loop_delay = 0.0002


_STANDARD_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


class MoveAE(AE):
    """The gateway's AE, whose C-MOVE sub-associations wait for work instead of polling.

    pynetdicom's C-MOVE SCP opens the association to the move destination
    with ``self.ae.associate()`` and starts its DUL thread inside that call,
    before any handler of ours runs: the polling loops (1 ms naps, or a core
    burnt at shorter ones, and the GIL taken from the sending thread) then
    cost a C-MOVE more than the workstation does. ``associate()`` gives the
    new association its socket through :meth:`_create_socket` before it
    starts any thread; there it gets the event-driven loops of reactor.py
    and the file streaming of stream_send.py.

    The gateway requests associations with this AE only for C-MOVE (storage
    commitment reports, IANs and forwarding use AEs of their own).
    """

    def associate(self, *args: Any, **kwargs: Any) -> Any:
        """pynetdicom's ``associate``; for a C-MOVE the archive sends itself
        (keyword ``storage_push``, see storage_push.py), the stand-in for the association."""
        plan: MovePlan | None = kwargs.pop("storage_push", None)
        if plan is None:
            return super().associate(*args, **kwargs)

        def connect(contexts: list[PresentationContext]) -> Any:
            return AE.associate(self, *args, **{**kwargs, "contexts": contexts})

        return plan.open(connect)

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> Any:
        sock = super()._create_socket(assoc, address, tls_args)
        if assoc.is_requestor and not assoc.is_alive() and not assoc.dul.is_alive():
            make_requestor_event_driven(assoc)
            _send_raw(assoc)
            if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
                # pynetdicom's standard handlers format every PDU and DIMSE
                # message into debug lines, dropped at any other log level.
                for event, handler in _STANDARD_HANDLERS:
                    assoc.unbind(event, handler)
        return sock


def _missing(sop_class: str, sop_instance: str) -> Dataset:
    """What pynetdicom counts as one failed sub-operation for this instance (no transfer syntax)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


_SOP_CLASS_TAG = Tag(0x0008, 0x0016)
_SOP_INSTANCE_TAG = Tag(0x0008, 0x0018)


def _set_uids(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    """Give ``ds`` the SOP Class/Instance UIDs that are known, as raw elements.

    pydicom validates a UID set by keyword (a regex per value, per instance);
    these are read only for a failed instance, which pynetdicom lists under
    its UID.
    """
    for tag, uid in ((_SOP_CLASS_TAG, sop_class), (_SOP_INSTANCE_TAG, sop_instance)):
        if uid:
            value = uid.encode("ascii", "replace")
            value += b"\0" * (len(value) % 2)
            ds._dict[tag] = RawDataElement(tag, "UI", len(value), value, 0, False, True)


class _RawInstance(Dataset):
    """A stored instance to send as the very bytes Orthanc keeps.

    pynetdicom's C-MOVE/C-GET loops take only Datasets; this one carries the
    SOP Class/Instance UIDs (so a failure is listed under its UID) and the
    path of the Part-10 file, which :class:`_RawSendingAssociation` streams
    without decoding and re-encoding it (half the cost of a sub-operation).
    """

    def __init__(self, path: Path, sop_class: str, sop_instance: str, meta: FileMeta | None = None) -> None:
        super().__init__()
        _set_uids(self, sop_class, sop_instance)
        self._raw_path = path
        # The file's meta information, read while it was fetched (None: let pynetdicom read it).
        self._raw_meta = meta


class _Planned(Dataset):
    """Instance ``index`` of a C-MOVE the archive sends itself (storage_push.py): only its UIDs."""

    def __init__(self, sop_class: str, sop_instance: str, index: int) -> None:
        super().__init__()
        _set_uids(self, sop_class, sop_instance)
        self._push_index = index


class _RawSendingAssociation(EventDrivenAssociation):
    """An association whose C-STORE streams a :class:`_RawInstance` from its file.

    Other data sets go through pynetdicom unchanged. When no accepted context
    has the file's own transfer syntax, a decoded copy is sent instead and
    pynetdicom converts it (e.g. explicit to implicit VR little endian).
    """

    def send_c_store(self, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        path = dataset.__dict__.get("_raw_path") if isinstance(dataset, _RawInstance) else None
        if path is None:
            return super().send_c_store(dataset, *args, **kwargs)
        meta: FileMeta | None = dataset.__dict__.get("_raw_meta")
        try:
            if meta is not None and not args and not dimse_sent_handlers(self):
                sent = self._send_file(path, meta, **kwargs)
                if sent is not None:
                    return sent
            return super().send_c_store(path, *args, **kwargs)
        except ValueError:
            return super().send_c_store(dcmread(path), *args, **kwargs)

    def _send_file(self, path: Path, meta: FileMeta, msg_id: int = 1, priority: int = 2,
                   originator_aet: str | None = None, originator_id: int | None = None) -> Dataset | None:
        """pynetdicom's ``send_c_store`` of a file, step for step, minus its pydicom work.

        The command set comes from :func:`dimse_fast.c_store_rq` and goes out
        in the same write as the file's first PDUs (stream_send.py); the
        meta information was read when the file was fetched. Returns None
        (nothing sent) when the command cannot be encoded here; raises
        ValueError, like pynetdicom, when no accepted context has the file's
        own transfer syntax.
        """
        if not self.is_established:
            raise RuntimeError("The association with a peer SCP must be established before sending a C-STORE request")
        context = self._get_valid_context(meta.sop_class, meta.transfer_syntax, "scu", allow_conversion=False)
        try:
            command = c_store_rq(message_id=msg_id, sop_class=meta.sop_class, sop_instance=meta.sop_instance,
                                 priority=priority, originator_aet=originator_aet, originator_id=originator_id)
        except CommandError:
            return None
        dimse = self.dimse
        if not isinstance(dimse, StreamingDIMSE):
            return None
        # As pynetdicom: pause the reactor so that it leaves the response to us.
        self._reactor_checkpoint.clear()
        while not self._is_paused:
            time.sleep(0.0001)
        try:
            dimse.send_file(command, path, meta.data_set_offset, int(context.context_id or 0))
            _, rsp = dimse.get_msg(block=True)
        finally:
            self._reactor_checkpoint.set()
        if rsp is None:
            self._handle_no_response()
            return Dataset()
        code = rsp.Status if isinstance(rsp, C_STORE) else None
        if code is not None and rsp.is_valid_response and not any(
                getattr(rsp, keyword, None) is not None for keyword in rsp.STATUS_OPTIONAL_KEYWORDS):
            return status_dataset(code)  # what _check_received_status builds, minus pydicom's checks
        return self._check_received_status(rsp)

    def kill(self) -> None:
        # pynetdicom's kill(), checking every 1 ms instead of 10 ms whether the
        # DUL has closed the connection after the release (a C-MOVE ends there).
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            time.sleep(0.001)


def _send_raw(assoc: Any) -> None:
    """Let ``assoc`` stream :class:`_RawInstance` files (see above)."""
    # Chunked sending of files is how pynetdicom sends a file without
    # decoding it; it only concerns C-STOREs given a path, which only
    # _RawSendingAssociation does in the gateway.
    _config.STORE_SEND_CHUNKED_DATASET = True
    if isinstance(assoc, Association) and not isinstance(assoc, _RawSendingAssociation):
        assoc.__class__ = _RawSendingAssociation
    # The file's PDUs written in large batches by the DUL (stream_send.py).
    stream_files(assoc)


class _Prefetch:
    """Copy instances from storage into files a few at a time, in order, ahead of sending.

    Bounded by count and by bytes: at most ``window`` instances and about
    ``max_bytes`` wait on disk at once; RAM stays flat whatever their size.
    Each file is deleted once it has been sent (or on :meth:`close`).
    """

    def __init__(self, store: IndexStore, instances: list[Any], folder: Path, workers: int = 3,
                 window: int = PREFETCH_WINDOW, max_bytes: int = PREFETCH_BYTES) -> None:
        self.store = store
        self.folder = folder
        self.pending = deque(instances)
        self.window = window
        self.max_bytes = max_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retrieve")
        self.queued: deque[tuple[Any, Future[tuple[Path, FileMeta | None]]]] = deque()
        self._sent: Path | None = None
        self._keep: set[str] | None = None
        self._fill()

    def _read(self, instance: Any) -> tuple[Path, FileMeta | None]:
        target = self.folder / f"{uuid.uuid4().hex}.dcm"
        try:
            self.store.save_instance(instance.orthanc_id, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        try:
            # Read here, off the sending thread.
            return target, read_file_meta(target)
        except (CommandError, OSError):
            return target, None

    def _fill(self) -> None:
        held = sum(int(getattr(i, "size", 0) or 0) for i, _ in self.queued)
        while self.pending and len(self.queued) < self.window:
            size = int(getattr(self.pending[0], "size", 0) or 0)
            if self.queued and held + size > self.max_bytes:
                break
            instance = self.pending.popleft()
            held += size
            self.queued.append((instance, self.pool.submit(self._read, instance)))

    def keep_only(self, orthanc_ids: set[str]) -> None:
        """Send only these instances (the others were deleted from storage meanwhile)."""
        self._keep = orthanc_ids
        self.pending = deque(i for i in self.pending if i.orthanc_id in orthanc_ids)

    def _forget_sent(self) -> None:
        if self._sent is not None:
            self._sent.unlink(missing_ok=True)
            self._sent = None

    def __iter__(self) -> Iterator[tuple[Any, Dataset]]:
        while self.queued:
            instance, future = self.queued.popleft()
            self._forget_sent()
            if self._keep is not None and instance.orthanc_id not in self._keep:
                self._drop(future)
                self._fill()
                continue
            ds: Dataset
            try:
                self._sent, meta = future.result()
                ds = _RawInstance(self._sent, instance.sop_class_uid, instance.sop_instance_uid, meta)
            except Exception as exc:  # noqa: BLE001 - reported as a failed sub-operation
                log.warning("retrieve: cannot read %s from storage: %s", instance.sop_instance_uid, exc)
                ds = _missing(instance.sop_class_uid, instance.sop_instance_uid)
            self._fill()
            yield instance, ds
        self._forget_sent()

    @staticmethod
    def _drop(future: Future[tuple[Path, FileMeta | None]]) -> None:
        """Delete the file of a finished read (waits for a running one)."""
        if future.cancel():
            return
        try:
            future.result()[0].unlink(missing_ok=True)
        except Exception:  # noqa: BLE001, S110 - a failed read left no file
            pass

    def close(self) -> None:
        """Stop reading ahead and delete every file not sent yet (idempotent)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._forget_sent()
        for _, future in self.queued:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result()[0].unlink(missing_ok=True)
        self.queued.clear()
        self.pending.clear()


class QueryRetrieve:
    """C-FIND/C-MOVE/C-GET against Orthanc's index, audited; one per gateway."""

    def __init__(self, store: IndexStore, *, ae_title: str, destinations: tuple[str, ...] = (),
                 audit: AuditProvider | None = None, network_timeout: float = 60.0,
                 work_dir: Path | None = None, push_moves: bool = True,
                 direct_max_size: int = DIRECT_MAX_SIZE) -> None:
        self.store = store
        # Where instances wait between Orthanc and the wire (the spool's disk).
        self.work_dir = work_dir or Path(tempfile.gettempdir()) / "filmless-retrieve"
        self.ae_title = ae_title
        self.destinations = {a.ae_title: a for a in (ReturnAddress.parse(d) for d in destinations)}
        self.audit_provider = audit
        self.network_timeout = network_timeout
        # C-MOVEs sent by the archive itself when the store can (storage_push.py).
        self.push_moves = push_moves and hasattr(store, "push_instances")
        # C-MOVEs of instances no larger than this are sent from memory (direct_move.py).
        self.direct_max_size = direct_max_size
        # Threads kept for the small jobs beside a C-MOVE (the series look-ups, the audit
        # row), instead of starting threads for each move.
        self.workers = ThreadPoolExecutor(max_workers=RETRIEVE_WORKERS, thread_name_prefix="retrieve")
        # Threads reading files ahead of C-MOVEs sent from memory, shared by the moves running at once.
        self.readers = ThreadPoolExecutor(max_workers=RETRIEVE_READERS, thread_name_prefix="retrieve-read")

    # -- audit ------------------------------------------------------------------
    def _audit(self, action: str, calling_aet: str, peer: str, model: str, level: str, keys: dict[str, str],
               matches: list[Match], outcome: str = "success", **extra: object) -> None:
        patients: dict[tuple[str, str], dict[str, str]] = {}
        for match in matches:
            p = match.patient
            patients.setdefault((p["PatientID"], p["PatientName"]), p)
        event: dict[str, object] = {
            "action": action, "outcome": outcome, "calling_aet": calling_aet, "peer": peer,
            "model": model, "level": level, "query": dict(keys), "patients": list(patients.values()),
            "results": len(matches), **extra,
        }
        audit_log.info(json.dumps({"event": action, **event}, ensure_ascii=False))
        if self.audit_provider is not None:
            self.audit_provider(event)

    # -- C-FIND -------------------------------------------------------------------
    def find(self, event: evt.Event, calling_aet: str, peer: str) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        model = model_of(event.context.abstract_syntax)
        try:
            identifier = read_identifier(event, "C-FIND", calling_aet)
        except Exception as exc:  # noqa: BLE001 - undecodable identifier
            yield _failure(int(Status.CANNOT_UNDERSTAND), f"identifier cannot be decoded: {exc}"), None
            return

        def audit(matches: list[Match], level: str, keys: dict[str, str]) -> None:
            self._audit("dicom.query", calling_aet, peer, model, level, keys, matches)

        try:
            yield from find_responses(self.store, identifier, model, ae_title=self.ae_title, audit=audit,
                                      cancelled=lambda: bool(event.is_cancelled))
        except Exception as exc:  # noqa: BLE001 - storage or audit failing must not break the AE
            log.error("query from %s failed: %s", calling_aet, exc)
            yield _failure(int(Status.UNABLE_TO_PROCESS), "query unavailable"), None

    # -- C-MOVE / C-GET -------------------------------------------------------------
    def _resolve(self, identifier: Dataset, model: str) -> tuple[str, dict[str, str], list[Match]]:
        """The resources a retrieve names by unique keys (no wildcards, PS3.4 C.4.2.2.1)."""
        level = query_level(identifier, model)
        keys: dict[str, str] = {}
        for lvl in ("Patient", "Study", "Series", "Instance"):
            if model == "STUDY" and lvl == "Patient":
                continue
            key = UNIQUE_KEYS[lvl]
            raw = identifier.get(key)
            value = "" if raw is None else (
                "\\".join(str(v) for v in raw) if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue"
                else str(raw).strip()
            )
            if value:
                if any(c in value for c in "*?"):
                    raise QueryFailed(int(Status.SOP_CLASS_MISMATCH), f"{key} may not contain wildcards in a retrieve")
                keys[key] = value
            elif lvl == level:
                raise QueryFailed(int(Status.SOP_CLASS_MISMATCH), f"{key} is required to retrieve at this level")
            if lvl == level:
                break
        return level, keys, find_matches(self.store, level, keys, limit=65535)

    def _resolve_audited(self, event: evt.Event, action: str, calling_aet: str, peer: str,
                         destination: str) -> tuple[str, dict[str, str], list[Match]]:
        """:meth:`_resolve`, a refusal audited."""
        model = model_of(event.context.abstract_syntax)
        try:
            service = type(event.request).__name__.replace("_", "-")  # C-MOVE or C-GET
            return self._resolve(read_identifier(event, service, calling_aet), model)
        except QueryFailed as exc:
            self._audit(action, calling_aet, peer, model, "", {}, [], outcome="refused", reason=exc.reason,
                        destination=destination)
            raise

    def _prepare(self, event: evt.Event, action: str, calling_aet: str, peer: str,
                 destination: str) -> tuple[list[Any], _Prefetch]:
        """Resolve, audit, and start copying the instances from storage.

        The copying starts as soon as the instances are listed, while their
        SOP classes and transfer syntaxes (needed for the presentation
        contexts) are looked up and the retrieve is audited: nothing leaves
        before the audit, but the first files are on disk by the time the
        association is up. The caller must close the returned prefetch.
        """
        model = model_of(event.context.abstract_syntax)
        level, keys, matches = self._resolve_audited(event, action, calling_aet, peer, destination)
        listed = self.store.list_instances(level, [m.orthanc_id for m in matches])  # type: ignore[arg-type]
        prefetch = _Prefetch(self.store, listed, self.work_dir)
        try:
            instances = self.store.describe_instances(listed, workers=8)
            prefetch.keep_only({i.orthanc_id for i in instances})
            self._audit(action, calling_aet, peer, model, level, keys, matches, destination=destination,
                        instances=len(instances))
        except BaseException:
            prefetch.close()
            raise
        return instances, prefetch

    def open(self) -> None:
        """Create the work folder and remove what a crash left in it."""
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.work_dir.glob("*.dcm"):
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the shared worker threads (a retrieve still running fails its reads)."""
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.readers.shutdown(wait=False, cancel_futures=True)

    def _send_all(self, event: evt.Event, prefetch: _Prefetch) -> Iterator[tuple[int, Dataset | None]]:
        try:
            for _, ds in prefetch:
                if event.is_cancelled:
                    yield STATUS_CANCELLED, None
                    return
                yield STATUS_PENDING, ds
        finally:
            prefetch.close()

    def move(self, event: evt.Event, calling_aet: str, peer: str) -> Iterator[Any]:
        destination = str(event.move_destination or "").strip()
        address = self.destinations.get(destination)
        if address is None:
            log.warning("retrieve: %s asked to move to unknown destination %r", calling_aet, destination)
            try:
                self._audit("dicom.retrieve", calling_aet, peer, model_of(event.context.abstract_syntax), "", {}, [],
                            outcome="refused", reason="unknown move destination", destination=destination)
            except Exception as exc:  # noqa: BLE001 - refusing anyway
                log.error("retrieve: audit failed: %s", exc)
            yield None, None  # pynetdicom answers 0xA801 (move destination unknown)
            return
        yield from self._planned_move(event, calling_aet, peer, address)

    def _planned_move(self, event: evt.Event, calling_aet: str, peer: str, address: ReturnAddress) -> Iterator[Any]:
        """A C-MOVE sent from memory (direct_move.py), by the archive itself (storage_push.py),
        or through pynetdicom (the fallback of both).

        Sent from memory when every instance is at most ``direct_max_size``
        bytes; otherwise by the archive when ``push_moves``.

        Resolved, listed and audited here as any retrieve, before anything
        is sent (reading from storage starts while the audit is written);
        the SOP classes and transfer syntaxes (one look-up per instance) are
        only read for what would go out through pynetdicom.
        """
        model = model_of(event.context.abstract_syntax)
        level, keys, matches = self._resolve_audited(event, "dicom.retrieve", calling_aet, peer, address.ae_title)
        listed = self.store.list_instances(level, [m.orthanc_id for m in matches])  # type: ignore[arg-type]

        def prepare(remaining: list[Any]) -> tuple[list[Any], _Prefetch, list[PresentationContext]]:
            described = self.store.describe_instances(remaining, workers=8)
            return described, _Prefetch(self.store, described, self.work_dir), _contexts(described)

        common: dict[str, Any] = {"local_aet": self.ae_title, "originator_aet": calling_aet,
                                  "originator_id": int(event.request.MessageID or 0), "prepare": prepare}
        audit = functools.partial(self._audit, "dicom.retrieve", calling_aet, peer, model, level, keys, matches,
                                  destination=address.ae_title, instances=len(listed))
        plan: MovePlan
        if listed and all(0 < int(i.size or 0) <= self.direct_max_size for i in listed):
            # The first file tells the first series' SOP class and transfer syntax (it is read
            # first anyway); the other series' first instances are looked up meanwhile.
            prefetch = MemoryPrefetch(self.store, listed, pool=self.readers)
            first: dict[str, Any] = {}
            for instance in listed:
                first.setdefault(instance.series_id, instance)
            others = list(first.values())[1:]
            heads: Future[list[Any]] = Future()
            if others:
                heads = self.workers.submit(self.store.describe_instances, others, workers=4)
            else:
                heads.set_result([])
            plan = DirectPlan(self.store, listed, address, timeout=self.network_timeout, prefetch=prefetch,
                              heads=heads, audit=audit, **common)
        elif self.push_moves:
            # Orthanc's client gives up on a silent workstation after network_timeout
            # (the job fails, the gateway takes over); stall_limit only guards against a job
            # that neither fails nor moves, generously: one instance may be gigabytes.
            plan = PushPlan(self.store, listed, address, stall_limit=10 * self.network_timeout, **common)
        else:
            plan = MovePlan(self.store, listed, address, **common)
        if not isinstance(plan, DirectPlan):
            # Orthanc's job starts sending as soon as the association is "opened";
            # through pynetdicom, the association is set up after the audit as before.
            audit()
        # Pending responses to the requestor encoded without pydicom (stream_send.py).
        stream_files(event.assoc)
        try:
            yield address.host, address.port, {"ae_title": address.ae_title, "storage_push": plan,
                                               "evt_handlers": [(evt.EVT_CONN_OPEN, _no_delay)]}
            yield len(listed)
            if isinstance(plan, DirectPlan):
                # Written while the association to the destination was set up (DirectPlan.open);
                # checked before the first instance goes.
                plan.audit_once()
                try:
                    plan.auditing.result()
                except Exception as exc:  # noqa: BLE001 - nothing was sent; the requestor gets a failure
                    log.error("retrieve: audit failed, nothing sent: %s", exc)
                    yield int(Status.UNABLE_TO_PROCESS), None
                    return
            for index, instance in enumerate(listed):
                if event.is_cancelled:
                    yield STATUS_CANCELLED, None
                    return
                yield STATUS_PENDING, _Planned(instance.sop_class_uid, instance.sop_instance_uid, index)
        finally:
            if isinstance(plan, DirectPlan):
                plan.prefetch.close()

    def get(self, event: evt.Event, calling_aet: str, peer: str) -> Iterator[Any]:
        instances, prefetch = self._prepare(event, "dicom.retrieve", calling_aet, peer, calling_aet)
        try:
            _send_raw(event.assoc)
            yield len(instances)
            yield from self._send_all(event, prefetch)
        finally:
            prefetch.close()


def _contexts(instances: list[Any]) -> list[PresentationContext]:
    """Per SOP class: one context per stored transfer syntax (the file goes
    out as stored), and one offering both uncompressed syntaxes, which
    pynetdicom converts between when the workstation takes only one."""
    wanted: dict[tuple[str, str], None] = {}
    for inst in instances:
        if inst.transfer_syntax:
            wanted.setdefault((inst.sop_class_uid, inst.transfer_syntax), None)
        wanted.setdefault((inst.sop_class_uid, ""), None)
    contexts = []
    for sop_class, ts in list(wanted)[:_MAX_CONTEXTS]:
        contexts.append(build_context(sop_class, [ts] if ts else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return contexts


def _failure(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds
