"""DICOMweb proxy: ``/dicomweb/studies/<uid>/...`` → Orthanc ``/dicom-web/...``.

Why a proxy: Orthanc stays on localhost behind its own credentials, and
every request is checked against the person (or share link) asking for that
one study. The EMR supplies the checks as callables, so this package knows
nothing about users, roles or share links:

* ``authorize_study(study_uid, share_token) -> bool`` (may raise
  :class:`~viewer.exceptions.AccessDenied` to say *why*: login / forbidden /
  expired);
* ``audit(study_uid, share_token)`` is called once per principal and study
  within ``audit_window`` seconds, i.e. once per study opened, not per frame;
* ``principal(share_token) -> str`` names who is asking (the key of that
  de-duplication), e.g. ``"user:42"`` or ``"share:<token id>"``;
* ``arriving(study_uid) -> bool`` (optional) says the study is still being
  received; the series list then carries ``X-Study-Arriving: 1``.

Only study-scoped paths are proxied (plus ``/studies?StudyInstanceUID=``
for exactly one study), so no request can list other patients. Responses
are streamed chunk by chunk (a whole series is never held in memory);
``Accept`` and ``Range`` go upstream, ``Content-Type``/``Length``/``Range``
come back. Upstream error bodies are replaced by a short JSON error.

Orthanc is reached only through the storage facade's ``open_stream`` (any
object with that method: ``storage.OrthancStore`` in production).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request, stream_with_context

from storage import StorageTimeout, StorageUnavailable

from .exceptions import AccessDenied

__all__ = ["SHARE_TOKEN_HEADER", "dicomweb_blueprint"]

log = logging.getLogger(__name__)

SHARE_TOKEN_HEADER = "X-Share-Token"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_REST = re.compile(r"^[A-Za-z0-9._\-/,]*$")
_CHUNK = 256 * 1024
_PASS_UP = ("Accept", "Range", "If-None-Match", "If-Modified-Since")
_PASS_DOWN = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")
_MAX_AUDIT_KEYS = 10_000

Authorize = Callable[[str, str | None], bool]
Audit = Callable[[str, str | None], None]
Principal = Callable[[str | None], str]
Arriving = Callable[[str], bool]


def _default_principal(share_token: str | None) -> str:
    return f"share:{share_token}" if share_token else f"addr:{request.remote_addr}"


def _error(status: int, code: str) -> Response:
    response = jsonify(error=code)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


class _AuditOnce:
    """Remembers (principal, study) pairs for ``window`` seconds, bounded in size."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.window:
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > _MAX_AUDIT_KEYS:
                self._seen.popitem(last=False)
            return True

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)


class StreamingStore(Protocol):
    def open_stream(self, path: str, *, headers: Mapping[str, str] | None = None,
                    timeout: float | None = None) -> Any: ...


def dicomweb_blueprint(
    store: StreamingStore,
    authorize_study: Authorize,
    audit: Audit,
    *,
    principal: Principal = _default_principal,
    arriving: Arriving | None = None,
    name: str = "dicomweb",
    url_prefix: str = "/dicomweb",
    upstream_root: str = "/dicom-web",
    audit_window: float = 3600.0,
    timeout: float = 60.0,
) -> Blueprint:
    """A Flask blueprint proxying study-scoped DICOMweb requests to Orthanc.

    ``store`` is the storage facade (``storage.OrthancStore``). See the
    module docstring for the callables.
    """
    base = "/" + upstream_root.strip("/")
    once = _AuditOnce(audit_window)
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    def check(study_uid: str) -> Response | None:
        """None when the request may go on, else the refusal to send."""
        token = request.headers.get(SHARE_TOKEN_HEADER) or request.args.get("token") or None
        try:
            allowed = authorize_study(study_uid, token)
        except AccessDenied as exc:
            return _error(exc.status, exc.reason)
        if not allowed:
            return _error(403, "forbidden")
        key = (principal(token), study_uid)
        if once.first_time(key):
            try:
                audit(study_uid, token)
            except Exception:
                # The law asks for every view to be logged: no log, no view.
                once.forget(key)
                log.exception("audit of study %s failed; refusing the request", study_uid)
                return _error(503, "audit_unavailable")
        return None

    def forward(path: str, study_uid: str) -> Response:
        params = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        url = base + path + ("?" + urlencode(params) if params else "")
        headers = {h: request.headers[h] for h in _PASS_UP if h in request.headers}
        # No compression upstream: bytes are relayed as they come, and
        # Content-Length stays true.
        headers["Accept-Encoding"] = "identity"
        try:
            upstream = store.open_stream(url, headers=headers, timeout=timeout)
        except StorageTimeout:
            return _error(504, "upstream_timeout")
        except StorageUnavailable as exc:
            log.warning("DICOMweb upstream unreachable: %s", exc)
            return _error(502, "upstream_unavailable")
        study_arriving = arriving is not None and path.endswith(f"/studies/{study_uid}/series") and arriving(study_uid)
        if upstream.status_code >= 400:
            upstream.close()
            codes = {404: "not_found", 400: "bad_request", 406: "not_acceptable"}
            status = upstream.status_code if upstream.status_code in codes else 502
            response = _error(status, codes.get(status, "upstream_error"))
            if study_arriving:
                response.headers["X-Study-Arriving"] = "1"
            return response

        def body() -> Iterator[bytes]:
            try:
                yield from upstream.iter_content(_CHUNK)
            finally:
                upstream.close()

        response = Response(stream_with_context(body()), status=upstream.status_code, direct_passthrough=True)
        for h in _PASS_DOWN:
            if h in upstream.headers:
                response.headers[h] = upstream.headers[h]
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if study_arriving:
            response.headers["X-Study-Arriving"] = "1"
        response.call_on_close(upstream.close)
        return response

    @bp.get("/studies")
    def search_studies() -> Response:
        uids = request.args.getlist("StudyInstanceUID")
        if len(uids) != 1 or not _UID.match(uids[0]) or len(uids[0]) > 64:
            # Searching across studies would list other patients.
            return _error(400, "study_required")
        refused = check(uids[0])
        return refused or forward("/studies", uids[0])

    @bp.get("/studies/<study_uid>")
    @bp.get("/studies/<study_uid>/<path:rest>")
    def study_resource(study_uid: str, rest: str = "") -> Response:
        if not _UID.match(study_uid) or len(study_uid) > 64:
            return _error(400, "bad_study_uid")
        if not _REST.match(rest) or ".." in rest or len(rest) > 1024:
            return _error(400, "bad_path")
        refused = check(study_uid)
        if refused is not None:
            return refused
        return forward(f"/studies/{study_uid}" + (f"/{rest}" if rest else ""), study_uid)

    return bp
