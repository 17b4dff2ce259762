"""The storage facade against a real Orthanc."""

from __future__ import annotations

import http.client
import http.server
import io
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from storage import NotFound, OrthancStore, StorageRejected, StorageTimeout, StorageUnavailable
from tests.dicom_factory import ct_instance


def test_upload_is_idempotent_and_reports_ids(orthanc: OrthancStore) -> None:
    data = ct_instance(patient_id="IDEMP-1")
    first = orthanc.upload(data)
    second = orthanc.upload(data)
    assert not first.already_stored
    assert second.already_stored
    assert first.instance_id == second.instance_id
    assert first.study_id and first.series_id and first.patient_id


@pytest.mark.parametrize("junk", [b"", b"not dicom at all", b"\0" * 200])
def test_upload_of_junk_is_rejected_not_unavailable(orthanc: OrthancStore, junk: bytes) -> None:
    with pytest.raises(StorageRejected) as info:
        orthanc.upload(junk)
    assert info.value.url and info.value.url.endswith("/instances")


def test_vietnamese_names_round_trip_as_utf8(orthanc: OrthancStore) -> None:
    name = "Trần^Văn Đức Hưởng"
    result = orthanc.upload(ct_instance(patient_id="VN-UTF8", patient_name=name))
    tags = orthanc.instance_tags(result.instance_id)
    assert tags["PatientName"] == name
    study = orthanc.get_study(result.study_id)
    assert study.patient_name == name
    assert study.study_description == "CT sọ não"


def test_find_studies_by_each_filter(orthanc: OrthancStore) -> None:
    study_uid = generate_uid()
    orthanc.upload(ct_instance(patient_id="FIND-1", accession="ACC-FIND-1", study_uid=study_uid,
                               study_date="20250315"))
    orthanc.upload(ct_instance(patient_id="FIND-2", accession="ACC-FIND-2", study_date="20250320"))

    assert [s.study_instance_uid for s in orthanc.find_studies(patient_id="FIND-1")] == [study_uid]
    assert [s.patient_id for s in orthanc.find_studies(accession_number="ACC-FIND-2")] == ["FIND-2"]
    assert [s.accession_number for s in orthanc.find_studies(study_instance_uid=study_uid)] == ["ACC-FIND-1"]
    in_range = {s.patient_id for s in orthanc.find_studies(date_from="20250314", date_to="20250316")}
    assert "FIND-1" in in_range and "FIND-2" not in in_range
    assert orthanc.find_studies(patient_id="FIND-1", modality="MR") == []
    assert [s.modalities for s in orthanc.find_studies(patient_id="FIND-1", modality="CT")] == [("CT",)]
    assert orthanc.find_studies(patient_id="NO-SUCH-PATIENT") == []


def test_find_refuses_wildcards_from_callers(orthanc: OrthancStore) -> None:
    with pytest.raises(ValueError):
        orthanc.find_studies(patient_id="*")


def test_study_metadata_links(orthanc: OrthancStore) -> None:
    result = orthanc.upload(ct_instance(patient_id="META-1"))
    assert orthanc.get_study_metadata(result.study_id, "FilmlessOrderId") is None
    orthanc.set_study_metadata(result.study_id, "FilmlessOrderId", "ORD-42")
    assert orthanc.get_study_metadata(result.study_id, "FilmlessOrderId") == "ORD-42"
    with pytest.raises(ValueError):
        orthanc.set_study_metadata(result.study_id, "Unknown", "x")


def test_changes_feed_pages_forward(orthanc: OrthancStore) -> None:
    before = orthanc.changes(since=0, limit=10_000).last
    result = orthanc.upload(ct_instance(patient_id="CHG-1"))
    page = orthanc.changes(since=before, limit=100)
    assert any(c.change_type == "NewStudy" and c.resource_id == result.study_id for c in page.changes)
    assert all(c.seq > before for c in page.changes)
    assert page.last >= max(c.seq for c in page.changes)


