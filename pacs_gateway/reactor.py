"""Event-driven reactors for the gateway's accepted associations.

Why: pynetdicom's two loops per association poll. The DUL thread (socket
side) naps 1 ms whenever it finds nothing to do, and the association thread
(DIMSE side) naps 1 ms before every look at its message queue. A C-STORE
crosses both loops twice (request in, response out), so each instance waited
up to ~4 ms doing nothing, a large part of the gap to Orthanc (issue 12 §5;
pynetdicom's own TODO: "try and make this event based"). Shortening the naps
instead burns a core per idle association.

Here both loops sleep until there is work:

* the DUL waits in ``select`` on the peer's socket and on a wake-up socket
  pair that :meth:`EventDrivenDUL.send_pdu` pokes when the association
  thread hands it something to send; a P-DATA with nothing queued before
  it is written by the sending thread itself (under a lock the DUL also
  holds while it writes), so a C-STORE response costs no thread hand-over;
* the association thread waits on an :class:`threading.Event` the DUL sets
  after every state-machine action (a complete DIMSE message, a release or
  abort request, the DUL ending).

Both waits are bounded (:data:`IDLE_CHECK`), so pynetdicom's timers (ARTIM,
network idle timeout) and a kill from another thread are still noticed.
Besides the waits, the association loop counts as paused while it sleeps
(a thread sending on the association need not wait for it) and, after a
pause, never takes a message meant for the sending thread, and the network
timeout counts from the answer to a request, not from the request. Otherwise
the loops are pynetdicom 3.0's, statement for statement.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

__all__ = [
    "EventDrivenAssociation", "EventDrivenDUL", "make_event_driven", "make_requestor_event_driven", "mixed_class",
    "IDLE_CHECK",
]

log = logging.getLogger(__name__)

# Longest sleep of either loop with nothing to do (timers and kills are
# noticed within this); real work wakes them at once.
IDLE_CHECK = 0.05


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL reactor, sleeping in ``select`` instead of fixed naps."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    activity: threading.Event

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._prepare_wakeups()

    def _prepare_wakeups(self) -> None:
        if "_wake_r" in self.__dict__:
            return
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.activity = threading.Event()
        # Set before the reactor looks at its queue for the last time and
        # sleeps: a PDU queued after that look finds it set and pokes.
        self._sleeping = False
        # Held while a PDU is written (by the DUL's state machine or by a
        # sending thread); P-DATA primitives queued and not yet written.
        self._send_lock = threading.RLock()
        self._queued_data = 0

    def _poke(self) -> None:
        if not self._sleeping:
            return  # awake: it looks at the queue before it sleeps again
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already awake (buffer full) or the reactor has ended

    def send_pdu(self, primitive: Any) -> None:
        if isinstance(primitive, P_DATA):
            with self._send_lock:
                if self._may_send_here():
                    # Nothing queued before it: write it from this thread and
                    # spare a wake-up of the DUL thread (and a GIL hand-over).
                    self._send(P_DATA_TF(primitive))
                    return
                self._queued_data += 1
                super().send_pdu(primitive)
        else:
            super().send_pdu(primitive)
        self._poke()

    def _may_send_here(self) -> bool:
        """Whether a P-DATA may bypass the queue: in data transfer, nothing
        waiting in front of it, and not TLS (an SSL socket must not be read
        and written from two threads at once)."""
        return (
            self._queued_data == 0
            and self.to_provider_queue.empty()
            and not self._kill_thread
            and self.state_machine.current_state == "Sta6"
            and isinstance(getattr(self.socket, "socket", None), socket.socket)
            and not isinstance(self.socket.socket, ssl.SSLSocket)  # type: ignore[union-attr]
        )

    def kill_dul(self) -> None:
        super().kill_dul()
        self._poke()

    def _wait_for_work(self) -> None:
        """Sleep until the peer sends, the association hands over a PDU, or IDLE_CHECK passes."""
        self._sleeping = True
        try:
            self._sleep_until_work()
        finally:
            self._sleeping = False

    def _sleep_until_work(self) -> None:
        if not self.to_provider_queue.empty():
            return
        transport = self.socket
        sock = getattr(transport, "socket", None)
        if sock is None or not getattr(transport, "_is_connected", False):
            time.sleep(self._run_loop_delay)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes waiting that select cannot see
        try:
            select.select([sock, self._wake_r], [], [], IDLE_CHECK)
        except (OSError, ValueError):
            # Closed meanwhile: pynetdicom's own check reports it (Evt17).
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def run_reactor(self) -> None:
        try:
            self._event_driven_reactor()
        finally:
            self.activity.set()
            self._wake_r.close()
            self._wake_w.close()

    def _event_driven_reactor(self) -> None:
        # pynetdicom 3.0's DULServiceProvider.run_reactor; only the sleep
        # and the ``activity`` signal differ.
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # noqa: BLE001 - as pynetdicom: abort, never hang
                log.error("exception in the DUL reactor, aborting the association")
                log.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except Exception:  # noqa: BLE001 - queue.Empty
                sleep = True
                continue
            with self._send_lock:
                self.state_machine.do_action(event)
                if event == "Evt9":  # a queued P-DATA primitive was taken and written
                    self._queued_data = max(0, self._queued_data - 1)
            self.activity.set()
            sleep = False


class EventDrivenAssociation(Association):
    """An association whose reactor waits for its DUL instead of napping.

    Also usable on a requestor (class swapped once connected): its loop then
    naps as before but never makes a sending thread wait for the nap.
    """

    def _run_reactor(self) -> None:
        # pynetdicom 3.0's Association._run_reactor; only the wait differs.
        self._is_paused = False
        # A requestor's DUL was started by pynetdicom before it could be
        # switched (see make_event_driven): it has no activity signal, so
        # this loop naps 1 ms as pynetdicom's does.
        activity: threading.Event | None = getattr(self.dul, "activity", None)
        busy = False
        while not self._kill:
            if not busy:
                # Idle counts as paused: a thread sending on this association
                # (C-STORE of a C-MOVE, N-EVENT-REPORT) need not wait for the
                # nap to end; the checkpoint below then holds this loop back.
                self._is_paused = True
                if activity is not None:
                    activity.wait(IDLE_CHECK)
                    activity.clear()
                else:
                    time.sleep(0.001)
            busy = False
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if not self._reactor_checkpoint.is_set():
                # A sending thread paused us between the two lines above and
                # saw "paused": its response must stay in the queue for it
                # (pynetdicom's loop could take it; faster peers made that real).
                continue

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                busy = True
                self._serve_request(msg, int(context_id or 0))
                # The peer was waiting for this answer: its idle time starts now. pynetdicom
                # counts it from the request, so a C-MOVE longer than the network timeout
                # ended with this side releasing at once, colliding with the peer's release.
                self.dul._idle_timer.restart()

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                log.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


_mixed: dict[tuple[type, type], type] = {}
_mixed_lock = threading.Lock()


def mixed_class(mixin: type, cls: type) -> type:
    """``cls`` with ``mixin``'s methods in front (one class per pair, so swaps stay cheap)."""
    if issubclass(cls, mixin):
        return cls
    with _mixed_lock:
        made = _mixed.get((mixin, cls))
        if made is None:
            made = _mixed[(mixin, cls)] = type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})
        return made


