"""``filmless up``: run every part in the foreground and stop them together.

Why separate processes: the gateway (DICOM, CPU-bound decoding and
fsync-heavy) and the EMR (web requests) each get their own interpreter and
GIL, a crash in one does not take down the other, and the supervisor can
restart a part that died. Orthanc is a child of the supervisor itself.

Shutdown order matters: the gateway stops first (no more DICOM accepted;
what it acknowledged is already fsynced in the spool), then the EMR, then
Orthanc.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A part of the stack run as ``python -m filmless <args>``."""

    name: str
    args: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    env: dict[str, str] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "filmless", *self.args],
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            proc.kill()
            proc.wait()
        log.info("stopped %s (exit code %s)", self.name, proc.returncode)


class Supervisor:
    """Starts children in order, restarts the ones that die, stops all on a signal."""

    def __init__(self, children: Sequence[Child], *, on_stop: Callable[[], None] | None = None,
                 max_restarts: int = 5) -> None:
        self.children = list(children)
        self._on_stop = on_stop
        self._stop = threading.Event()
        self.max_restarts = max_restarts
        self.stop_reason: str | None = None

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        """Stop everything; the first reason given (a signal, a crashing part) is the one logged."""
        if self.stop_reason is None:
            try:
                self.stop_reason = f"received {signal.Signals(signum).name}" if signum else "stop requested"
            except ValueError:
                self.stop_reason = f"received signal {signum}"
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Ctrl-C or a fatal child: nothing should wait on the parts any more."""
        return self._stop.is_set()

    def run(self, poll: float = 0.5) -> int:
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            for child in self.children:
                child.start()
            while not self._stop.wait(poll):
                for child in self.children:
                    if child.alive():
                        continue
                    code = child.process.returncode if child.process else None
                    if child.restarts >= self.max_restarts:
                        log.error("%s exited (code %s) %d times; stopping everything", child.name, code,
                                  child.restarts)
                        status = 1
                        self.stop_reason = self.stop_reason or f"{child.name} kept exiting (code {code})"
                        self._stop.set()
                        break
                    # Back off a little more each time so a part that crashes at
                    # start-up does not spin.
                    delay = min(30.0, 2.0 ** child.restarts)
                    log.error("%s exited with code %s; restarting in %.0f s", child.name, code, delay)
                    child.restarts += 1
                    if self._stop.wait(delay):
                        break
                    child.start()
        finally:
            reason = self.stop_reason or "stopped"
            log.info("stopping every part: %s", reason)
            for child in reversed(self.children):
                child.stop()
            if self._on_stop:
                self._on_stop()
            log.info("filmless stopped (%s)", reason)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status