def test_missing_resources_raise_not_found(orthanc: OrthancStore) -> None:
    with pytest.raises(NotFound):
        orthanc.get_study("00000000-00000000-00000000-00000000-00000000")
    assert orthanc.find_instance(generate_uid()) is None


def test_instance_file_returns_the_uploaded_bytes(orthanc: OrthancStore) -> None:
    data = ct_instance(patient_id="FILE-1")
    result = orthanc.upload(data)
    assert orthanc.instance_file(result.instance_id) == data
    sop = orthanc.instance_tags(result.instance_id)["SOPInstanceUID"]
    assert orthanc.find_instance(sop) == result.instance_id


def test_wrong_credentials_and_stopped_orthanc_are_unavailable(fresh_orthanc) -> None:
    proc = fresh_orthanc()
    good = proc.store()
    bad = OrthancStore(good.url, "filmless", "wrong-password")
    assert good.ping()
    assert not bad.ping()
    with pytest.raises(StorageUnavailable):
        bad.upload(ct_instance())
    proc.stop()
    with pytest.raises(StorageUnavailable):
        good.upload(ct_instance())


def test_no_delete_path_is_exposed() -> None:
    assert not [name for name in dir(OrthancStore) if "delete" in name.lower() or "remove" in name.lower()]


def test_open_stream_relays_dicomweb_without_reading_it(orthanc: OrthancStore) -> None:
    result = orthanc.upload(ct_instance(patient_id="STREAM-1"))
    uid = orthanc.get_study(result.study_id).study_instance_uid
    response = orthanc.open_stream(f"/dicom-web/studies/{uid}/series", headers={"Accept": "application/dicom+json"})
    try:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/dicom+json")
        body = b"".join(response.iter_content(4096))
        assert b'"0020000D"' in body and uid.encode() in body
    finally:
        response.close()
    missing = orthanc.open_stream("/studies/00000000-00000000-00000000-00000000-00000000")
    assert missing.status_code == 404  # the caller maps statuses itself
    missing.close()
    with pytest.raises(ValueError):
        orthanc.open_stream("dicom-web/studies")
    with pytest.raises(ValueError):
        orthanc.open_stream("/dicom-web/../instances")
    with pytest.raises(StorageUnavailable):
        OrthancStore("http://127.0.0.1:9").open_stream("/system")


def test_lean_upload_fails_exactly_like_the_client_path(fresh_orthanc) -> None:
    """Bytes go through the lean keep-alive POST, file objects through orthanc-api-client:
    the same input must give the same outcome, failures included."""
    proc = fresh_orthanc()
    good = proc.store()
    assert good._raw_target is not None  # plain http, no proxy: the lean path is in use
    for junk in (b"", b"not dicom at all", b"\0" * 200):
        with pytest.raises(StorageRejected) as lean:
            good.upload(junk)
        with pytest.raises(StorageRejected) as client:
            good.upload(io.BytesIO(junk))
        assert (lean.value.message, lean.value.url) == (client.value.message, client.value.url)
    data = ct_instance(patient_id="LEAN-1")
    first = good.upload(data)
    again = good.upload(io.BytesIO(data))
    assert not first.already_stored and again.already_stored and again.instance_id == first.instance_id
    time.sleep(2.5)  # longer than Orthanc keeps an idle connection open: the next upload reconnects
    assert good.upload(data).already_stored
    bad = OrthancStore(good.url, "filmless", "wrong-password")
    with pytest.raises(StorageUnavailable) as lean_auth:
        bad.upload(data)
    with pytest.raises(StorageUnavailable) as client_auth:
        bad.upload(io.BytesIO(data))
    assert lean_auth.value.message == client_auth.value.message == "Orthanc refused the credentials"
    proc.stop()
    with pytest.raises(StorageUnavailable) as down:
        good.upload(data)  # the kept-alive connection is gone, and so is Orthanc
    assert not isinstance(down.value, StorageTimeout)


