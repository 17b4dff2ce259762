"""Refuse oversized PDUs before buffering them.

Why: pynetdicom's DUL reads a PDU's 6-byte header and then ``recv``s the
whole length the peer claims into one growing buffer. An A-ASSOCIATE-RQ
header claiming 4 GiB followed by zeros therefore made the gateway buffer
gigabytes before any AE title was checked (issue 10, item 8).

:class:`LimitedDUL` replaces the one method that reads a PDU. It checks the
claimed length against a cap *before* reading the body:

* A-ASSOCIATE-RQ/AC and the small control PDUs: ``request_limit`` (a real
  request with 128 presentation contexts is well under 100 KiB);
* P-DATA-TF: the maximum PDU length this side announced during negotiation
  (PS3.8 9.3.5: "Maximum Length Received" bounds the variable field).

A PDU over its cap is answered with A-ABORT (service provider, invalid PDU
parameter value) and the connection is closed at once, so nothing more of
the claimed stream is read. The body is read with ``recv_into`` into a
buffer of the exact size, in large chunks, instead of growing a bytearray
4 KiB at a time.

The class is swapped onto the DUL that pynetdicom creates for each accepted
association (:func:`limit_pdus`), so the rest of pynetdicom is untouched.
"""

from __future__ import annotations

import logging
import select
import ssl
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynetdicom.dul import DULServiceProvider

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from .fast_store import FastStore

__all__ = ["LimitedDUL", "limit_pdus", "REQUEST_LIMIT", "abort_pdu"]

log = logging.getLogger("pacs_gateway.pdu_limits")

# A-ASSOCIATE-RQ and every PDU other than P-DATA-TF.
REQUEST_LIMIT = 1024 * 1024
_PDU_TYPES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07})
_P_DATA = 0x04
_CHUNK = 1024 * 1024


