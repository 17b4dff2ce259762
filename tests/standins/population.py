"""A stand-in for a province's national population database gateway (docs/identity-adapter.md).

Real HTTP on 127.0.0.1 and a free port, in a thread of the test process. The
test tells it what to do: ``people`` (CCCD → national record), ``down()`` /
``up()`` (the port closes and reopens: connection refused in between),
``slow`` (seconds to wait before answering), ``token`` (the bearer credential
it requires). ``asked`` counts the lookups it answered, per CCCD.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

__all__ = ["PopulationStandIn", "configure_for_test", "standin", "gateway"]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out) closes the socket: not an error of the stand-in."""


class PopulationStandIn:
    def __init__(self, token: str = "standin-credential") -> None:
        self.port = free_port()
        self.token = token
        self.people: dict[str, dict[str, Any]] = {}
        self.slow = 0.0
        self.asked: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/citizen-lookup"

    def add(self, cccd: str, full_name: str, birth_date: str, sex: str) -> None:
        self.people[cccd] = {"full_name": full_name, "birth_date": birth_date, "sex": sex}

    def up(self) -> PopulationStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:  # quiet test output
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body or {}, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/v1/citizen-lookup":
                    return self._answer(404, {"error": "no such endpoint"})
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    return self._answer(401, {"error": "credential refused"})
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    request = json.loads(self.rfile.read(min(length, 4096)))
                    cccd = str(request["cccd"])
                except (ValueError, KeyError, TypeError):
                    return self._answer(400, {"error": "body must be {\"cccd\": \"<12 digits>\"}"})
                if standin.slow:
                    time.sleep(standin.slow)
                standin.asked[cccd] += 1
                person = standin.people.get(cccd)
                if person is None:
                    return self._answer(404, {"cccd": cccd, "found": False})
                return self._answer(200, {"cccd": cccd, "found": True, **person})

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="population-standin", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: callers get 'connection refused' until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def configure_for_test(standin: PopulationStandIn, tmp_path: Path, timeout: float = 5.0) -> Path:
    """Reset the stand-in (one known citizen, Nguyễn Thị Hồng Nhung) and configure the EMR's
    gateway the way ``create_app`` does, with the credential in a 0600 file; returns that file."""
    from emr.identity import adapter

    standin.people.clear()
    standin.asked.clear()
    standin.slow = 0.0
    standin.add("079190001234", "Nguyễn Thị Hồng Nhung", "1990-05-17", "F")
    if standin._server is None:
        standin.up()
    cred = tmp_path / "identity-credential"
    fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(standin.token + "\n")
    adapter.configure(adapter.gateway_from_settings(standin.url, cred, timeout))
    return cred


@pytest.fixture(scope="module")
def standin() -> Iterator[PopulationStandIn]:
    """One stand-in per test module (import this fixture into the module)."""
    server = PopulationStandIn().up()
    yield server
    server.down()


@pytest.fixture
def gateway(standin: PopulationStandIn, tmp_path: Path) -> Iterator[PopulationStandIn]:
    """The stand-in reset, and the EMR's gateway configured to it for this test (off afterwards)."""
    from emr.identity import adapter

    configure_for_test(standin, tmp_path)
    yield standin
    adapter.configure(None)
