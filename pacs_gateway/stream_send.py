"""Send a stored file's data set to a peer in a few large writes instead of one Python trip per PDU.

Why: pynetdicom sends a file as P-DATA-TF PDUs no larger than the peer's
maximum PDU length (16 KiB for DCMTK's ``storescp``). Each PDU is built as
a primitive by the sending thread, queued, picked up by the DUL thread on
its next loop, wrapped in PDU objects and encoded: about 32 round trips
through both threads for a 512x512 CT slice, the largest cost of a C-MOVE
after the wait for the workstation (issue 12 §1, "as fast as a stock
Orthanc").

Here the command set still goes through pynetdicom unchanged; the data set
is handed to the DUL as one marker (:class:`_FileFragments`) in the same
queue, so it stays in order behind the command. When the DUL "sends" that
marker, :class:`StreamingDUL` reads the file in 1 MiB batches and writes
each batch as ready-made P-DATA-TF PDUs (the same framing pynetdicom would
produce: one PDV per PDU, control header 0x00, the last 0x02) with one
``send`` call. Memory stays at one batch whatever the file size.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_recv_handler, standard_dimse_sent_handler, standard_pdu_sent_handler
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from .dimse_fast import C_GET_RSP as C_GET_RSP_FIELD
from .dimse_fast import C_MOVE_RSP as C_MOVE_RSP_FIELD
from .dimse_fast import CommandError, pending_rsp, read_c_store_rsp
from .reactor import mixed_class

__all__ = ["StreamingDIMSE", "StreamingDUL", "dimse_sent_handlers", "stream_files"]

log = logging.getLogger(__name__)

# Bytes of the file read and written per send() call.
BATCH = 1024 * 1024
_PDU_HEAD = struct.Struct(">BBLLBB")  # PDU type, reserved, PDU length, PDV length, context ID, control header


class _FileFragments(bytes):
    """Stands in the P-DATA queue for the data set of ``path`` from ``offset`` on,
    after the encoded ``command`` set when one is given (then it stands for the
    whole DIMSE message)."""

    path: Path
    offset: int
    max_pdu: int
    command: bytes

    @classmethod
    def make(cls, path: Path, offset: int, max_pdu: int, command: bytes = b"") -> _FileFragments:
        marker = cls(b"\x02")
        marker.path, marker.offset, marker.max_pdu, marker.command = path, offset, max_pdu, command
        return marker


class _ReadyPDU(bytes):
    """Stands in the P-DATA queue for a whole P-DATA-TF PDU, already encoded (a Pending response)."""


def _pdu_events_quiet(assoc: Any) -> bool:
    """Whether nothing but pynetdicom's debug logging listens to PDUs and bytes sent on ``assoc``
    (then a ready-made PDU may skip pynetdicom's PDU objects and their events)."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG) or assoc.get_handlers(evt.EVT_DATA_SENT):
        return False
    return all(func is standard_pdu_sent_handler for func, _ in assoc.get_handlers(evt.EVT_PDU_SENT))


def pdus_for(data: memoryview | bytes, context_id: int, fragment: int, last: bool,
             command: bool = False) -> bytearray:
    """``data`` framed as P-DATA-TF PDUs of at most ``fragment`` data bytes each (PS3.8 9.3.5).

    The final PDU's control header says "last fragment" when ``last``;
    ``command`` marks the fragments as command set (PS3.8 E.2).
    """
    out = bytearray()
    total = len(data)
    base = 0x01 if command else 0x00
    for start in range(0, total, fragment):
        chunk = data[start : start + fragment]
        flag = base | (0x02 if last and start + fragment >= total else 0x00)
        out += _PDU_HEAD.pack(0x04, 0, len(chunk) + 6, len(chunk) + 2, context_id, flag)
        out += chunk
    return out


def pdu_parts(data: memoryview, context_id: int, fragment: int, last: bool) -> list[memoryview]:
    """:func:`pdus_for` as a list of PDU headers and slices of ``data``, for :func:`send_parts`."""
    parts: list[memoryview] = []
    total = len(data)
    full = memoryview(_PDU_HEAD.pack(0x04, 0, fragment + 6, fragment + 2, context_id, 0x00))
    for start in range(0, total, fragment):
        chunk = data[start : start + fragment]
        flag = 0x02 if last and start + fragment >= total else 0x00
        if len(chunk) == fragment and not flag:
            parts.append(full)
        else:
            parts.append(memoryview(_PDU_HEAD.pack(0x04, 0, len(chunk) + 6, len(chunk) + 2, context_id, flag)))
        parts.append(chunk)
    return parts


# Buffers per sendmsg() call (Linux's IOV_MAX is 1024).
_MAX_PARTS = 512


def send_parts(sock: socket.socket, parts: list[memoryview]) -> None:
    """Write every byte of ``parts`` in order, as ``sendall`` would for their concatenation."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join(parts))  # TLS has no gathered write
        return
    first = 0
    while first < len(parts):
        sent = sock.sendmsg(parts[first : first + _MAX_PARTS])
        while sent and first < len(parts):
            size = len(parts[first])
            if sent >= size:
                sent -= size
                first += 1
            else:
                parts[first] = parts[first][sent:]
                sent = 0
        while first < len(parts) and not len(parts[first]):
            first += 1


class StreamingDUL(DULServiceProvider):
    """Sends a :class:`_FileFragments` marker as the file's PDUs; everything else as pynetdicom does."""

    def _send(self, pdu: Any) -> None:
        items = getattr(pdu, "presentation_data_value_items", None) if isinstance(pdu, P_DATA_TF) else None
        marker = items[0].presentation_data_value if items and len(items) == 1 else None
        if isinstance(marker, _ReadyPDU):
            raw_socket = getattr(self.socket, "socket", None)
            if raw_socket is None:
                log.warning("attempted to send a response over a closed connection")
                return
            try:
                raw_socket.sendall(marker)
            except OSError:
                self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom does
            return
        if not isinstance(marker, _FileFragments):
            super()._send(pdu)
            return
        transport = self.socket
        if transport is None:
            log.warning("attempted to send a data set over a closed connection")
            return
        context_id = int(items[0].presentation_context_id)  # type: ignore[index]
        fragment = marker.max_pdu - 6 if marker.max_pdu else BATCH
        # Whole fragments per batch, so only the very last PDU is short.
        batch = max(1, BATCH // fragment) * fragment
        # The command set (if carried) goes out in the same write as the first batch.
        head = pdus_for(marker.command, context_id, fragment, last=True, command=True) if marker.command else b""
        buffer: bytearray | None = self.__dict__.get("_batch_buffer")
        if buffer is None or len(buffer) != batch:
            # One buffer per association, reused for every file it sends.
            buffer = self.__dict__["_batch_buffer"] = bytearray(batch)
        with open(marker.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(marker.offset)
            remaining = size - marker.offset
            if remaining <= 0:
                # An empty data set is still one PDV flagged "last fragment".
                transport.send(bytes(head) + _PDU_HEAD.pack(0x04, 0, 6, 2, context_id, 0x02))
                return
            view = memoryview(buffer)
            try:
                while remaining > 0:
                    n = fh.readinto(view[: min(batch, remaining)])
                    if not n:
                        raise OSError(f"{marker.path} shrank while it was being sent")
                    remaining -= n
                    raw = transport.socket
                    if raw is None:
                        return  # connection lost: pynetdicom has queued Evt17
                    try:
                        # PDU headers and slices of the buffer in one gathered
                        # write: the file's bytes are not copied in Python.
                        parts = pdu_parts(view[:n], context_id, fragment, last=remaining <= 0)
                        if head:
                            parts.insert(0, memoryview(head))
                            head = b""
                        send_parts(raw, parts)
                    except OSError:
                        self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom does
                        return
            finally:
                view.release()


class StreamingDIMSE(DIMSEServiceProvider):
    """Queues a file-backed C-STORE's data set as one :class:`_FileFragments` marker;
    sends Pending C-MOVE/C-GET responses encoded by :mod:`dimse_fast`."""

    def send_file(self, command: bytes, path: Path, offset: int, context_id: int) -> None:
        """Send a whole DIMSE message: the encoded ``command`` set, then the data set of
        ``path`` from ``offset`` on, in the file's own encoding (one marker in the DUL queue)."""
        pdata = P_DATA()
        pdata.presentation_data_value_list.append(
            (context_id, _FileFragments.make(path, offset, int(self.maximum_pdu_size), command))
        )
        self.dul.send_pdu(pdata)

    def _send_pending(self, primitive: Any, context_id: int) -> bool:
        """Send a Pending C-MOVE/C-GET response without pydicom; False when it is not one."""
        if (not isinstance(primitive, (C_MOVE, C_GET)) or primitive.MessageIDBeingRespondedTo is None
                or primitive.Identifier is not None or primitive.Status != 0xFF00):
            return False
        try:
            command = pending_rsp(
                command_field=C_MOVE_RSP_FIELD if isinstance(primitive, C_MOVE) else C_GET_RSP_FIELD,
                responding_to=int(primitive.MessageIDBeingRespondedTo),
                sop_class=str(primitive.AffectedSOPClassUID or ""),
                status=0xFF00,
                remaining=int(primitive.NumberOfRemainingSuboperations or 0),
                completed=int(primitive.NumberOfCompletedSuboperations or 0),
                failed=int(primitive.NumberOfFailedSuboperations or 0),
                warning=int(primitive.NumberOfWarningSuboperations or 0),
            )
        except (CommandError, TypeError, ValueError):
            return False
        if self.maximum_pdu_size and len(command) + 6 > self.maximum_pdu_size:
            return False
        handlers = dimse_sent_handlers(self.assoc)
        if any(func is standard_dimse_sent_handler for func, _ in handlers):
            return False  # debug logging of DIMSE messages on: pynetdicom's own path, as logged
        if handlers:
            # They get the message pynetdicom would have built, built only if they look at it.
            _notify(self.assoc, handlers, _lazy_message(primitive, context_id))
        pdata = P_DATA()
        value = b"\x03" + command
        if _pdu_events_quiet(self.assoc):
            # The whole PDU, written as is by StreamingDUL._send.
            value = _ReadyPDU(_PDU_HEAD.pack(0x04, 0, len(command) + 6, len(command) + 2, context_id, 0x03) + command)
        pdata.presentation_data_value_list.append((context_id, value))
        self.dul.send_pdu(pdata)
        return True

    def receive_primitive(self, primitive: Any) -> None:
        # A plain C-STORE-RSP (the answer to each sub-operation of a retrieve),
        # in one PDV and with no message being assembled, is decoded without
        # pydicom; everything else as pynetdicom does.
        items = primitive.presentation_data_value_list
        if self.message is None and len(items) == 1 and items[0][1][:1] == b"\x03":
            context_id, value = items[0]
            rsp = read_c_store_rsp(memoryview(value)[1:])
            if rsp is not None and not dimse_handlers(self.assoc, evt.EVT_DIMSE_RECV):
                store = C_STORE()
                store.MessageIDBeingRespondedTo = rsp.responding_to
                if rsp.sop_class:
                    store.AffectedSOPClassUID = rsp.sop_class
                if rsp.sop_instance:
                    store.AffectedSOPInstanceUID = rsp.sop_instance
                store.Status = rsp.status
                self.msg_queue.put((context_id, store))
                return
        super().receive_primitive(primitive)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if self._send_pending(primitive, context_id):
            return
        if primitive.MessageIDBeingRespondedTo is None:
            message = _RQ_TO_MESSAGE[primitive.__class__]()
        else:
            message = _RSP_TO_MESSAGE[primitive.__class__]()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
        source = message._data_set_path
        if isinstance(source, tuple) and message.data_set is None:
            # The command alone through pynetdicom, then the data set as one marker.
            message._data_set_path = None
            for pdata in message.encode_msg(context_id, self.maximum_pdu_size):
                self.dul.send_pdu(pdata)
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(
                (context_id, _FileFragments.make(Path(source[0]), int(source[1]), int(self.maximum_pdu_size)))
            )
            self.dul.send_pdu(pdata)
            return
        for pdata in message.encode_msg(context_id, self.maximum_pdu_size):
            self.dul.send_pdu(pdata)


class _LazyMessage:
    """Builds pynetdicom's DIMSE message for a primitive on first use (see :func:`_lazy_message`)."""

    _primitive: Any
    _context_id: int

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_lazy") or name in ("_primitive", "_context_id"):
            raise AttributeError(name)
        built = self.__dict__.get("_lazy_built")
        if built is None:
            built = _RSP_TO_MESSAGE[self._primitive.__class__]()
            built.primitive_to_message(self._primitive)
            built.context_id = self._context_id
            self.__dict__["_lazy_built"] = built
        return getattr(built, name)


def dimse_handlers(assoc: Any, event: Any) -> list[tuple[Any, Any]]:
    """The EVT_DIMSE_SENT or EVT_DIMSE_RECV handlers of ``assoc`` that would do something for a message.

    pynetdicom binds its standard handlers to every association; they format
    the whole message into debug lines, then drop them unless the
    ``pynetdicom`` logger shows debug messages. The fast paths skip them then.
    """
    quiet = not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    standard = standard_dimse_sent_handler if event is evt.EVT_DIMSE_SENT else standard_dimse_recv_handler
    return [(func, args) for func, args in assoc.get_handlers(event) if not (quiet and func is standard)]


def dimse_sent_handlers(assoc: Any) -> list[tuple[Any, Any]]:
    """:func:`dimse_handlers` for EVT_DIMSE_SENT."""
    return dimse_handlers(assoc, evt.EVT_DIMSE_SENT)


def _notify(assoc: Any, handlers: list[tuple[Any, Any]], message: Any) -> None:
    """Call ``handlers`` for EVT_DIMSE_SENT as ``pynetdicom.evt.trigger`` would (errors logged, not raised)."""
    event = evt.Event(assoc, evt.EVT_DIMSE_SENT, {"message": message})
    assoc.abort = assoc._abort_nonblocking
    try:
        for func, args in handlers:
            try:
                func(event, *(args or ()))
            except Exception as exc:  # noqa: BLE001 - as pynetdicom: a notification handler cannot break a send
                log.error("Exception raised in user's 'evt.EVT_DIMSE_SENT' event handler '%s'", func.__name__)
                log.exception(exc)
    finally:
        assoc.abort = assoc._abort_blocking


def _lazy_message(primitive: Any, context_id: int) -> Any:
    """An instance of pynetdicom's message class for ``primitive`` (``isinstance`` works),
    whose command set is only built when a handler reads one of its attributes."""
    cls = _RSP_TO_MESSAGE[primitive.__class__]
    lazy_cls = mixed_class(_LazyMessage, cls)
    message: Any = object.__new__(lazy_cls)
    message.__dict__.update(_primitive=primitive, _context_id=context_id)
    return message


def stream_files(assoc: Any) -> None:
    """Make ``assoc`` send file-backed C-STOREs with :class:`StreamingDUL` (any time; idempotent).

    Only methods looked up per call are replaced, so it works on an
    association whose threads already run.
    """
    assoc.dul.__class__ = mixed_class(StreamingDUL, type(assoc.dul))
    assoc.dimse.__class__ = mixed_class(StreamingDIMSE, type(assoc.dimse))
