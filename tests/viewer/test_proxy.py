"""The DICOMweb proxy over HTTP: access decisions, audit, header pass-through
and streaming, against the real Orthanc and against a small local upstream
whose behaviour the test controls (for Range and streaming)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests
from flask import Flask, Response, request
from pydicom.uid import generate_uid

from storage import OrthancStore
from tests.viewer.phantom import CtSeries
from tests.viewer.server import AccessRules, serve
from viewer import AccessDenied, dicomweb_blueprint

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def instance_path(study: CtSeries, index: int = 0) -> str:
    return f"/dicomweb/studies/{study.study_uid}/series/{study.series_uid}/instances/{study.sop_uids[index]}"


def test_authorized_requests_reach_orthanc(viewer_url: str, ct_study: CtSeries, rules: AccessRules) -> None:
    r = requests.get(f"{viewer_url}/dicomweb/studies/{ct_study.study_uid}/series", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/dicom+json")
    assert r.headers["Cache-Control"] == "private, no-store"
    [series] = r.json()
    assert series["0020000E"]["Value"] == [ct_study.series_uid]
    found = requests.get(f"{viewer_url}/dicomweb/studies", params={"StudyInstanceUID": ct_study.study_uid}, timeout=30)
    assert found.status_code == 200 and len(found.json()) == 1


def test_frames_stream_as_multipart(viewer_url: str, ct_study: CtSeries, rules: AccessRules) -> None:
    with requests.get(
        f"{viewer_url}{instance_path(ct_study)}/frames/1", headers={"Accept": FRAME_ACCEPT}, stream=True, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("multipart/related")
        body = b"".join(r.iter_content(65536))
    # The frame's 512×512×2 bytes are inside the multipart body, unchanged.
    assert ct_study.datasets[0].PixelData in body


def test_accept_header_goes_upstream(viewer_url: str, ct_study: CtSeries, rules: AccessRules) -> None:
    png = requests.get(f"{viewer_url}{instance_path(ct_study)}/rendered", headers={"Accept": "image/png"}, timeout=30)
    jpeg = requests.get(f"{viewer_url}{instance_path(ct_study)}/rendered", headers={"Accept": "image/jpeg"}, timeout=30)
    assert png.status_code == jpeg.status_code == 200
    assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert jpeg.headers["Content-Type"] == "image/jpeg" and jpeg.content.startswith(b"\xff\xd8")


def test_refused_study_gets_403_and_no_audit(viewer_url: str, ct_study: CtSeries, rules: AccessRules) -> None:
    rules.refused.add(ct_study.study_uid)
    for path in (f"/dicomweb/studies/{ct_study.study_uid}/series", f"{instance_path(ct_study)}/frames/1"):
        r = requests.get(viewer_url + path, timeout=30)
        assert r.status_code == 403 and r.json() == {"error": "forbidden"}
    r = requests.get(f"{viewer_url}/dicomweb/studies", params={"StudyInstanceUID": ct_study.study_uid}, timeout=30)
    assert r.status_code == 403
    assert rules.audit_log == []


def test_expired_share_token_gets_410(viewer_url: str, ct_study: CtSeries, rules: AccessRules) -> None:
    rules.expired_tokens.add("expired-1")
    r = requests.get(
        f"{viewer_url}/dicomweb/studies/{ct_study.study_uid}/series", headers={"X-Share-Token": "expired-1"}, timeout=30
    )
    assert r.status_code == 410 and r.json() == {"error": "expired"}


@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies",  # no StudyInstanceUID: would list every patient
        "/dicomweb/studies?StudyInstanceUID=1.2.3&StudyInstanceUID=1.2.4",
        "/dicomweb/studies?StudyInstanceUID=1.2.*",
        "/dicomweb/studies/1.2.abc/series",
        "/dicomweb/studies/1.2.3/series/..%2F..%2Fpatients",
    ],
)
def test_requests_outside_one_study_are_refused(viewer_url: str, rules: AccessRules, path: str) -> None:
    r = requests.get(viewer_url + path, timeout=30)
    assert r.status_code in (400, 404)
    assert rules.audit_log == []


def test_missing_study_is_404_without_upstream_details(viewer_url: str, rules: AccessRules) -> None:
    r = requests.get(f"{viewer_url}/dicomweb/studies/{generate_uid()}/series/{generate_uid()}/metadata", timeout=30)
    assert r.status_code == 404 and r.json() == {"error": "not_found"}


# -- against a local upstream the test controls ------------------------------------


class Upstream:
    """A stand-in HTTP server for Orthanc's DICOMweb root (records what it receives)."""

    def __init__(self) -> None:
        self.seen_headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self.app = Flask("upstream")
        self.app.add_url_rule("/dicom-web/studies/<uid>/series/<sid>/instances", view_func=self.instances)
        self.app.add_url_rule("/dicom-web/studies/<uid>/series/<sid>/instances/<iid>/frames/1", view_func=self.frame)
        self.app.add_url_rule("/dicom-web/studies/<uid>/series/<sid>/instances/<iid>/frames/2", view_func=self.slow)

    def instances(self, uid: str, sid: str) -> Response:
        """QIDO: the proxy asks which instances a series holds before relaying a frame."""
        item = {
            "0020000D": {"vr": "UI", "Value": [uid]},
            "0020000E": {"vr": "UI", "Value": [sid]},
            "00080018": {"vr": "UI", "Value": ["1.2.5"]},
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        }
        return Response(json.dumps([item]), mimetype="application/dicom+json")

    def frame(self, uid: str, sid: str, iid: str) -> Response:
        self.seen_headers.append(dict(request.headers))
        if request.headers.get("Range") == "bytes=0-9":
            return Response(b"0123456789", status=206, headers={"Content-Range": "bytes 0-9/100"})
        return Response(b"x" * 100)

    def slow(self, uid: str, sid: str, iid: str) -> Response:
        def body() -> Iterator[bytes]:
            yield b"first-chunk"
            # Only sent once the client has received the first chunk through
            # the proxy: a proxy that buffers whole responses never gets here.
            if not self.release.wait(20):
                return
            yield b"second-chunk"

        return Response(body(), mimetype="application/octet-stream")


