"""The facade over ``orthanc-api-client``: the only code that talks to Orthanc.

Why a facade: callers need a small, typed vocabulary (upload, find, read
metadata, follow changes), and one place where Orthanc's HTTP failures are
sorted into *retry later* (:class:`StorageUnavailable`) and *this input is
bad* (:class:`StorageRejected`). No hard-delete path is exposed on purpose:
signed medical content is never deleted through filmless.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import select
import socket
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import requests
import requests.adapters
import requests.auth
import requests.utils
from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as oexc
from urllib3.util.retry import Retry

from .exceptions import NotFound, StorageError, StorageRejected, StorageTimeout, StorageUnavailable
from .index import IndexQueries
from .models import Change, ChangesPage, StorageStatistics, StudySummary, SystemInfo, UploadResult
from .push import PushJob, start_push

__all__ = ["OrthancStore", "METADATA_KEYS"]

T = TypeVar("T")

# User-defined metadata filmless attaches to studies (declared in the
# generated Orthanc config under "UserMetadata"; an external Orthanc must
# declare the same names and numbers).
METADATA_KEYS: dict[str, int] = {
    "FilmlessOrderId": 4001,
    "FilmlessPatientRef": 4002,
    "FilmlessLinkState": 4003,
    "FilmlessSenderAet": 4004,  # calling AE title the gateway received the study from
}


def _translate(exc: Exception, url: str | None) -> StorageError:
    """Map an orthanc-api-client or requests failure to our exception tree."""
    if isinstance(exc, oexc.ResourceNotFound):
        return NotFound("Orthanc has no such resource", url)
    if isinstance(exc, (oexc.ConnectionError, oexc.TimeoutError)):
        return StorageUnavailable(f"Orthanc is not reachable: {exc.msg}", url)
    if isinstance(exc, oexc.NotAuthorized):
        # Wrong credentials do not fix themselves, but retrying loses nothing
        # and lets an operator repair the configuration without data loss.
        return StorageUnavailable("Orthanc refused the credentials", url)
    if isinstance(exc, oexc.HttpError):
        code = exc.http_status_code or 0
        detail = exc.msg or "no details"
        if code >= 500 or code == 0:
            return StorageUnavailable(f"Orthanc answered HTTP {code}: {detail}", url)
        return StorageRejected(f"Orthanc refused the request (HTTP {code}): {detail}", url)
    if isinstance(exc, oexc.OrthancApiException):
        return StorageUnavailable(f"Orthanc error: {exc.msg}", url)
    return StorageUnavailable(f"Orthanc request failed: {exc}", url)


def _http_failure(code: int, body: bytes, url: str) -> StorageError:
    """The error for an HTTP status outside 2xx, worded as :func:`_translate` words
    orthanc-api-client's (the lean upload path must fail exactly like the client)."""
    if code in (401, 403):
        return StorageUnavailable("Orthanc refused the credentials", url)
    if code == 404:
        return NotFound("Orthanc has no such resource", url)
    messages: list[str] = []
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        payload = {}
    if isinstance(payload, dict):
        if payload.get("Message"):
            messages.append(str(payload["Message"]))
        if code != 409 and payload.get("Details"):
            messages.append(str(payload["Details"]))
    detail = " - ".join(messages) or "no details"
    if code >= 500:
        return StorageUnavailable(f"Orthanc answered HTTP {code}: {detail}", url)
    return StorageRejected(f"Orthanc refused the request (HTTP {code}): {detail}", url)


