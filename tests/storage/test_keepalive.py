"""Reads survive a keep-alive connection the server dropped between requests.

Orthanc closes idle keep-alive connections after about a second. A GET sent
on a pooled connection just as it is closed gets no answer at all; the
facade must then retry on a fresh connection instead of failing a viewer's
frame request. A plain socket server plays that server here, because the
race cannot be timed reliably against a real Orthanc.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from storage import OrthancStore, StorageTimeout, StorageUnavailable


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def _answer(conn: socket.socket, body: bytes) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class _CountingServer:
    """A socket server on a free port that counts the connections it accepts
    and hands each to :meth:`_accepted` (in its accepting thread)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class DroppingServer(_CountingServer):
    """Answers the first request of each connection, then closes it silently
    when a second request arrives on it; counts the connections it saw."""

    def __init__(self, drop_every_retry: bool = False) -> None:
        self.drop_every_retry = drop_every_retry
        super().__init__()

    def _accepted(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if not request:
                return
            if self.drop_every_retry and self.connections > 1:
                return  # close without an answer, every time
            path = request.split(b" ", 2)[1]
            _answer(conn, b"answer to " + path)
            # The keep-alive connection is now idle in the client's pool:
            # take the next request on it and hang up without answering.
            _read_request(conn)


@pytest.fixture
def server() -> Iterator[DroppingServer]:
    s = DroppingServer()
    yield s
    s.close()


def test_get_on_a_dropped_keepalive_connection_is_retried(server: DroppingServer) -> None:
    store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=5)
    first = store.open_stream("/dicom-web/first")
    assert first.content == b"answer to /dicom-web/first"
    first.close()
    second = store.open_stream("/dicom-web/second")
    assert second.status_code == 200
    assert second.content == b"answer to /dicom-web/second"
    second.close()
    assert server.connections == 2  # the dropped connection, then a fresh one


def test_a_server_that_never_answers_still_fails_clearly() -> None:
    server = DroppingServer(drop_every_retry=True)
    try:
        store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=5)
        first = store.open_stream("/system")
        assert first.content == b"answer to /system"  # read whole: the connection stays pooled
        first.close()
        with pytest.raises(StorageUnavailable):
            store.open_stream("/system")
        # One try on the pooled connection, two retries on new ones, then give up.
        assert server.connections == 3
    finally:
        server.close()


class _UploadServer(_CountingServer):
    """Answers an upload like Orthanc on each new connection; on a reused one it hangs up
    without answering (``drop``) or never answers (``silent``). Counts connections."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__()

    def _request(self, conn: socket.socket) -> bool:
        head = _read_request(conn)
        if not head:
            return False
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def _accepted(self, conn: socket.socket) -> None:
        threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if not self._request(conn):
                return
            body = b'{"ID": "i1", "ParentStudy": "s1", "ParentSeries": "x1", "ParentPatient": "p1"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            if not self._request(conn):
                return
            if self.mode == "silent":
                threading.Event().wait(30)


def test_upload_on_a_dropped_keepalive_connection_is_retried_once() -> None:
    server = _UploadServer("drop")
    try:
        store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=5)
        assert store.upload(b"DICM" * 100).instance_id == "i1"
        assert store.upload(b"DICM" * 100).study_id == "s1"  # dropped on the kept connection, then a new one
        assert server.connections == 2
    finally:
        server.close()


def test_an_upload_that_gets_no_answer_times_out() -> None:
    server = _UploadServer("silent")
    try:
        store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=1)
        store.upload(b"DICM" * 100)
        with pytest.raises(StorageTimeout):
            store.upload(b"DICM" * 100)
    finally:
        server.close()


class _JsonServer(_CountingServer):
    """Answers every request on a connection with JSON (each connection in a thread of its own),
    and records the requests; with ``drop_second``, a connection's second request gets no answer."""

    def __init__(self, drop_second: bool = False) -> None:
        self.drop_second = drop_second
        self.requests: list[bytes] = []
        super().__init__()

    def _accepted(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            served = 0
            while request := _read_request(conn):
                head, _, rest = request.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head.split(b"\r\n", 1)[0])
                served += 1
                if self.drop_second and served == 2:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                             b"Connection: keep-alive\r\n\r\n{\"ID\": \"j\"}")


def test_threads_share_kept_alive_connections() -> None:
    """Each association runs on a new thread: its reads must not each open a connection."""
    server = _JsonServer()
    try:
        store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=5)
        for n in range(5):
            reader = threading.Thread(target=store._read_json, args=(f"/studies/{n}",))
            reader.start()
            reader.join()
        assert len(server.requests) == 5 and server.connections == 1
    finally:
        server.close()


def test_a_command_on_a_dropped_connection_is_not_sent_again() -> None:
    """A read-only POST (a query) is retried on a new connection; a command (starting a job) is not."""
    server = _JsonServer(drop_second=True)
    try:
        store = OrthancStore(f"http://127.0.0.1:{server.port}", timeout=5)
        assert store._read_json("/tools/find", {"Level": "Study"}) == {"ID": "j"}
        assert store._read_json("/tools/find", {"Level": "Study"}) == {"ID": "j"}  # dropped, then retried
        assert server.connections == 2
        assert store._read_json("/jobs/x", None) == {"ID": "j"}  # the second connection's first request
        with pytest.raises(StorageUnavailable):
            store._read_json("/modalities/ws/store", {"Resources": []}, command=True)
        assert server.requests.count(b"POST /modalities/ws/store HTTP/1.1") == 1
    finally:
        server.close()
