"""C-STORE received, stored and answered in the DUL's own thread.

Why: in pynetdicom every P-DATA PDU travels through the state machine (an
event queue, a PDU object, a P-DATA primitive, a DIMSE message decoded with
pydicom), then the complete C-STORE is handed to the association thread,
which runs the handler and encodes the response with pydicom again. For a
CT slice that is about 5 ms of Python and a thread hand-over per instance,
half of what a stock Orthanc needs for the whole C-STORE (issue 12 §5).

Here the DUL thread, which has just read a P-DATA-TF PDU off the socket,
looks at it first (:meth:`FastStore.take`). When the PDU starts a C-STORE
request on a storage context, this module takes the whole message:

* the command set is read with a few ``struct`` calls (it is always
  Implicit VR Little Endian, PS3.7 6.3.1);
* the data set fragments go straight from the PDU buffer into a Part-10
  file in the spool's ``incoming/`` (preamble and File Meta Information
  first, as pynetdicom writes them), one ``os.write`` per fragment; that
  file is a forwarded one overwritten when the spool has a spare
  (``reuse``: no inode or block allocation), cut to length when complete;
* after the last fragment the gateway's store function (the same one the
  pynetdicom handler calls: check, fsync, rename into ``ready/``) decides
  the status, and the C-STORE-RSP is written to the socket from this thread.

Everything else (C-ECHO, C-FIND, MPPS, storage commitment, a C-STORE on a
context this module does not know, a message pynetdicom is already
assembling) is left to pynetdicom untouched: the PDU goes on to the state
machine as before. The state machine stays in Sta6 (data transfer) in both
cases, as DT-1/DT-2 would leave it; the response is written under the DUL's
send lock, so it never interleaves with a PDU another thread is sending.

A write error (disk full) is remembered, the partial file truncated and the
rest of the instance read and dropped; the store function then answers
0xA700 and the association goes on, as with pynetdicom's path
(:mod:`pacs_gateway.receive_file`). A broken message (data before a command,
a fragment on another context) aborts the association, as pynetdicom does.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from .dimse_fast import C_STORE_RQ, NO_DATA_SET, c_store_rsp, read_command

__all__ = ["FastStore", "StoreRequest", "StoreFunction", "encode_file_meta"]

log = logging.getLogger("pacs_gateway.fast_store")

_PREAMBLE = b"\x00" * 128 + b"DICM"
_PDV_HEAD = struct.Struct(">LBB")
_PDU_HEAD = struct.Struct(">BBL")


@dataclass
class StoreRequest:
    """What the C-STORE-RQ command said, and where its data set went."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    path: Path | None = None
    size: int = 0
    error: OSError | None = None


# (association, request) -> status: an int, or a Dataset with Status and an optional ErrorComment.
StoreFunction = Callable[[Any, StoreRequest], "int | Dataset"]
# Moves a spare file to the given path to be overwritten; False when there is none (Spool.reuse).
ReuseFunction = Callable[[Path], bool]


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def _us(raw: bytes | None) -> int | None:
    if raw is None or len(raw) != 2:
        return None
    return int(struct.unpack("<H", raw)[0])


def _uid_element(raw: bytes | None) -> bool:
    """A UID value the response can carry back: present, at most 64 characters, one value."""
    uid = (raw or b"").rstrip(b"\x00 ")
    return 0 < len(uid) <= 64 and uid.isascii() and b"\\" not in uid


