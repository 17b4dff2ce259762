"""A minimal Flask app around the viewer's blueprints, served on a free port.

It stands in for the EMR in the viewer's own tests and benchmark: the
access check and the audit are plain Python objects the test controls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import waitress
from flask import Flask

from storage import OrthancStore
from tests.helpers import free_port
from viewer import AccessDenied, dicomweb_blueprint, viewer_blueprint


@dataclass
class AccessRules:
    """What the fake EMR allows: study UIDs refused, expired tokens, arriving studies."""

    refused: set[str] = field(default_factory=set)
    expired_tokens: set[str] = field(default_factory=set)
    arriving: set[str] = field(default_factory=set)
    audit_log: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorize(self, study_uid: str, token: str | None) -> bool:
        if token is not None and token in self.expired_tokens:
            raise AccessDenied("expired")
        return study_uid not in self.refused

    def audit(self, study_uid: str, token: str | None) -> None:
        with self.lock:
            self.audit_log.append((study_uid, token))


def make_app(store_url: str, auth: tuple[str, str], rules: AccessRules) -> Flask:
    app = Flask("viewer-test")
    app.register_blueprint(viewer_blueprint())
    app.register_blueprint(
        dicomweb_blueprint(
            OrthancStore(store_url, *auth),
            rules.authorize,
            rules.audit,
            arriving=lambda uid: uid in rules.arriving,
        )
    )
    return app


@contextmanager
def serve(app: Flask, threads: int = 8) -> Iterator[str]:
    """Serve ``app`` with waitress (the EMR's server) on 127.0.0.1:<free port>; yields the base URL."""
    port = free_port()
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=threads, ident="filmless-test")
    stopping = threading.Event()

    def run() -> None:
        try:
            server.run()
        except (OSError, ValueError):
            # Closing the listening socket from another thread ends the
            # select loop with EBADF: that is how waitress stops here.
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=run, name="viewer-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping.set()
        server.close()
        thread.join(10)
        server.task_dispatcher.shutdown()
