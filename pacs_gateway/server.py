"""The gateway AE: binding, contexts, TLS, forwarders, start/stop."""

from __future__ import annotations

import copy
import logging
import signal
import ssl
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated module
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)

from .admission import Admission, GuardedServer, make_server
from .commitment import Commitments
from .forwarder import Forwarder, Store
from .handlers import GatewayHandlers
from .ian import AvailabilityNotifier
from .mpps import MppsProvider, MppsStore
from .normalise import IdentityProvider
from .peers import ExtraPeers, PeerPolicy
from .private_classes import PRIVATE_STORAGE_CLASSES, register_storage_classes
from .query import AuditProvider
from .receive_file import install as install_receive_file
from .retrieve import MoveAE, QueryRetrieve, add_query_retrieve_contexts
from .settings import GatewaySettings
from .spool import Spool
from .storage_classes import extra_standard_storage_classes, unrouted
from .worklist import WorklistProvider

__all__ = ["Gateway", "GatewayStats", "TRANSFER_SYNTAXES"]

log = logging.getLogger("pacs_gateway")

# Accepted for every storage SOP class. pynetdicom picks, within a proposed
# context, the first syntax of THIS list the modality offers: lossless
# compression first (keeps what the modality has, never loses information),
# then uncompressed, then lossy (only if that is all the modality offers).
TRANSFER_SYNTAXES: list[UID] = [
    JPEGLSLossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEG2000Lossless,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
    # Video (endoscopy, ultrasound clips): stored as sent, like Orthanc does.
    *MPEGTransferSyntaxes,
]


class SupportedContexts(list[PresentationContext]):
    """The AE's supported presentation contexts, frozen once and shared by every association.

    Why: pynetdicom gives every accepted association ``deepcopy`` of the
    server's contexts. With every storage class offered in every transfer
    syntax (about 230 contexts, 6,400 UIDs) that deep copy rebuilt and
    re-validated each UID: ~0.1 s of CPU per association, before a modality
    or a C-MOVE requestor hears "accepted" (Orthanc answers in under 1 ms);
    even a copy of each context with its own transfer syntax list cost
    ~0.8 ms. Negotiation only reads these contexts (it builds new ones for
    the results), so each association gets the same contexts, their transfer
    syntaxes made tuples: an accidental change fails instead of leaking into
    other associations.
    """

    def __init__(self, contexts: Iterable[PresentationContext] = ()) -> None:
        frozen = []
        for cx in contexts:
            twin = copy.copy(cx)
            twin._transfer_syntax = tuple(cx._transfer_syntax)  # type: ignore[assignment]  # read-only on purpose
            frozen.append(twin)
        super().__init__(frozen)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


@dataclass(frozen=True)
class GatewayStats:
    received: int
    forwarded: int
    quarantined: int
    refused: int
    backlog: int
    # Storage commitment requests whose report is not delivered yet.
    commitments: int = 0
    associations: int = 0  # accepted
    associations_rejected: int = 0  # refused by the peer policy (AE title / address)
    worklist_queries: int = 0


# Stream every received data set to a file instead of memory: a 1 GB
# multi-frame instance then costs a few PDUs of RAM. pynetdicom creates that
# file with NamedTemporaryFile() in the default temp dir, which we point at
# the spool's incoming/ so that acknowledging is a rename on the same file
# system. Both switches are process-wide: in production the gateway has its
# own process. Several gateways in one process (tests) still work: the temp
# dir follows the newest running one and the others' handlers move files
# over; the original values come back when the last one stops.
#
# pydicom's value validation on read is off while a gateway runs. pynetdicom
# builds a pydicom UID for every UID of an association request several times
# over (decoding the PDU, the primitive, negotiation, the answer), and each
# construction ran the UI regular expression: for storescu's 120 proposed
# contexts that was ~7 of the ~25 ms of CPU an association cost to accept
# (four modalities of 50 slices each: 0.15 ms per instance). It only ever
# warned: what the gateway refuses is decided by its own checks
# (validate.py, normalise.py), which never relied on those warnings.
_receivers: list[Path] = []
_receivers_lock = threading.Lock()
_original = {"chunked": _config.STORE_RECV_CHUNKED_DATASET, "tempdir": tempfile.tempdir,
             "validation": pydicom_config.settings.reading_validation_mode}


def _receive_to(incoming: Path) -> None:
    with _receivers_lock:
        if not _receivers:
            _original.update(chunked=_config.STORE_RECV_CHUNKED_DATASET, tempdir=tempfile.tempdir,
                             validation=pydicom_config.settings.reading_validation_mode)
        _receivers.append(incoming)
        _config.STORE_RECV_CHUNKED_DATASET = True
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        tempfile.tempdir = str(incoming)
        # A full disk mid-instance then answers 0xA700 instead of dropping the association.
        install_receive_file()