def test_lean_upload_of_a_file_gives_the_outcome_of_its_bytes(fresh_orthanc, tmp_path) -> None:
    """A regular file goes to a plain-HTTP Orthanc with sendfile(), on the same kept-alive connection
    as bytes: same answers (refusal, stored, already stored), from any start offset."""
    proc = fresh_orthanc()
    store = proc.store()
    for junk in (b"", b"not dicom at all", b"\0" * 200):
        path = tmp_path / "junk.bin"
        path.write_bytes(junk)
        with pytest.raises(StorageRejected) as from_file, open(path, "rb") as f:
            store.upload(f)
        with pytest.raises(StorageRejected) as from_bytes:
            store.upload(junk)
        assert (from_file.value.message, from_file.value.url) == (from_bytes.value.message, from_bytes.value.url)
    data = ct_instance(patient_id="LEAN-FILE-1")
    path = tmp_path / "ct.dcm"
    path.write_bytes(b"garbage before the instance" + data)
    with open(path, "rb") as f:
        f.seek(len(b"garbage before the instance"))  # "a binary file opened at its start": here, its start
        first = store.upload(f)
    assert not first.already_stored
    assert store.instance_file(first.instance_id) == data
    assert store.upload(data).already_stored
    with open(path, "rb") as f:
        f.seek(len(b"garbage before the instance"))
        assert store.upload(f).instance_id == first.instance_id


def test_http_response_reader_reads_lengths_chunks_and_closing_bodies() -> None:
    """The lean upload's reader (Orthanc answers with a Content-Length; other servers may not)."""
    import socket

    from storage.client import _read_http_response

    answers = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Type: application/json\r\n\r\n{\"a\":1}",
         200, b"{\"a\":1}"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-T: 1\r\n\r\n",
         200, b"{\"a\":1}"),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 400, b""),
    ]
    left, right = socket.socketpair()
    with left, right:
        buffer = bytearray()
        for raw, status, body in answers:  # back to back on one connection, sent in small pieces
            for i in range(0, len(raw), 5):
                right.sendall(raw[i:i + 5])
            assert _read_http_response(left, buffer)[0::2] == (status, body)
        assert not buffer
        right.sendall(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end")
        right.close()
        code, headers, body = _read_http_response(left, buffer)
        assert (code, body, headers[b"connection"]) == (200, b"until the end", b"close")
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        right.close()
        with pytest.raises(http.client.IncompleteRead):
            _read_http_response(left, bytearray())
    left, right = socket.socketpair()
    with left, right:
        right.close()
        with pytest.raises(http.client.RemoteDisconnected):
            _read_http_response(left, bytearray())


class _ForwardProxy(http.server.ThreadingHTTPServer):
    """A small real HTTP forward proxy: relays absolute-URI requests and remembers their paths."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                target = urllib.parse.urlsplit(self.path)
                proxy.seen.append(f"{self.command} {target.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay

            def log_message(self, *args: object) -> None:
                pass

        proxy = self
        super().__init__(("127.0.0.1", 0), Handler)


def test_every_request_goes_through_the_proxy_the_environment_names(
    orthanc: OrthancStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set for Orthanc's address, JSON reads and file downloads follow it like uploads do
    (they used to open their own connection to Orthanc, around the proxy)."""
    data = ct_instance(patient_id="PROXY-1")
    result = orthanc.upload(data)
    proxy = _ForwardProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        via = OrthancStore(orthanc.url, orthanc._username, orthanc._password)
        assert via.get_resource("Instance", result.instance_id).orthanc_id == result.instance_id
        size = via.save_instance(result.instance_id, tmp_path / "copy.dcm")
        assert size == (tmp_path / "copy.dcm").stat().st_size > 0
        assert via.upload(data).already_stored
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert f"GET /instances/{result.instance_id}" in proxy.seen
    assert f"GET /instances/{result.instance_id}/file" in proxy.seen
    assert "POST /instances" in proxy.seen