def make_event_driven(assoc: Association) -> Association:
    """Switch a freshly created acceptor association (threads not started) to the event-driven loops."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("make_event_driven() needs an association whose threads have not started")
    dul = assoc.dul
    # Keeps what another swap already put there (pdu_limits.LimitedDUL reads PDUs).
    dul.__class__ = mixed_class(EventDrivenDUL, type(dul))
    assert isinstance(dul, EventDrivenDUL)
    dul._prepare_wakeups()
    # Thread targets were bound at construction: point the DUL's at the new loop.
    dul._target = make_target(dul.run_reactor)  # type: ignore[attr-defined]
    assoc.__class__ = EventDrivenAssociation
    return assoc


def make_requestor_event_driven(assoc: Association) -> Association:
    """Switch a requestor association to the event-driven loops before it requests anything.

    For an association that pynetdicom's ``AE.associate`` has created and
    given its socket, but whose ``request()`` (which starts the DUL thread)
    has not run yet: the hook is ``AE._create_socket``, see
    ``pacs_gateway.retrieve.MoveAE``. Until the transport connects, the DUL
    naps ``_run_loop_delay`` as pynetdicom's does (there is no socket to
    wait on); then it waits in ``select`` like an acceptor's. A P-DATA with
    nothing queued before it is written by the sending thread, so a C-STORE
    sub-operation of a C-MOVE costs no hand-over to the DUL thread.
    """
    if not assoc.is_requestor:
        raise ValueError("make_requestor_event_driven() is for associations this AE requests")
    return make_event_driven(assoc)
