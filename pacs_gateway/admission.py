"""Who gets a thread, and who gets an association slot.

Why: pynetdicom starts an association (two threads) for every TCP
connection and counts it against ``maximum_associations`` from the moment
it is accepted. 40 connections that send nothing therefore held every slot
and real modalities got "Local Limit Exceeded"; a few hundred connections of
garbage locked the gateway out for most of a minute (issue 10, item 7).

The guard works in three steps, the cheap ones first:

1. **At accept** (:meth:`GuardedServer.verify_request`): an address that no
   allowed-peer rule could ever accept is closed at once; so is a
   connection over the per-address limit or over the limit of connections
   still waiting for their request. No association, no thread.
2. **Before the association** (:meth:`GatedRequestHandler.handle`): the
   connection's thread sleeps in ``select`` until the whole A-ASSOCIATE-RQ
   has arrived (``SO_RCVLOWAT``, ``MSG_PEEK``), for at most
   ``request_timeout`` seconds. Only a PDU of type A-ASSOCIATE-RQ with a
   plausible length gets an association; anything else is closed (an
   A-ABORT is sent to what looks like DICOM). Silent or trickling
   connections thus cost one sleeping thread, no CPU, and go away after a
   few seconds.
3. **At the request** (:meth:`Admission.on_requested`, after the AE check):
   only associations whose request was read and accepted count against
   ``max_associations``; the rest are rejected with "local limit exceeded".

The DUL then reads the request with its length capped
(:mod:`pacs_gateway.pdu_limits`) and pynetdicom's ACSE timeout (set to
``request_timeout``) ends a request whose body never completes.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
import weakref
from copy import deepcopy
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from .pdu_limits import REQUEST_LIMIT, abort_pdu, limit_pdus
from .peers import PeerPolicy
from .reactor import make_event_driven

__all__ = ["Admission", "GatedRequestHandler", "GuardedServer"]

log = logging.getLogger("pacs_gateway.admission")

# Fixed fields of an A-ASSOCIATE-RQ after the header (PS3.8 9.3.2): the
# shortest request that can be real.
_MIN_REQUEST = 68
_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", None)
_SWEEP_ABOVE = 1024


def _ip(address: Any) -> str:
    host = address[0] if isinstance(address, tuple) else str(address)
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class Admission:
    """Counters shared by the server, the request handler and the ACSE hook."""

    def __init__(
        self,
        peers: PeerPolicy,
        *,
        max_associations: int,
        per_ip: int,
        max_pending: int,
        request_timeout: float,
        max_pdu_size: int,
        request_limit: int = REQUEST_LIMIT,
    ) -> None:
        self.peers = peers
        self.max_associations = max_associations
        self.per_ip = per_ip
        self.max_pending = max_pending
        self.request_timeout = request_timeout
        self.max_pdu_size = max_pdu_size
        self.request_limit = request_limit
        self._lock = threading.Lock()
        # Open connections per address: the socket objects themselves, so a
        # connection closed by any path (pynetdicom, us, the peer) drops out
        # of the count when its file descriptor is gone.
        self._connections: dict[str, list[Any]] = {}
        self._pending = 0
        self._admitted: weakref.WeakSet[Any] = weakref.WeakSet()
        self.refused = {"address": 0, "per_ip": 0, "pending": 0, "no_request": 0, "slots": 0}
        self._last_logged: dict[str, tuple[float, int]] = {}

    def log_refusal(self, level: int, kind: str, message: str, *args: Any) -> None:
        """Log a refused connection, at most once a second per kind (a flood must not flood the log)."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._last_logged.get(kind, (0.0, 0))
            if now - last < 1.0:
                self._last_logged[kind] = (last, skipped + 1)
                return
            self._last_logged[kind] = (now, 0)
        if skipped:
            message += f" (and {skipped} more like it in the last second)"
        log.log(level, message, *args)

    # -- step 1: at accept ----------------------------------------------------
    def accept(self, sock: Any, address: Any) -> str | None:
        """Register a new connection; return why it is refused, or ``None``."""
        ip = _ip(address)
        if not self.peers.address_allowed(ip):
            self.refused["address"] += 1
            return f"address {ip} is not in the allowed peers"
        with self._lock:
            if len(self._connections) > _SWEEP_ABOVE:
                # Many addresses came and went (a scan): forget those with nothing open.
                for key in list(self._connections):
                    still = [s for s in self._connections[key] if s.fileno() != -1]
                    if still:
                        self._connections[key] = still
                    else:
                        del self._connections[key]
            live = [s for s in self._connections.get(ip, ()) if s.fileno() != -1]
            if len(live) >= self.per_ip:
                self._connections[ip] = live
                self.refused["per_ip"] += 1
                return f"{ip} already has {len(live)} connections open (limit {self.per_ip})"
            if self._pending >= self.max_pending:
                self.refused["pending"] += 1
                return f"{self._pending} connections are already waiting for their request"
            live.append(sock)
            self._connections[ip] = live
            self._pending += 1
        return None

    def request_done(self) -> None:
        with self._lock:
            self._pending -= 1

    def active_associations(self) -> int:
        """Associations holding a slot now (for metrics)."""
        with self._lock:
            return sum(1 for a in self._admitted if a.is_alive() and not a.is_released and not a.is_aborted)

    def open_connections(self, ip: str) -> int:
        with self._lock:
            return sum(1 for s in self._connections.get(ip, ()) if s.fileno() != -1)

    # -- step 2: before the association ---------------------------------------
    def await_request(self, sock: Any) -> str | None:
        """Wait for a whole A-ASSOCIATE-RQ; return why the connection is refused, or ``None``.

        The request is only peeked at (``MSG_PEEK``): pynetdicom reads it
        again from the socket once the association exists. Waiting for all
        of it here means a peer trickling its request costs a sleeping
        thread, never a polling association. TLS connections are passed on
        unread (the handshake happens in the association's thread); the PDU
        caps and the request deadline in :mod:`pacs_gateway.pdu_limits`
        bound them.
        """
        if isinstance(sock, ssl.SSLSocket):
            return None
        deadline = time.monotonic() + self.request_timeout
        try:
            head = self._peek(sock, 6, deadline)
            if isinstance(head, str):
                return head
            if head[0] != 0x01:
                return f"first PDU is type 0x{head[0]:02X}, not an A-ASSOCIATE-RQ"
            length = int.from_bytes(head[2:6], "big")
            if not _MIN_REQUEST <= length <= self.request_limit:
                try:
                    sock.sendall(abort_pdu())
                except OSError:
                    pass
                return f"A-ASSOCIATE-RQ claims {length} bytes (allowed {_MIN_REQUEST}..{self.request_limit})"
            whole = self._peek(sock, 6 + length, deadline)
            return whole if isinstance(whole, str) else None
        except OSError as exc:
            return f"connection failed: {exc}"

    def _peek(self, sock: Any, n: int, deadline: float) -> bytes | str:
        """The first ``n`` bytes, left in the socket; or why they did not come in time."""
        lowat = False
        if _SO_RCVLOWAT is not None:
            try:
                # select() then wakes only once n bytes are there (Linux caps
                # the value at half the receive buffer; the loop copes).
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, n)
                lowat = True
            except OSError:
                pass
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"no complete A-ASSOCIATE-RQ within {self.request_timeout:g} s"
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    continue
                data = sock.recv(n, socket.MSG_PEEK)
                if not data:
                    return "closed before sending a complete request"
                if data[0] != 0x01:
                    return f"first PDU is type 0x{data[0]:02X}, not an A-ASSOCIATE-RQ"
                if len(data) >= n:
                    return data
                # Fewer bytes than asked: select wakes again at once; do not spin.
                time.sleep(0.02 if lowat else 0.05)
        finally:
            if lowat:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, 1)
                except OSError:
                    pass

    # -- step 3: at the request --------------------------------------------------
    def on_requested(self, event: evt.Event) -> None:
        """Count the association against the slots (after the AE check, which may have rejected it)."""
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:
            return
        with self._lock:
            admitted = [a for a in self._admitted if a.is_alive() and not a.is_released and not a.is_aborted]
            full = len(admitted) >= self.max_associations
            if not full:
                self._admitted.add(assoc)
        if full:
            self.refused["slots"] += 1
            log.warning(
                "association from %s rejected: all %d association slots are in use",
                assoc.requestor.address, self.max_associations,
            )
            # A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local-limit-exceeded.
            assoc.acse.send_reject(0x02, 0x03, 0x02)
            assoc.kill()

    def bindings(self) -> list[Any]:
        return [(evt.EVT_REQUESTED, self.on_requested)]