@pytest.fixture
def upstream_proxy() -> Iterator[tuple[str, Upstream, AccessRules]]:
    upstream = Upstream()
    rules = AccessRules()
    with serve(upstream.app) as upstream_url:
        app = Flask("proxy")
        app.register_blueprint(dicomweb_blueprint(OrthancStore(upstream_url, "u", "p"), rules.authorize, rules.audit))
        with serve(app) as proxy_url:
            yield proxy_url, upstream, rules
    upstream.release.set()


def test_range_and_credentials_go_upstream(upstream_proxy: tuple[str, Upstream, AccessRules]) -> None:
    proxy_url, upstream, _ = upstream_proxy
    r = requests.get(
        f"{proxy_url}/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1",
        headers={"Range": "bytes=0-9", "Accept": FRAME_ACCEPT, "Cookie": "session=secret"},
        timeout=30,
    )
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 0-9/100" and r.content == b"0123456789"
    sent = upstream.seen_headers[-1]
    assert sent["Range"] == "bytes=0-9" and sent["Accept"] == FRAME_ACCEPT
    assert sent["Authorization"].startswith("Basic ")
    assert "Cookie" not in sent, "the browser's EMR session must not reach Orthanc"


def test_responses_are_streamed_not_buffered(upstream_proxy: tuple[str, Upstream, AccessRules]) -> None:
    proxy_url, upstream, _ = upstream_proxy
    with requests.get(
        f"{proxy_url}/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/2", stream=True, timeout=30
    ) as r:
        chunks = r.iter_content(chunk_size=None)
        assert next(chunks) == b"first-chunk"
        upstream.release.set()
        assert b"".join(chunks) == b"second-chunk"


def test_audit_failure_refuses_the_view() -> None:
    def broken_audit(study_uid: str, token: str | None) -> None:
        raise RuntimeError("audit database down")

    app = Flask("proxy-broken-audit")
    app.register_blueprint(dicomweb_blueprint(OrthancStore("http://127.0.0.1:9"), lambda *_: True, broken_audit))
    r = app.test_client().get("/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1")
    # No audit entry, no image: the law asks for every view to be logged.
    assert r.status_code == 503 and r.get_json() == {"error": "audit_unavailable"}


def test_login_required_is_401() -> None:
    def needs_login(study_uid: str, token: str | None) -> bool:
        raise AccessDenied("login")

    app = Flask("proxy-login")
    app.register_blueprint(dicomweb_blueprint(OrthancStore("http://127.0.0.1:9"), needs_login, lambda *_: None))
    r = app.test_client().get("/dicomweb/studies/1.2.3/series")
    assert r.status_code == 401 and r.get_json() == {"error": "login"}


def test_unreachable_orthanc_is_502() -> None:
    app = Flask("proxy-down")
    app.register_blueprint(dicomweb_blueprint(OrthancStore("http://127.0.0.1:9"), lambda *_: True, lambda *_: None))
    r = app.test_client().get("/dicomweb/studies/1.2.3/series")
    assert r.status_code == 502 and r.get_json() == {"error": "upstream_unavailable"}


def test_unknown_denial_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        AccessDenied("nope")