def _stop_receiving_to(incoming: Path) -> None:
    with _receivers_lock:
        if incoming in _receivers:
            _receivers.remove(incoming)
        if _receivers:
            tempfile.tempdir = str(_receivers[-1])
        else:
            _config.STORE_RECV_CHUNKED_DATASET = bool(_original["chunked"])
            tempfile.tempdir = _original["tempdir"]  # type: ignore[assignment]
            pydicom_config.settings.reading_validation_mode = _original["validation"]  # type: ignore[assignment]


class _LazyHandshakeContext(ssl.SSLContext):
    """Do the TLS handshake in the association's thread, not in accept().

    pynetdicom wraps accepted sockets in its single accept loop; with the
    default ``do_handshake_on_connect=True`` one client that connects and
    stays silent would stall every other modality. Deferred, OpenSSL runs the
    handshake on the first read, in that association's own thread, bounded by
    the socket timeout set here.
    """

    handshake_timeout: float = 60.0

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["do_handshake_on_connect"] = False
        sock.settimeout(self.handshake_timeout)
        return super().wrap_socket(sock, *args, **kwargs)


def _tls_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = _LazyHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.handshake_timeout = settings.network_timeout
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    if settings.tls_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(settings.tls_ca))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Gateway:
    """DICOM gateway: C-ECHO, C-STORE into a durable spool, MWL C-FIND.

    ``store`` is any object with ``upload(bytes) -> storage.UploadResult``
    (in production :class:`storage.OrthancStore`). ``worklist(query)``
    answers Modality Worklist queries; ``identity(accession, study_uid)``
    returns the EMR's patient identity to coerce into instances.
    ``mpps(event)`` is told every Modality Performed Procedure Step status
    change (see :mod:`pacs_gateway.mpps`); retried in the background until
    it returns without raising. ``audit(event)`` records each query and
    retrieve in the EMR's audit log (see :mod:`pacs_gateway.query`); a store
    with an index (``find_resources``) enables Query/Retrieve.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        store: Store,
        *,
        worklist: WorklistProvider | None = None,
        identity: IdentityProvider | None = None,
        mpps: MppsProvider | None = None,
        audit: AuditProvider | None = None,
        extra_peers: ExtraPeers | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worklist = worklist
        self.identity = identity
        self.mpps = mpps
        self.peers = PeerPolicy(settings.allowed_peers, extra_peers)
        self.spool = Spool(settings.spool_dir, settings.min_free_bytes)
        self.forwarder = Forwarder(
            self.spool,
            store,
            workers=settings.forwarders,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
            identity=identity,
            identity_timeout=settings.identity_timeout,
            busy_uploads=settings.forwarders_while_receiving,
            hold_limit=settings.forward_hold_limit,
            idle_after=settings.forward_idle_after,
            on_event=self.count_event,
        )
        self.mpps_store = MppsStore(
            settings.spool_dir / "mpps", mpps, retry_initial=settings.retry_initial, retry_max=settings.retry_max
        )
        # Storage commitment needs to ask Orthanc what it keeps.
        lookup = getattr(store, "instance_sop_class", None)
        self.commitments = (
            Commitments(
                settings.spool_dir / "commitment",
                lookup,
                self.forwarder.whereabouts,
                ae_title=settings.ae_title,
                return_addresses=settings.commitment_peers,
                wait_limit=settings.commitment_wait,
                retry_initial=settings.retry_initial,
                retry_max=settings.retry_max,
                network_timeout=settings.network_timeout,
            )
            if callable(lookup)
            else None
        )
        self.query_retrieve = (
            QueryRetrieve(store, ae_title=settings.ae_title, destinations=settings.destinations, audit=audit,  # type: ignore[arg-type]
                          network_timeout=settings.network_timeout, work_dir=settings.spool_dir / "retrieve",
                          push_moves=settings.move_by_storage,
                          direct_max_size=settings.move_direct_max_mb * 1024 * 1024)
            if callable(getattr(store, "find_resources", None))
            else None
        )
        self.availability = (
            AvailabilityNotifier(settings.spool_dir / "ian", store, settings.ian_subscribers,  # type: ignore[arg-type]
                                 ae_title=settings.ae_title, retry_initial=settings.retry_initial,
                                 retry_max=settings.retry_max, network_timeout=settings.network_timeout)
            if settings.ian_subscribers and callable(getattr(store, "last_change", None))
            else None
        )
        self._handlers = GatewayHandlers(self)
        self.admission = Admission(
            self.peers,
            max_associations=settings.max_associations,
            per_ip=settings.max_connections_per_ip,
            max_pending=settings.max_pending_connections,
            request_timeout=settings.request_timeout,
            max_pdu_size=settings.max_pdu_size,
        )
        self._server: GuardedServer | None = None
        self._counts = {
            "received": 0, "forwarded": 0, "quarantined": 0, "refused": 0,
            "associations": 0, "associations_rejected": 0, "worklist_queries": 0,
        }
        self._counts_lock = threading.Lock()
        self._stopped = threading.Event()

    # -- stats --------------------------------------------------------------
    def count_event(self, name: str) -> None:
        """Count an image received, forwarded, quarantined or refused, an association or a worklist query
        (for :attr:`stats` and :mod:`pacs_gateway.metrics`)."""
        with self._counts_lock:
            self._counts[name] += 1

    @property
    def stats(self) -> GatewayStats:
        with self._counts_lock:
            counts = dict(self._counts)
        pending = self.commitments.pending if self.commitments is not None else 0
        return GatewayStats(backlog=self.forwarder.pending, commitments=pending, **counts)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("gateway is not started")
        return int(self._server.server_address[1])

    # -- lifecycle ----------------------------------------------------------
    def _build_ae(self) -> AE:
        s = self.settings
        # Event-driven C-MOVE sub-associations (retrieve.MoveAE).
        ae = MoveAE(ae_title=s.ae_title)
        # Large PDUs: few PDUs (and Python calls) per instance; bounded, so a
        # peer cannot make us buffer gigabytes (pdu_limits.py).
        ae.maximum_pdu_size = s.max_pdu_size
        # Association slots are counted by self.admission, only for requests
        # that were read and passed the AE check; pynetdicom's own count
        # includes connections still waiting for theirs.
        ae.maximum_associations = s.max_associations + s.max_pending_connections
        ae.network_timeout = s.network_timeout
        # Also the time a connection has to complete its A-ASSOCIATE-RQ.
        ae.acse_timeout = s.request_timeout
        ae.dimse_timeout = s.network_timeout
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax:
                ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        for uid in register_storage_classes([*PRIVATE_STORAGE_CLASSES, *s.extra_sop_classes]):
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        # Retired and recent standard storage classes (storage_classes.py).
        extra = extra_standard_storage_classes()
        register_storage_classes(unrouted(extra))
        for uid in extra:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        if self.worklist is not None:
            ae.add_supported_context(ModalityWorklistInformationFind)
        # Always offered: without an EMR the steps are still kept (and logged).
        ae.add_supported_context(ModalityPerformedProcedureStep)
        if self.commitments is not None:
            ae.add_supported_context(StorageCommitmentPushModel)
        if self.query_retrieve is not None:
            add_query_retrieve_contexts(ae)
        return ae

    def start(self) -> None:
        """Resume the spool, start the forwarders and listen (returns at once)."""
        if self._server is not None:
            return
        self._stopped.clear()
        backlog = self.spool.open()
        self.mpps_store.open()
        _receive_to(self.spool.incoming)
        self.forwarder.start(backlog)
        if self.commitments is not None:
            # After the forwarder: commitment decisions read its books, which
            # must already count the resumed backlog as on its way.
            self.commitments.open()
        if self.availability is not None:
            self.availability.open()
        if self.query_retrieve is not None:
            self.query_retrieve.open()
        ae = self._build_ae()
        try:
            self._server = make_server(
                ae,
                (self.settings.host, self.settings.port),
                self.admission,
                ssl_context=_tls_context(self.settings),
                evt_handlers=self._handlers.bindings() + self.admission.bindings(),
                contexts=SupportedContexts(ae.supported_contexts),
            )
        except BaseException:
            _stop_receiving_to(self.spool.incoming)
            if self.availability is not None:
                self.availability.close()
            self.forwarder.stop()
            self.mpps_store.close()
            if self.commitments is not None:
                self.commitments.close()
            raise
        log.info(
            "gateway %s listening on %s:%d (tls=%s, worklist=%s, backlog=%d)",
            self.settings.ae_title, self.settings.host, self.port,
            self.settings.tls_cert is not None, self.worklist is not None, len(backlog),
        )

    def stop(self) -> None:
        """Stop listening and forwarding; spooled instances stay for the next start."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            _stop_receiving_to(self.spool.incoming)
        self.forwarder.stop()
        self.mpps_store.close()
        if self.commitments is not None:
            self.commitments.close()
        if self.availability is not None:
            self.availability.close()
        if self.query_retrieve is not None:
            self.query_retrieve.close()
        self._stopped.set()
        log.info("gateway stopped: %s", self.stats)

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` is called or SIGTERM/SIGINT arrives."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: threading.Thread(target=self.stop, daemon=True).start())
        self.start()
        while not self._stopped.wait(1.0):
            pass

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