def _takes(command: dict[int, bytes] | None) -> bool:
    """Whether a command set is a C-STORE-RQ this module answers (anything else goes to pynetdicom)."""
    return (command is not None
            and _us(command.get(0x0100)) == C_STORE_RQ
            and _us(command.get(0x0800)) not in (None, NO_DATA_SET)
            and _us(command.get(0x0110)) is not None
            and _uid_element(command.get(0x0002)) and _uid_element(command.get(0x1000)))


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                     implementation_uid: str, implementation_version: str) -> bytes:
    """The preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1), as pynetdicom writes them."""
    version = implementation_version.encode("ascii")
    if len(version) % 2:
        version += b" "
    body = b"".join([
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_value(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_value(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_value(transfer_syntax)),
        _meta_element(0x0012, b"UI", _uid_value(implementation_uid)),
        _meta_element(0x0013, b"SH", version) if version else b"",
    ])
    return _PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<L", len(body))) + body


class ProtocolError(Exception):
    """A P-DATA stream that breaks PS3.8 (the association is aborted)."""


class FastStore:
    """The C-STORE fast path of one association (lives on its DUL; used only by the DUL thread).

    ``contexts`` maps the accepted storage presentation context IDs (this side
    SCP) to their transfer syntax; ``incoming`` is where data sets are written;
    ``store`` decides the status of a received instance; ``reuse``, when
    given, supplies existing files to overwrite instead of creating new ones.
    """

    def __init__(self, assoc: Any, contexts: dict[int, str], incoming: Path, store: StoreFunction,
                 implementation_uid: str, implementation_version: str, reuse: ReuseFunction | None = None) -> None:
        self.assoc = assoc
        self.contexts = contexts
        self.incoming = Path(incoming)
        self.store = store
        self.implementation_uid = implementation_uid
        self.implementation_version = implementation_version
        self.reuse = reuse
        self.current: StoreRequest | None = None
        self._fd: int | None = None
        self._reused = False  # the open file had content of its own: cut it to length when done
        self._counter = 0

    # -- the DUL's entry point ------------------------------------------------
    def take(self, pdu: bytes | bytearray, dul: Any) -> bool:
        """Handle the P-DATA-TF ``pdu`` (whole, header included) if it belongs to a C-STORE.

        Returns False, having done nothing, when pynetdicom should have it.
        """
        view = memoryview(pdu)
        if self.current is None and not self._starts_store(view):
            return False
        try:
            self._consume(view, 6, dul)
        except ProtocolError as exc:
            self._abandon()
            log.warning("aborting association from %s: %s", getattr(self.assoc.requestor, "address", "?"), exc)
            dul.abort_fast(str(exc))
        return True

    def _starts_store(self, view: memoryview) -> bool:
        """Whether this PDU's first PDV is a complete C-STORE-RQ command on a storage context."""
        if getattr(getattr(self.assoc, "dimse", None), "message", None) is not None:
            return False  # pynetdicom is assembling a message: it keeps the stream
        if len(view) < 12:
            return False
        length, context_id, control = _PDV_HEAD.unpack_from(view, 6)
        if control & 0x03 != 0x03 or context_id not in self.contexts or length < 2 or 6 + 4 + length > len(view):
            return False
        return _takes(read_command(view[12:10 + length]))

    def _consume(self, view: memoryview, pos: int, dul: Any) -> None:
        end = len(view)
        while pos < end:
            if end - pos < 6:
                raise ProtocolError("truncated PDV item")
            length, context_id, control = _PDV_HEAD.unpack_from(view, pos)
            if length < 2 or pos + 4 + length > end:
                raise ProtocolError("PDV item longer than its PDU")
            fragment = view[pos + 6:pos + 4 + length]
            pos += 4 + length
            current = self.current
            if current is None:
                command = (read_command(fragment) if control & 0x03 == 0x03 and context_id in self.contexts
                           else None)
                if command is None or not _takes(command):
                    # Not a whole C-STORE command on a storage context: pynetdicom takes the rest.
                    rest = bytes(view[pos - 4 - length:end])
                    dul.pass_on(bytearray(_PDU_HEAD.pack(0x04, 0, len(rest)) + rest))
                    return
                self._begin(context_id, command)
                continue
            if control & 0x01 or context_id != current.context_id:
                raise ProtocolError("a fragment of another message arrived inside a C-STORE data set")
            self._write(fragment)
            if control & 0x02:
                self._finish(dul)

    # -- one instance ---------------------------------------------------------
    def _begin(self, context_id: int, command: dict[int, bytes]) -> None:
        message_id = _us(command.get(0x0110))
        assert message_id is not None  # _takes() checked it
        sop_class = _text(command.get(0x0002, b""))
        sop_instance = _text(command.get(0x1000, b""))
        request = StoreRequest(context_id, message_id, sop_class, sop_instance, self.contexts[context_id])
        self._counter += 1
        path = self.incoming / f"fast-{os.getpid()}-{id(self):x}-{self._counter:08d}.tmp"
        request.path = path
        self.current = request
        try:
            self._reused = self.reuse is not None and self.reuse(path)
            self._fd = os.open(path, os.O_WRONLY if self._reused else os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            request.error = exc
            return
        self._write(memoryview(encode_file_meta(sop_class, sop_instance, request.transfer_syntax,
                                                self.implementation_uid, self.implementation_version)))

    def _write(self, data: memoryview) -> None:
        request = self.current
        assert request is not None
        request.size += len(data)
        if request.error is not None or self._fd is None:
            return  # refused already: read off the network and dropped
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            request.error = exc
            try:
                os.ftruncate(self._fd, 0)  # give the space back now
            except OSError:
                pass

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        request = self.current
        try:
            try:
                if self._reused and request is not None and request.error is None:
                    os.ftruncate(fd, request.size)  # drop the tail of the file it overwrote
            finally:
                os.close(fd)
        except OSError as exc:
            if request is not None and request.error is None:
                request.error = exc

    def _finish(self, dul: Any) -> None:
        request = self.current
        assert request is not None
        self._close_file()
        self.current = None
        try:
            status = self.store(self.assoc, request)
        except Exception as exc:  # noqa: BLE001 - a bug must answer a failure, never hang the modality
            log.exception("C-STORE of %s failed in the gateway", request.sop_instance_uid)
            if request.path is not None:
                request.path.unlink(missing_ok=True)
            status = 0xA700 if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) else 0xC000
        code, comment = (int(status.Status), getattr(status, "ErrorComment", None)) if isinstance(status, Dataset) \
            else (int(status), None)
        command = c_store_rsp(responding_to=request.message_id, sop_class=request.sop_class_uid,
                              sop_instance=request.sop_instance_uid, status=code, error_comment=comment)
        dul.send_fast(_PDU_HEAD.pack(0x04, 0, 6 + len(command)) + _PDV_HEAD.pack(2 + len(command),
                                                                                request.context_id, 0x03) + command)

    def _abandon(self) -> None:
        """Drop a half-received instance (association ended or broken): it was never acknowledged."""
        request, self.current = self.current, None
        self._close_file()
        if request is not None and request.path is not None:
            request.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._abandon()