class GatedRequestHandler(RequestHandler):
    """pynetdicom's request handler, but the association starts only after a plausible request header."""

    server: GuardedServer

    def handle(self) -> None:
        admission = self.server.admission
        try:
            why = admission.await_request(self.request)
        finally:
            admission.request_done()
        if why is not None:
            admission.refused["no_request"] += 1
            admission.log_refusal(logging.INFO, "no_request", "closing connection from %s: %s",
                                  _ip(self.client_address), why)
            self.server.shutdown_request(self.request)
            return
        super().handle()

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        admission = self.server.admission
        limit_pdus(assoc, admission.request_limit, admission.max_pdu_size, admission.request_timeout)
        # Loops that sleep until there is work instead of napping 1 ms (reactor.py).
        make_event_driven(assoc)
        return assoc


class _SharedContexts(list):  # type: ignore[type-arg]
    """The server's supported presentation contexts, deep-copied once.

    pynetdicom deep-copies the server's contexts for every association
    (``RequestHandler._create_association``): ~150 contexts, ~150 ms of GIL
    time per association, taken from the associations already receiving.
    Negotiation (``presentation.negotiate_as_acceptor`` and
    ``negotiate_unrestricted``, pynetdicom 2.x/3.x) only reads the
    acceptor's contexts and builds new ones for the answer, so every
    association can share these objects; each still gets a list of its own.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the checks of step 1 at accept time."""

    admission: Admission
    # Handler threads waiting for a request must not delay stop().
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 made connection bursts wait for
    # SYN retransmits (seconds), modalities included.
    request_queue_size = 256

    @property  # type: ignore[override]
    def contexts(self) -> list[Any]:
        return self._shared_contexts

    @contexts.setter
    def contexts(self, value: list[Any]) -> None:
        # A snapshot taken when the server is made: the gateway's AE is complete by then.
        self._shared_contexts = _SharedContexts(deepcopy(value))

    def verify_request(self, request: Any, client_address: Any) -> bool:
        why = self.admission.accept(request, client_address)
        if why is not None:
            self.admission.log_refusal(logging.WARNING, "accept", "refusing connection from %s: %s",
                                       _ip(client_address), why)
            return False
        return True


def make_server(ae: Any, address: tuple[str, int], admission: Admission, **kwargs: Any) -> GuardedServer:
    """Bind a :class:`GuardedServer` for ``ae`` and serve it from a daemon thread (like ``AE.start_server``)."""
    server: GuardedServer = ae.make_server(
        address, server_class=GuardedServer, request_handler=GatedRequestHandler, **kwargs
    )
    server.admission = admission
    thread = threading.Thread(target=server.serve_forever, name=f"GatewayAcceptor@{address[1]}", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server

