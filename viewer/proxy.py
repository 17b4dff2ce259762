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

* ``reports_allowed(study_uid, share_token) -> bool`` (optional) says the
  caller may see report objects (the signed PDF stored in the study); when
  not, they vanish from every answer and their paths are refused.

Only study-scoped paths of known shapes are proxied (plus
``/studies?StudyInstanceUID=`` for exactly one study). The caller's query
string is never forwarded: :mod:`viewer.qido` builds each upstream query
from an allow-list with the study pinned, and QIDO and metadata answers are
filtered to the pinned study (and series) again. A series or instance path
is served only when the proxy has seen that object in the study the caller
may open. Images are streamed chunk by chunk (a whole series is never held in memory);
``Accept`` and ``Range`` go upstream, ``Content-Type``/``Length``/``Range``
come back. Upstream error bodies are replaced by a short JSON error.

Orthanc is reached only through the storage facade's ``open_stream`` (any
object with that method: ``storage.OrthancStore`` in production).
"""

from __future__ import annotations

import json
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
from .qido import QueryRefused, build_query, is_report, item_value, pin_items

__all__ = ["SHARE_TOKEN_HEADER", "dicomweb_blueprint"]

log = logging.getLogger(__name__)

SHARE_TOKEN_HEADER = "X-Share-Token"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
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


ReportsAllowed = Callable[[str, str | None], bool]

# The shapes of path the viewer (and any DICOMweb client) needs below /studies/<uid>/.
_STUDY_REST = frozenset({"", "metadata", "series", "instances", "rendered", "thumbnail"})
_SERIES_REST = re.compile(
    r"^series/(?P<se>[0-9.]{1,64})"
    r"(?:/(?P<tail>metadata|instances|rendered|thumbnail"
    r"|instances/(?P<sop>[0-9.]{1,64})(?:/(?P<itail>metadata|rendered|thumbnail"
    r"|frames/[0-9]{1,6}(?:,[0-9]{1,6}){0,255}(?:/rendered)?|bulk/[0-9A-Fa-f./,]{1,200}))?))?$"
)
_RENDER_PARAMS = {
    "quality": re.compile(r"^[0-9]{1,3}$"),
    "viewport": re.compile(r"^[0-9,]{1,40}$"),
    "window": re.compile(r"^[0-9.,\-A-Za-z]{1,60}$"),
}
_MAX_JSON = 64 * 1024 * 1024
_INDEX_SECONDS = 30.0
_MAX_INDEX = 2_000


class _Refused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class _TtlCache:
    """What the proxy learnt about a study or series (its objects), kept a few seconds, bounded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._items: OrderedDict[tuple[str, str | None], tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str | None]) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or time.monotonic() - hit[0] > self.seconds:
                return None
            return hit[1]

    def put(self, key: tuple[str, str | None], value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > _MAX_INDEX:
                self._items.popitem(last=False)


def dicomweb_blueprint(
    store: StreamingStore,
    authorize_study: Authorize,
    audit: Audit,
    *,
    principal: Principal = _default_principal,
    arriving: Arriving | None = None,
    reports_allowed: ReportsAllowed | None = None,
    audit_report: Audit | None = None,
    name: str = "dicomweb",
    url_prefix: str = "/dicomweb",
    upstream_root: str = "/dicom-web",
    audit_window: float = 3600.0,
    timeout: float = 60.0,
) -> Blueprint:
    """A Flask blueprint proxying study-scoped DICOMweb requests to Orthanc.

    ``store`` is the storage facade (``storage.OrthancStore``). See the
    module docstring for the callables. ``reports_allowed(study_uid,
    share_token) -> bool`` (default: always) says whether the caller may see
    report objects (encapsulated PDF, SR); when not, they are filtered out of
    every answer and refused by path. ``audit_report(study_uid, share_token)``
    (optional) is called on every retrieval of a report object.
    """
    base = "/" + upstream_root.strip("/")
    once = _AuditOnce(audit_window)
    index = _TtlCache(_INDEX_SECONDS)
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    def share_token() -> str | None:
        return request.headers.get(SHARE_TOKEN_HEADER) or request.args.get("token") or None

    def check(study_uid: str) -> Response | None:
        """None when the request may go on, else the refusal to send."""
        token = share_token()
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

    def hide_reports(study_uid: str) -> bool:
        return reports_allowed is not None and not reports_allowed(study_uid, share_token())

    def report_read(study_uid: str) -> None:
        """Every retrieval of a report object is audited (no log, no report)."""
        if audit_report is None:
            return
        try:
            audit_report(study_uid, share_token())
        except Exception:
            log.exception("audit of a report read in study %s failed; refusing the request", study_uid)
            raise _Refused(503, "audit_unavailable") from None

    def open_upstream(url: str, headers: Mapping[str, str]) -> Any:
        try:
            return store.open_stream(url, headers=headers, timeout=timeout)
        except StorageTimeout:
            raise _Refused(504, "upstream_timeout") from None
        except StorageUnavailable as exc:
            log.warning("DICOMweb upstream unreachable: %s", exc)
            raise _Refused(502, "upstream_unavailable") from None

    def upstream_error(status: int) -> _Refused:
        codes = {404: "not_found", 400: "bad_request", 406: "not_acceptable"}
        status = status if status in codes else 502
        return _Refused(status, codes.get(status, "upstream_error"))

    def fetch_json(path: str, query: list[tuple[str, str]]) -> list[Any]:
        """A DICOM JSON answer from upstream (read whole, bounded): QIDO and metadata."""
        url = base + path + ("?" + urlencode(query) if query else "")
        upstream = open_upstream(url, {"Accept": "application/dicom+json", "Accept-Encoding": "identity"})
        try:
            if upstream.status_code == 204:
                return []
            if upstream.status_code >= 400:
                raise upstream_error(upstream.status_code)
            body = bytearray()
            for chunk in upstream.iter_content(_CHUNK):
                body += chunk
                if len(body) > _MAX_JSON:
                    raise _Refused(502, "upstream_error")
        finally:
            upstream.close()
        if not body.strip():
            return []
        try:
            items = json.loads(bytes(body))
        except ValueError:
            raise _Refused(502, "upstream_error") from None
        if not isinstance(items, list):
            raise _Refused(502, "upstream_error")
        return items

    def series_objects(study_uid: str, series_uid: str) -> dict[str, bool]:
        """SOPInstanceUID -> is a report, for one series of the study (empty: no such series here)."""
        key = (study_uid, series_uid)
        known = index.get(key)
        if known is None:
            query = build_query("instance", [], pinned={})
            items = fetch_json(f"/studies/{study_uid}/series/{series_uid}/instances", query)
            known = {}
            for item in pin_items(items, study_uid=study_uid, series_uid=series_uid):
                sop = item_value(item, "00080018")
                if sop:
                    known[sop] = is_report(item)
            index.put(key, known)
        return dict(known)

    def study_has_reports(study_uid: str) -> bool:
        key = (study_uid, None)
        known = index.get(key)
        if known is None:
            items = fetch_json(f"/studies/{study_uid}/series", build_query("series", [], pinned={}))
            known = any(is_report(i) for i in pin_items(items, study_uid=study_uid))
            index.put(key, known)
        return bool(known)

    def json_answer(items: list[Any], study_uid: str, *, arriving_flag: bool = False) -> Response:
        response = Response(json.dumps(items, separators=(",", ":")), status=200, mimetype="application/dicom+json")
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if arriving_flag:
            response.headers["X-Study-Arriving"] = "1"
        return response

    def retrieve_params(rendered: bool) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        for key, value in request.args.items(multi=True):
            if key == "token":
                continue
            check_value = _RENDER_PARAMS.get(key) if rendered else None
            if check_value is None or not check_value.match(value) or any(k == key for k, _ in params):
                raise _Refused(400, "bad_query")
            params.append((key, value))
        return params

    def stream(path: str, params: list[tuple[str, str]]) -> Response:
        url = base + path + ("?" + urlencode(params) if params else "")
        headers = {h: request.headers[h] for h in _PASS_UP if h in request.headers}
        # No compression upstream: bytes are relayed as they come, and
        # Content-Length stays true.
        headers["Accept-Encoding"] = "identity"
        upstream = open_upstream(url, headers)
        if upstream.status_code >= 400:
            upstream.close()
            raise upstream_error(upstream.status_code)

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
        response.call_on_close(upstream.close)
        return response

    def qido(level: str, path: str, study_uid: str, series_uid: str | None = None) -> list[Any]:
        pinned = {"StudyInstanceUID": study_uid} if level == "study" else {}
        try:
            query = build_query(level, request.args.items(multi=True), pinned=pinned)
        except QueryRefused:
            raise _Refused(400, "bad_query") from None
        items = fetch_json(path, query)
        return pin_items(items, study_uid=study_uid, series_uid=series_uid, hide_reports=hide_reports(study_uid))

    @bp.get("/studies")
    def search_studies() -> Response:
        uids = request.args.getlist("StudyInstanceUID")
        if len(uids) != 1 or not _UID.match(uids[0]) or len(uids[0]) > 64:
            # Searching across studies would list other patients.
            return _error(400, "study_required")
        try:
            build_query("study", request.args.items(multi=True), pinned={"StudyInstanceUID": uids[0]})
        except QueryRefused:
            return _error(400, "bad_query")
        refused = check(uids[0])
        if refused is not None:
            return refused
        try:
            return json_answer(qido("study", "/studies", uids[0]), uids[0])
        except _Refused as exc:
            return _error(exc.status, exc.code)

    @bp.get("/studies/<study_uid>")
    @bp.get("/studies/<study_uid>/<path:rest>")
    def study_resource(study_uid: str, rest: str = "") -> Response:
        if not _UID.match(study_uid) or len(study_uid) > 64:
            return _error(400, "bad_study_uid")
        match = _SERIES_REST.match(rest)
        if rest not in _STUDY_REST and (match is None or ".." in rest):
            return _error(400, "bad_path")
        refused = check(study_uid)
        if refused is not None:
            return refused
        study_path = f"/studies/{study_uid}"
        try:
            if match is None:
                return study_level(study_uid, rest, study_path)
            return series_level(study_uid, match, study_path + "/" + rest)
        except _Refused as exc:
            response = _error(exc.status, exc.code)
            if rest == "series" and arriving is not None and arriving(study_uid):
                response.headers["X-Study-Arriving"] = "1"
            return response

    def study_level(study_uid: str, rest: str, study_path: str) -> Response:
        if rest == "series":
            items = qido("series", study_path + "/series", study_uid)
            flag = arriving is not None and arriving(study_uid)
            if not items:
                raise _Refused(404, "not_found")
            return json_answer(items, study_uid, arriving_flag=flag)
        if rest == "instances":
            return json_answer(qido("instance", study_path + "/instances", study_uid), study_uid)
        if rest == "metadata":
            retrieve_params(False)
            items = fetch_json(study_path + "/metadata", [])
            return json_answer(pin_items(items, study_uid=study_uid, hide_reports=hide_reports(study_uid)), study_uid)
        # The whole study in one answer, or a study-level rendering: refused when it
        # would carry a report the caller may not read.
        params = retrieve_params(rest in ("rendered", "thumbnail"))
        if study_has_reports(study_uid):
            if hide_reports(study_uid):
                raise _Refused(403, "forbidden")
            report_read(study_uid)
        return stream(study_path + (f"/{rest}" if rest else ""), params)

    def series_level(study_uid: str, match: re.Match[str], path: str) -> Response:
        series_uid = match.group("se")
        tail = match.group("tail") or ""
        if not _UID.match(series_uid):
            raise _Refused(400, "bad_path")
        if tail == "instances":
            items = qido("instance", path, study_uid, series_uid)
            return json_answer(items, study_uid)
        # Retrievals: the series (and instance) must belong to the study the caller may see.
        objects = series_objects(study_uid, series_uid)
        if not objects:
            raise _Refused(404, "not_found")
        hidden = hide_reports(study_uid)
        sop = match.group("sop")
        if sop is not None:
            if sop not in objects:
                raise _Refused(404, "not_found")
            if hidden and objects[sop]:
                raise _Refused(403, "forbidden")
        elif hidden and any(objects.values()):
            raise _Refused(403, "forbidden")
        itail = match.group("itail") or ""
        if objects.get(sop, False) if sop is not None else any(objects.values()):
            report_read(study_uid)  # the report's content is about to be shown
        if tail == "metadata" or itail == "metadata":
            retrieve_params(False)
            items = fetch_json(path, [])
            kept = pin_items(items, study_uid=study_uid, series_uid=series_uid, hide_reports=hidden)
            return json_answer(kept, study_uid)
        rendered = tail in ("rendered", "thumbnail") or itail.endswith(("rendered", "thumbnail"))
        return stream(path, retrieve_params(rendered))

    return bp