def _dropped(sock: socket.socket | None) -> bool:
    """Whether an idle keep-alive socket was closed by Orthanc (readable while idle means EOF)."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_MAX_RESPONSE_HEAD = 64 * 1024
# Idle connections kept for the hand-written requests (more in use at once are closed after use).
_POOL_SIZE = 16


def _read_http_response(sock: socket.socket, buffer: bytearray,
                        into: bytearray | None = None) -> tuple[int, dict[bytes, bytes], bytes | memoryview]:
    """Read one HTTP/1.1 response off ``sock``: (status, headers with lower-case names, body).

    A small reader for the answers the lean upload and the lean file reads
    wait for: ``http.client`` builds an ``email`` message for the headers,
    which cost as much Python time as the rest of the request. Bodies with
    a Content-Length, chunked bodies and bodies ended by closing are read.
    ``buffer`` holds bytes read past the answer (none with Orthanc). With
    ``into``, a successful body with a Content-Length is received straight
    into it (or into a new buffer when it is too small) and returned as a
    view. Raises :class:`http.client.HTTPException` (or ``OSError``) when
    the answer is broken or the peer closed.
    """
    end = buffer.find(b"\r\n\r\n")
    while end < 0:
        if len(buffer) > _MAX_RESPONSE_HEAD:
            raise http.client.HTTPException("response headers too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        buffer += chunk
        end = buffer.find(b"\r\n\r\n", max(0, len(buffer) - len(chunk) - 3))
    lines = bytes(buffer[:end]).split(b"\r\n")
    del buffer[:end + 4]
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise http.client.BadStatusLine(lines[0].decode("latin-1"))
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()

    def fill(size: int) -> None:
        while len(buffer) < size:
            chunk = sock.recv(max(65536, size - len(buffer)))
            if not chunk:
                raise http.client.IncompleteRead(bytes(buffer), size - len(buffer))
            buffer.extend(chunk)

    def next_line() -> bytes:
        at = buffer.find(b"\r\n")
        while at < 0:
            if len(buffer) > _MAX_RESPONSE_HEAD:
                raise http.client.HTTPException("chunk size line too long")
            fill(len(buffer) + 1)
            at = buffer.find(b"\r\n")
        text = bytes(buffer[:at])
        del buffer[:at + 2]
        return text

    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            try:
                size = int(next_line().split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise http.client.HTTPException("bad chunk size") from exc
            if size == 0:
                while next_line():  # trailers, up to the empty line
                    pass
                break
            fill(size + 2)
            parts.append(bytes(buffer[:size]))
            del buffer[:size + 2]
        return int(status_line[1]), headers, b"".join(parts)
    if b"content-length" in headers:
        try:
            length = int(headers[b"content-length"])
        except ValueError as exc:
            raise http.client.HTTPException("bad Content-Length") from exc
        status = int(status_line[1])
        if into is not None and 200 <= status < 300:
            view = _room(into, length)
            got = min(len(buffer), length)
            view[:got] = buffer[:got]
            del buffer[:got]
            while got < length:
                n = sock.recv_into(view[got:])
                if not n:
                    raise http.client.IncompleteRead(b"", length - got)
                got += n
            return status, headers, view
        fill(length)
        body = bytes(buffer[:length])
        del buffer[:length]
        return status, headers, body
    while chunk := sock.recv(65536):  # no length: the body ends when the peer closes
        buffer += chunk
    body = bytes(buffer)
    buffer.clear()
    headers[b"connection"] = b"close"
    return int(status_line[1]), headers, body


# Orthanc closes idle keep-alive connections after about a second; a request
# sent on a pooled connection at that moment gets no answer at all
# ("Remote end closed connection without response"). For reads that is safe
# to retry at once on a new connection: GET and HEAD change nothing. Only the
# wait for the status line is retried (a body already being relayed is not).
_READ_RETRY = Retry(
    total=2,
    connect=2,
    read=2,
    status=0,
    other=0,
    redirect=0,
    allowed_methods=frozenset({"GET", "HEAD"}),
    backoff_factor=0,
    raise_on_status=False,
    respect_retry_after_header=False,
)


def _room(buffer: bytearray | None, size: int) -> memoryview:
    """A writable view of ``size`` bytes: the start of ``buffer`` when it is large enough, else a new
    buffer, rounded up to 64 KiB so that the next files of a series (a few bytes more or less) fit it."""
    if buffer is None or len(buffer) < size:
        buffer = bytearray(-(-size // 65536) * 65536)
    return memoryview(buffer)[:size]


def _regular_file_size(data: Any) -> int | None:
    """The size of a regular file behind a file object (what ``sendfile`` can read), else None."""
    try:
        st = os.fstat(data.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _first(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


class OrthancStore(IndexQueries):
    """A thread-safe handle on one Orthanc server.

    One HTTP session per thread (``requests`` sessions are not thread-safe
    for concurrent use), all built from the same URL and credentials.
    Query/retrieve reads of the index come from :class:`~storage.index.IndexQueries`.
    """

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout = timeout
        self._local = threading.local()
        # Idle kept-alive connections for the hand-written requests, any thread's (see _exchange).
        self._pool: list[tuple[socket.socket, bytearray]] = []
        self._pool_lock = threading.Lock()
        parts = urllib.parse.urlsplit(self.url)
        # Plain-HTTP Orthancs (the usual local one) get the lean reads below;
        # HTTPS keeps requests' certificate handling.
        self._lean_target = (parts.hostname or "127.0.0.1", parts.port or 80) if parts.scheme == "http" else None
        self._lean_prefix = parts.path.rstrip("/")
        self._lean_headers = {"Accept-Encoding": "identity"}
        if username and password:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._lean_headers["Authorization"] = f"Basic {token}"
        self._raw_target = self._hand_written_target()
        if self._raw_target is None:
            # A proxy from the environment (or https): every request goes through requests, which honours it.
            self._lean_target = None

    # -- plumbing -----------------------------------------------------------
    def _hand_written_target(self) -> tuple[str, int, str, str] | None:
        """Host, port, path prefix and authorization header line for the requests written
        by hand (:meth:`_exchange`), or ``None`` where only ``requests`` does the right
        thing (https, a proxy from the environment)."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or requests.utils.get_environ_proxies(self.url):
            return None
        auth = ""
        if self._username and self._password:
            # The very header requests' HTTPBasicAuth sends.
            auth = f"Authorization: {requests.auth._basic_auth_str(self._username, self._password)}\r\n"
        return parts.hostname, parts.port or 80, parts.path.rstrip("/"), auth

    def _lean_post(self, data: bytes | BinaryIO, size: int) -> Any:
        """``POST /instances`` of ``size`` bytes on a kept-alive connection; the parsed JSON answer.

        ``data`` is the instance, or a regular file opened at its start, which
        the kernel copies to the socket itself (``sendfile``): no read into a
        Python object. The request is written and the answer read by hand
        (:meth:`_exchange`).

        Why not ``requests``, nor ``http.client``: the forwarders upload every
        received slice, and a ``Session.post`` (request preparation,
        environment and proxy lookups, hooks, adapter, urllib3 pool) cost
        about twice the GIL time of the upload's own work, ``http.client``'s
        header parsing about as much again, taken from the threads receiving
        C-STOREs. An upload is idempotent (Orthanc answers ``AlreadyStored``),
        so a reused connection that Orthanc closed meanwhile is retried once on
        a new one. Failures are mapped as :meth:`upload` maps the client's.
        """
        offset = 0 if isinstance(data, bytes) else data.tell()

        def send(sock: socket.socket, head: bytes) -> None:
            if isinstance(data, bytes):
                sock.sendall(head + data if len(data) < 65536 else head)
                if len(data) >= 65536:
                    sock.sendall(data)
            else:
                sock.sendall(head)
                if size:
                    sock.sendfile(data, offset, size)

        status, body = self._exchange("POST", "/instances", send, size=size, retry=True,
                                      headers="Content-Type: application/dicom\r\nAccept: application/json\r\n")
        url = f"{self.url}/instances"
        if 200 <= status < 300:
            try:
                return json.loads(bytes(body))
            except ValueError as exc:  # as requests' Response.json() failing in _translate
                raise StorageUnavailable(f"Orthanc request failed: {exc}", url) from exc
        raise _http_failure(status, bytes(body), url)

    def _raw_get_into(self, endpoint: str, buffer: bytearray | None) -> memoryview:
        """GET ``endpoint`` written and read by hand (:meth:`_exchange`), the body received
        straight into ``buffer`` (see :func:`_room`). A read: retried once on a new
        connection when a kept-alive one turns out closed."""
        status, body = self._exchange("GET", endpoint, None, into=buffer if buffer is not None else bytearray(),
                                      retry=True)
        if 200 <= status < 300:
            return body if isinstance(body, memoryview) else memoryview(body)
        raise _http_failure(status, bytes(body), self.url + endpoint)

    def _raw_json(self, endpoint: str, query: Any = None, *, command: bool = False) -> Any:
        """:meth:`_read_json` written and read by hand (:meth:`_exchange`)."""
        url = self.url + endpoint
        if query is None:
            status, body = self._exchange("GET", endpoint, None, retry=True)
        else:
            payload = json.dumps(query).encode("utf-8")
            status, body = self._exchange(
                "POST", endpoint, lambda sock, head: sock.sendall(head + payload), size=len(payload),
                # A read-only query may go twice; a command (starting a job) never.
                retry=not command, headers="Content-Type: application/json\r\n")
        if not 200 <= status < 300:
            raise _http_failure(status, bytes(body), url)
        try:
            return json.loads(bytes(body))
        except ValueError as exc:
            raise StorageUnavailable(f"Orthanc answered something else than JSON: {exc}", url) from exc

    def _exchange(self, method: str, endpoint: str, send: Callable[[socket.socket, bytes], None] | None, *,
                  size: int = 0, into: bytearray | None = None, retry: bool,
                  headers: str = "") -> tuple[int, bytes | memoryview]:
        """One request written and its answer read by hand (:func:`_read_http_response`) on a
        kept-alive connection from this store's pool; (status, body).

        ``send(sock, head)`` writes the request head and body (None: a request without
        body). With ``retry``, a kept-alive connection that Orthanc closed as it was used
        is retried once on a new one; otherwise (a command) a connection that looks
        closed is not used, and a failure after sending is not retried.

        Why a pool shared by all threads: every association runs on a thread of its
        own, so connections kept per thread were opened anew for each C-MOVE and
        C-FIND (connect, and Orthanc's accept, before the first answer).
        """
        assert self._raw_target is not None
        host, port, prefix, auth = self._raw_target
        length = f"Content-Length: {size}\r\n" if send is not None else ""
        head = (f"{method} {prefix}{endpoint} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: identity\r\n"
                f"{headers}{auth}{length}\r\n").encode("latin-1")
        url = self.url + endpoint
        for attempt in (1, 2):
            reused = False
            sock: socket.socket | None = None
            try:
                sock, buffer, reused = self._pooled_socket(host, port)
                if send is None:
                    sock.sendall(head)
                else:
                    send(sock, head)
                status, answer_headers, body = _read_http_response(sock, buffer, into=into)
            except TimeoutError as exc:
                if sock is not None:
                    sock.close()
                raise StorageTimeout("Orthanc did not answer in time", url) from exc
            except (OSError, http.client.HTTPException) as exc:
                if sock is not None:
                    sock.close()
                if retry and reused and attempt == 1:
                    continue  # Orthanc closed the idle connection as we used it
                raise StorageUnavailable(f"Orthanc is not reachable: {exc!r}", url) from exc
            if answer_headers.get(b"connection", b"").lower() == b"close" or buffer:
                sock.close()
            else:
                self._pool_return(sock, buffer)
            return status, body
        raise AssertionError("unreachable")

    def _pooled_socket(self, host: str, port: int) -> tuple[socket.socket, bytearray, bool]:
        """An idle kept-alive socket of the pool (closed ones are discarded) or a new one;
        with its read buffer, and whether it was reused."""
        while True:
            with self._pool_lock:
                idle = self._pool.pop() if self._pool else None
            if idle is None:
                break
            if not _dropped(idle[0]):
                return idle[0], idle[1], True
            idle[0].close()
        sock = socket.create_connection((host, port), timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, bytearray(), False

    def _pool_return(self, sock: socket.socket, buffer: bytearray) -> None:
        with self._pool_lock:
            if len(self._pool) < _POOL_SIZE:
                self._pool.append((sock, buffer))
                return
        sock.close()

    @property
    def _api(self) -> OrthancApiClient:
        api = getattr(self._local, "api", None)
        if api is None:
            api = OrthancApiClient(self.url, user=self._username, pwd=self._password)
            self._local.api = api
        return api

    @contextmanager
    def _errors(self, endpoint: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is translated
            raise _translate(exc, f"{self.url}{endpoint}") from exc

    def _get_json(self, endpoint: str, **params: Any) -> Any:
        with self._errors(endpoint):
            return self._api.get_json(endpoint, params=params or None, timeout=self._timeout)

    def _post_json(self, endpoint: str, body: Any) -> Any:
        with self._errors(endpoint):
            return self._api.post(endpoint, json=body, timeout=self._timeout).json()

    def _put_json(self, endpoint: str, body: Any) -> None:
        with self._errors(endpoint):
            self._api.put(endpoint, json=body, timeout=self._timeout)

    def _call(self, endpoint: str, fn: Callable[[], T]) -> T:
        with self._errors(endpoint):
            return fn()

    @property
    def _raw(self) -> requests.Session:
        session = getattr(self._local, "raw", None)
        if session is None:
            session = requests.Session()
            if self._username and self._password:
                session.auth = (self._username, self._password)
            adapter = requests.adapters.HTTPAdapter(max_retries=_READ_RETRY)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.raw = session
        return session

    def open_stream(
        self, path: str, *, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> requests.Response:
        """GET ``path`` (from Orthanc's root, query string included) without reading the body.

        For relaying large answers (the DICOMweb proxy) chunk by chunk: the
        response comes back whatever its HTTP status, for the caller to map,
        and the caller must close it. Read-only on purpose.
        """
        if not path.startswith("/") or ".." in path.split("?", 1)[0]:
            raise ValueError(f"path must be absolute and plain: {path!r}")
        url = self.url + path
        try:
            return self._raw.get(
                url, headers=dict(headers or {}), stream=True, timeout=self._timeout if timeout is None else timeout
            )
        except requests.Timeout as exc:
            raise StorageTimeout("Orthanc did not answer in time", url) from exc
        except requests.RequestException as exc:
            raise StorageUnavailable(f"Orthanc is not reachable: {exc}", url) from exc

    # -- lean reads -----------------------------------------------------------
    # Why: a C-MOVE reads one metadata answer and one file per instance. Through
    # ``requests`` each GET costs 1-3 ms of Python (proxy and certificate look-ups,
    # hooks, adapters) and holds the GIL the DICOM sending thread needs; that,
    # not Orthanc, set the pace of a retrieve. These reads are written by hand on
    # connections shared by all threads (_exchange); where that is not possible
    # but Orthanc is on plain HTTP, on one kept-alive ``http.client`` connection
    # per thread.

    def _lean_response(self, endpoint: str, query: Any = None,
                       command: bool = False) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send GET ``endpoint`` (POST of the JSON ``query`` when given: a read-only
        query such as /tools/find) on this thread's kept-alive connection; the status line is read.

        The caller must read the body to its end, or close the connection.
        A kept-alive connection Orthanc has just closed is retried once on a
        new one (a read changes nothing). A ``command`` (a POST that changes
        something, such as starting a job) is never sent twice: it goes on a
        new connection when the kept one looks closed, and fails otherwise.
        """
        assert self._lean_target is not None
        url = self.url + endpoint
        for _ in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "lean", None)
            if command and conn is not None and _dropped(conn.sock):
                self._lean_drop(conn)
                conn = None
            reused = conn is not None and not command
            if conn is None:
                conn = http.client.HTTPConnection(*self._lean_target, timeout=self._timeout)
                self._local.lean = conn
            try:
                if query is None:
                    conn.request("GET", self._lean_prefix + endpoint, headers=self._lean_headers)
                else:
                    conn.request("POST", self._lean_prefix + endpoint, body=json.dumps(query).encode("utf-8"),
                                 headers={**self._lean_headers, "Content-Type": "application/json"})
                response = conn.getresponse()
                if not reused and conn.sock is not None:
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return conn, response
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._lean_drop(conn)
                if not reused:
                    raise StorageUnavailable(f"Orthanc is not reachable: {exc}", url) from exc
            except TimeoutError as exc:
                self._lean_drop(conn)
                raise StorageTimeout("Orthanc did not answer in time", url) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._lean_drop(conn)
                raise StorageUnavailable(f"Orthanc is not reachable: {exc}", url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _lean_drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "lean", None) is conn:
            self._local.lean = None

    def _lean_status(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, url: str) -> None:
        """Raise :func:`_http_failure`'s error for a status other than 200 (the connection is dropped)."""
        if response.status == 200:
            return
        try:
            body = response.read(_MAX_RESPONSE_HEAD)  # Orthanc's error JSON, for the message
        except (OSError, http.client.HTTPException):
            body = b""
        self._lean_drop(conn)
        raise _http_failure(response.status, body, url)

    def _read_json(self, endpoint: str, query: Any = None, *, command: bool = False) -> Any:
        """GET ``endpoint`` (or POST the JSON ``query`` to it: read-only unless ``command``)
        as JSON, through the lean connection when Orthanc is on plain HTTP."""
        if self._lean_target is None:
            return self._get_json(endpoint) if query is None else self._post_json(endpoint, query)
        if self._raw_target is not None:
            return self._raw_json(endpoint, query, command=command)
        url = self.url + endpoint
        conn, response = self._lean_response(endpoint, query, command)
        try:
            self._lean_status(conn, response, url)
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._lean_drop(conn)
            raise StorageUnavailable(f"Orthanc answer cut short: {exc}", url) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise StorageUnavailable(f"Orthanc answered something else than JSON: {exc}", url) from exc

    def read_instance(self, instance_id: str) -> bytes:
        """The stored Part-10 file of one instance (see :meth:`read_instance_into`)."""
        if self._raw_target is None:
            return super().read_instance(instance_id)
        return bytes(self.read_instance_into(instance_id, None))

    def read_instance_into(self, instance_id: str, buffer: bytearray | None) -> memoryview:
        """The stored Part-10 file of one instance, read into ``buffer`` when it is large
        enough (else into a new one): a view of exactly the file's bytes.

        Why: a C-MOVE reads one file per instance while the previous one goes out;
        a new half-megabyte ``bytes`` per CT slice costs its page faults on top
        of the copy, a reused buffer only the copy. Where requests cannot be
        written by hand (https, a proxy), ``requests`` reads it into a new buffer.
        """
        if self._raw_target is None:
            return super().read_instance_into(instance_id, buffer)
        return self._raw_get_into(f"/instances/{instance_id}/file", buffer)

    def _save_to(self, endpoint: str, target: Path, chunk: int) -> int:
        """Stream the body of GET ``endpoint`` into the file ``target``; its size.

        Reads into one reused buffer: RAM stays at ``chunk`` whatever the size.
        """
        if self._lean_target is None:
            return self._save_streamed(endpoint, target, chunk)
        url = self.url + endpoint
        conn, response = self._lean_response(endpoint)
        size = 0
        try:
            self._lean_status(conn, response, url)
            buffer = memoryview(bytearray(chunk))
            with open(target, "wb") as fh:
                while True:
                    n = response.readinto(buffer)
                    if not n:
                        break
                    fh.write(buffer[:n])
                    size += n
            if response.length:  # Content-Length not reached
                raise http.client.IncompleteRead(b"", response.length)
        except (OSError, http.client.HTTPException) as exc:
            self._lean_drop(conn)
            if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
                raise  # the local file could not be written: not Orthanc's doing
            raise StorageUnavailable(f"Orthanc answer cut short: {exc}", url) from exc
        except BaseException:
            self._lean_drop(conn)
            raise
        return size

    def _save_streamed(self, endpoint: str, target: Path, chunk: int) -> int:
        with self.open_stream(endpoint, headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code == 404:
                raise NotFound("Orthanc has no such instance", response.url)
            if response.status_code != 200:
                raise StorageUnavailable(f"Orthanc answered HTTP {response.status_code}", response.url)
            size = 0
            with open(target, "wb") as fh:
                for block in response.iter_content(chunk):
                    fh.write(block)
                    size += len(block)
            return size

    # -- health -------------------------------------------------------------
    def ping(self) -> bool:
        """True when Orthanc answers its REST API with our credentials."""
        try:
            self._get_json("/system")
        except StorageError:
            return False
        return True

    def system(self) -> SystemInfo:
        system = self._get_json("/system")
        stats = self._get_json("/statistics")
        plugins = self._get_json("/plugins")
        return SystemInfo(
            version=str(system.get("Version", "")),
            name=str(system.get("Name", "")),
            dicom_aet=str(system.get("DicomAet", "")),
            plugins=tuple(sorted(plugins)),
            instances=int(stats.get("CountInstances", 0)),
            studies=int(stats.get("CountStudies", 0)),
        )

    # -- writing ------------------------------------------------------------
    def upload(self, data: bytes | BinaryIO) -> UploadResult:
        """Store one DICOM instance (Part 10 bytes, or a binary file opened at
        its start, which is streamed rather than read into memory). Idempotent.

        Raises :class:`StorageRejected` when Orthanc says the bytes are not a
        DICOM instance it can store, :class:`StorageUnavailable` otherwise.
        """
        endpoint = "/instances"

        def post() -> Any:
            if self._raw_target is not None and isinstance(data, (bytes, bytearray, memoryview)):
                raw = bytes(data) if not isinstance(data, bytes) else data
                return self._lean_post(raw, len(raw))
            size = _regular_file_size(data)
            if self._raw_target is not None and size is not None:
                return self._lean_post(data, size - data.tell())  # type: ignore[union-attr]
            response = self._api.post(
                endpoint,
                data=data,
                headers={"Content-Type": "application/dicom"},
                timeout=self._timeout,
            )
            return response.json()

        try:
            body = self._call(endpoint, post)
        except NotFound as exc:
            # Orthanc answers some unparsable files with 404 ("inexistent
            # tag"): for an upload that is a refusal of the content.
            raise StorageRejected(f"Orthanc refused the file: {exc.message}", exc.url) from exc
        if not isinstance(body, dict) or "ID" not in body:
            raise StorageRejected(f"unexpected answer to upload: {body!r}", f"{self.url}{endpoint}")
        return UploadResult(
            instance_id=body["ID"],
            study_id=body.get("ParentStudy", ""),
            series_id=body.get("ParentSeries", ""),
            patient_id=body.get("ParentPatient", ""),
            already_stored=body.get("Status") == "AlreadyStored",
        )

    def push_instances(self, instance_ids: Sequence[str], *, ae_title: str, host: str, port: int, local_aet: str,
                       originator_aet: str | None = None, originator_id: int | None = None) -> PushJob:
        """Have Orthanc send these instances, in this order, to the DICOM peer ``ae_title@host:port``.

        Orthanc's own C-STORE SCU does the sending as a job (see
        :mod:`storage.push`), calling as ``local_aet``; the answer is the
        running job, to follow and cancel. Raises :class:`StorageError` when
        the job cannot be started.
        """
        return start_push(self, instance_ids, ae_title=ae_title, host=host, port=port, local_aet=local_aet,
                          originator_aet=originator_aet, originator_id=originator_id, timeout=self._timeout)

    def set_study_metadata(self, study_id: str, key: str, value: str) -> None:
        """Attach filmless metadata (e.g. the linked order) to a study."""
        if key not in METADATA_KEYS:
            raise ValueError(f"unknown metadata key {key!r}; declare it in METADATA_KEYS")
        endpoint = f"/studies/{study_id}/metadata/{key}"
        self._call(
            endpoint,
            lambda: self._api.put(endpoint, data=value.encode("utf-8"), timeout=self._timeout),
        )

    def _modified_instance(self, endpoint: str, body: dict[str, Any]) -> bytes:
        with self._errors(endpoint):
            return bytes(self._api.post(endpoint, json=body, timeout=self._timeout).content)

    def replace_identity(self, study_id: str, tags: Mapping[str, str]) -> str:
        """Rewrite the identity tags of a stored study (the EMR's identity after a manual link)
        and return the Orthanc id of the corrected study.

        Orthanc 1.10 refuses to change PatientID on ``/studies/{id}/modify``, so each
        instance is rewritten on its own (``/instances/{id}/modify`` keeps every UID),
        stored, and only once every instance of the corrected copy is in Orthanc is the
        modality's copy removed: the one place filmless removes anything, and only a copy
        it has just replaced (the Orthanc id changes because it is derived from PatientID).
        """
        allowed = {"PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID", "AccessionNumber"}
        unknown = set(tags) - allowed
        if unknown:
            raise ValueError(f"not an identity tag: {sorted(unknown)}")
        instances = self._get_json(f"/studies/{study_id}/instances")
        ids = [i["ID"] for i in instances if isinstance(i, dict) and "ID" in i]
        if not ids:
            raise NotFound(f"study {study_id} has no instances", f"{self.url}/studies/{study_id}")
        new_study = ""
        for instance_id in ids:
            endpoint = f"/instances/{instance_id}/modify"
            body = {
                "Replace": dict(tags),
                "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
                "Force": True,
            }
            data = self._modified_instance(endpoint, body)
            result = self.upload(data)
            if new_study and result.study_id != new_study:
                raise StorageError(f"corrected copy of {study_id} split into two studies", f"{self.url}{endpoint}")
            new_study = result.study_id
        if new_study == study_id:
            return study_id  # the identity was already the EMR's
        stored = self._get_json(f"/studies/{new_study}/instances")
        if len(stored) < len(ids):
            raise StorageError(
                f"corrected copy of {study_id} holds {len(stored)} of {len(ids)} instances; the original is kept",
                f"{self.url}/studies/{new_study}",
            )
        endpoint = f"/studies/{study_id}"
        self._call(endpoint, lambda: self._api.delete(endpoint, timeout=self._timeout))
        return new_study

    # -- reading ------------------------------------------------------------
    def get_study_metadata(self, study_id: str, key: str) -> str | None:
        endpoint = f"/studies/{study_id}/metadata/{key}"
        try:
            return self._call(
                endpoint,
                lambda: self._api.get(endpoint, timeout=self._timeout).content.decode("utf-8"),
            )
        except NotFound:
            return None

    def find_studies(
        self,
        *,
        patient_id: str | None = None,
        accession_number: str | None = None,
        study_instance_uid: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        modality: str | None = None,
        limit: int = 100,
    ) -> list[StudySummary]:
        """Find studies; dates are ``YYYYMMDD``, all filters optional (AND).

        Values are matched exactly (DICOM wildcards ``*``/``?`` are escaped
        away by refusing them), so a user-typed ID cannot widen a query.
        """
        query: dict[str, str] = {}
        for tag, value in (
            ("PatientID", patient_id),
            ("AccessionNumber", accession_number),
            ("StudyInstanceUID", study_instance_uid),
        ):
            if value is not None:
                if any(c in value for c in "*?\\"):
                    raise ValueError(f"{tag} may not contain wildcards: {value!r}")
                query[tag] = value
        if date_from or date_to:
            query["StudyDate"] = f"{date_from or ''}-{date_to or ''}"
        if modality:
            query["ModalitiesInStudy"] = modality
        body = {"Level": "Study", "Query": query, "Expand": True, "Limit": limit}
        found = self._post_json("/tools/find", body)
        return [self._summary(item) for item in found]

    def study_is_stable(self, study_id: str) -> bool:
        """Orthanc has received no instance of the study for its StableAge: the study is complete."""
        body = self._get_json(f"/studies/{study_id}")
        return bool(body.get("IsStable")) if isinstance(body, dict) else False

    def get_study(self, study_id: str) -> StudySummary:
        return self._summary(self._get_json(f"/studies/{study_id}"))

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        """Each series of a study with its main tags and instance IDs."""
        return list(self._get_json(f"/studies/{study_id}/series"))

    def series_instances(self, series_id: str) -> list[dict[str, Any]]:
        return list(self._get_json(f"/series/{series_id}/instances"))

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """Tags of one instance, by keyword (Orthanc's ``simplify``)."""
        return dict(self._get_json(f"/instances/{instance_id}/tags", simplify=""))

    def instance_file(self, instance_id: str) -> bytes:
        endpoint = f"/instances/{instance_id}/file"
        return self._call(endpoint, lambda: self._api.get_binary(endpoint, timeout=self._timeout))

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc ID of the instance with this SOP Instance UID, if stored."""
        found = self._post_json(
            "/tools/find",
            {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
        )
        return str(found[0]) if found else None

    def instance_sop_class(self, sop_instance_uid: str) -> str | None:
        """SOP Class UID of the stored instance with this SOP Instance UID;
        ``None`` when Orthanc does not have it. For storage commitment: the
        answer to "do you keep this instance now?"."""
        instance_id = self.find_instance(sop_instance_uid)
        if instance_id is None:
            return None
        endpoint = f"/instances/{instance_id}/metadata/SopClassUid"
        try:
            return self._call(
                endpoint, lambda: self._api.get(endpoint, timeout=self._timeout).content.decode("ascii").strip()
            )
        except NotFound:
            # Stored before Orthanc recorded the class: read it from the tags.
            return str(self.instance_tags(instance_id).get("SOPClassUID", "")) or None

    def statistics(self) -> StorageStatistics:
        """Counts and disk use as Orthanc reports them (one cheap REST call, safe to poll)."""
        stats = self._get_json("/statistics")
        return StorageStatistics(
            disk_bytes=int(stats.get("TotalDiskSize", 0)),
            uncompressed_bytes=int(stats.get("TotalUncompressedSize", 0)),
            instances=int(stats.get("CountInstances", 0)),
            series=int(stats.get("CountSeries", 0)),
            studies=int(stats.get("CountStudies", 0)),
            patients=int(stats.get("CountPatients", 0)),
        )

    def count_instances(self) -> int:
        return int(self._get_json("/statistics").get("CountInstances", 0))

    def changes(self, since: int = 0, limit: int = 100) -> ChangesPage:
        """One page of Orthanc's changes feed after sequence number ``since``."""
        body = self._get_json("/changes", since=since, limit=limit)
        changes = tuple(
            Change(
                seq=int(c["Seq"]),
                change_type=str(c["ChangeType"]),
                resource_type=str(c["ResourceType"]),
                resource_id=str(c["ID"]),
                date=str(c.get("Date", "")),
            )
            for c in body.get("Changes", [])
        )
        return ChangesPage(changes=changes, last=int(body.get("Last", since)), done=bool(body.get("Done")))

    def instance_ids(self, since: int = 0, limit: int = 1000) -> list[str]:
        """One page of every stored instance's Orthanc ID (``since`` is an offset),
        for walking the whole archive without one huge answer."""
        return [str(i) for i in self._get_json("/instances", since=since, limit=limit)]

    def study_ids(self) -> list[str]:
        return [str(i) for i in self._get_json("/studies")]

    def study_metadata(self, study_id: str) -> dict[str, str]:
        """filmless's own metadata of one study (see :data:`METADATA_KEYS`)."""
        found: dict[str, str] = {}
        names = set(self._get_json(f"/studies/{study_id}/metadata"))
        for key in METADATA_KEYS:
            if key in names:
                value = self.get_study_metadata(study_id, key)
                if value is not None:
                    found[key] = value
        return found

    def _modalities(self, study_id: str) -> tuple[str, ...]:
        """Modalities of a study's series, in series order without repeats.

        Orthanc 1.10 does not keep ModalitiesInStudy among a study's main tags
        (it only matches on it in /tools/find), so it is read from the series.
        """
        seen: dict[str, None] = {}
        for series in self._get_json(f"/studies/{study_id}/series"):
            modality = _first(series.get("MainDicomTags", {}).get("Modality"))
            if modality:
                seen.setdefault(modality, None)
        return tuple(seen)

    def _summary(self, item: dict[str, Any]) -> StudySummary:
        main = item.get("MainDicomTags", {})
        patient = item.get("PatientMainDicomTags", {})
        stored = _first(main.get("ModalitiesInStudy", ""))
        modalities = tuple(m for m in stored.split("\\") if m) or self._modalities(str(item["ID"]))
        return StudySummary(
            orthanc_id=str(item["ID"]),
            study_instance_uid=_first(main.get("StudyInstanceUID")),
            patient_id=_first(patient.get("PatientID")),
            patient_name=_first(patient.get("PatientName")),
            accession_number=_first(main.get("AccessionNumber")),
            study_date=_first(main.get("StudyDate")),
            study_description=_first(main.get("StudyDescription")),
            modalities=modalities,
            series_count=len(item.get("Series", [])),
            tags={**patient, **main},
        )