def abort_pdu(reason: int = 0x06) -> bytes:
    """A-ABORT PDU from the service provider (source 2) with ``reason`` (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, reason)


class LimitedDUL(DULServiceProvider):
    """pynetdicom's DUL with capped PDU lengths (see the module docstring)."""

    request_limit: int = REQUEST_LIMIT
    p_data_fallback: int = 4 * 1024 * 1024
    # The A-ASSOCIATE-RQ must be complete by then (monotonic clock): a peer
    # trickling one byte at a time would otherwise keep this thread in recv()
    # for ever, and pynetdicom's ACSE timeout cannot stop a blocked read.
    request_deadline: float | None = None

    def _limit(self, pdu_type: int) -> int:
        if pdu_type != _P_DATA:
            return self.request_limit
        assoc = self.assoc
        local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
        announced = int(local.maximum_length or 0)
        return announced if announced > 0 else self.p_data_fallback

    def _refuse(self, why: str) -> None:
        peer = getattr(self.assoc.requestor, "address", "?")
        log.warning("aborting connection from %s: %s", peer, why)
        sock = self.socket
        raw = getattr(sock, "socket", None)
        if raw is not None:
            try:
                raw.sendall(abort_pdu())
            except OSError:
                pass
        if sock is not None:
            # Puts Evt17 (transport closed) on the state machine's queue.
            sock.close()
        else:  # pragma: no cover - socket already gone
            self.event_queue.put("Evt17")

    # -- the C-STORE fast path (fast_store.py) ---------------------------------
    # Set per association before its threads start; called once, on the first
    # P-DATA-TF in data transfer, when the accepted contexts are known.
    fast_store_factory: Callable[[Association], FastStore | None] | None = None
    _fast: FastStore | None = None

    def _take_fast(self, data: bytearray) -> bool:
        """Whether the fast path took this P-DATA-TF PDU (else pynetdicom gets it)."""
        fast = self._fast
        if fast is None:
            factory = self.fast_store_factory
            if factory is None or self.state_machine.current_state != "Sta6":
                return False
            self.fast_store_factory = None
            fast = self._fast = factory(self.assoc)
            if fast is None:
                return False
        if fast.current is None and (not self.event_queue.empty() or self.state_machine.current_state != "Sta6"):
            # pynetdicom has PDUs of its own still to act on: keep the order.
            return False
        return fast.take(data, self)

    def send_fast(self, data: bytes) -> None:
        """Write a whole PDU from the DUL thread, never in the middle of another thread's PDU."""
        lock = getattr(self, "_send_lock", None)
        if lock is None:
            self.socket.send(data)  # type: ignore[union-attr]
            return
        with lock:
            self.socket.send(data)  # type: ignore[union-attr]

    def abort_fast(self, why: str) -> None:
        """A-ABORT and close: the peer broke the P-DATA stream of a C-STORE."""
        self._refuse(why)

    def close_fast(self) -> None:
        """Drop a half-received fast-path instance (the connection closed)."""
        fast = self._fast
        if fast is not None:
            fast.close()

    def _deadline(self) -> tuple[float | None, float | None]:
        """(absolute deadline, idle limit per read) for the PDU being read."""
        if self.request_deadline is not None:
            return self.request_deadline, None
        timeout = self.assoc.network_timeout
        return None, float(timeout) if timeout is not None else None

    def _recv_exact(self, view: memoryview) -> bool:
        """Fill ``view``; False when the peer closed. TimeoutError when it is too slow."""
        raw: Any = getattr(self.socket, "socket", None)
        if raw is None:
            return False
        deadline, idle = self._deadline()
        got, total = 0, len(view)
        while got < total:
            wait = idle if deadline is None else deadline - time.monotonic()
            if wait is not None and not (isinstance(raw, ssl.SSLSocket) and raw.pending()):
                if wait <= 0 or not select.select([raw], [], [], wait)[0]:
                    raise TimeoutError(f"no data for {wait:.1f} s" if deadline is None else "request deadline passed")
            n = raw.recv_into(view[got:], min(_CHUNK, total - got))
            if not n:
                return False
            got += n
        return True

    def _read_pdu_data(self) -> None:
        """Read one PDU, refusing it before its body when it claims too much."""
        head = bytearray(6)
        try:
            complete = self._recv_exact(memoryview(head))
        except TimeoutError as exc:
            self._refuse(f"PDU header incomplete: {exc}")
            return
        except (OSError, ValueError):
            complete = False
        if not complete:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", head)
        if pdu_type not in _PDU_TYPES:
            self._refuse(f"unknown PDU type 0x{pdu_type:02X}")
            return
        limit = self._limit(pdu_type)
        if length > limit:
            self._refuse(f"PDU type 0x{pdu_type:02X} claims {length} bytes (limit {limit})")
            return
        data = bytearray(6 + length)
        data[:6] = head
        view = memoryview(data)
        try:
            complete = self._recv_exact(view[6:])
        except TimeoutError as exc:
            self._refuse(f"PDU type 0x{pdu_type:02X} of {length} bytes incomplete: {exc}")
            return
        except (OSError, ValueError):
            complete = False
        finally:
            view.release()
        if not complete:
            log.info("connection closed in the middle of a PDU")
            self.event_queue.put("Evt17")
            return
        if pdu_type == _P_DATA and self._take_fast(data):
            return
        self.pass_on(data)

    def pass_on(self, data: bytearray) -> None:
        """Decode a whole PDU and queue it for pynetdicom's state machine."""
        pdu_type = data[0]
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:  # noqa: BLE001 - any undecodable PDU is Evt19, as in pynetdicom
            log.warning("undecodable PDU type 0x%02X: %s", pdu_type, exc)
            self.event_queue.put("Evt19")
            return
        if pdu_type == 0x01:
            # The request is in: from now on only the idle limit applies.
            self.request_deadline = None
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


def limit_pdus(
    assoc: Association,
    request_limit: int = REQUEST_LIMIT,
    p_data_fallback: int | None = None,
    request_timeout: float | None = None,
) -> None:
    """Make ``assoc``'s DUL a :class:`LimitedDUL` (before its thread starts)."""
    dul = assoc.dul
    dul.__class__ = LimitedDUL
    limited: LimitedDUL = dul  # type: ignore[assignment]
    limited.request_limit = request_limit
    if request_timeout is not None:
        limited.request_deadline = time.monotonic() + request_timeout
    if p_data_fallback is not None:
        limited.p_data_fallback = p_data_fallback
