"""The trailing-slash redirect (``/admin/ops/`` → ``/admin/ops``), tried against a real EMR.

Decision: a GET for an unknown path ending in "/" is answered with a 308 to the same path without
the slash only when that is a page of the EMR; the target is built from the matched route, never
copied from the request, so no crafted path (``//host``, backslashes, encoded slashes, control
characters) can make it point off the site. The redirect carries nothing of the page: the page
then applies its own login and rights. Forms (POST) are never redirected, and program-facing
prefixes (``/api``, ``/fhir``, ``/network/api``) keep answering 404.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from .auth_support import RunningEmr, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("slash-emr")) as running:
        make_users(running, ("admin1", "admin"), ("bs1", "physician"))
        yield running


def _raw(emr: RunningEmr, method: str, target: str, cookie: str = "") -> http.client.HTTPResponse:
    """The request line exactly as written (no client-side normalisation of the path)."""
    host = urlsplit(emr.base)
    conn = http.client.HTTPConnection(host.hostname or "127.0.0.1", host.port, timeout=20)
    conn.putrequest(method, target, skip_accept_encoding=True)
    if cookie:
        conn.putheader("Cookie", cookie)
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    r = conn.getresponse()
    r.read()
    conn.close()
    return r


ATTEMPTS = [
    "//evil.example/",
    "//evil.example/admin/ops/",
    "///evil.example/",
    "/%2F%2Fevil.example/",
    "/%5Cevil.example/",
    "/%5C%5Cevil.example/admin/ops/",
    "/\\evil.example/",
    "/%09/evil.example/",
    "/%0d%0aLocation:%20http://evil.example/",
    "/admin/ops//",
    "//admin/ops/",
    "/admin//ops/",
    "/admin/ops/%2F",
    "/admin/ops/?next=http://evil.example/",
]


def test_crafted_paths_never_redirect_off_site(emr: RunningEmr) -> None:
    admin, r = emr.login("admin1")
    assert r.status_code == 302
    cookie = "; ".join(f"{k}={v}" for k, v in admin.cookies.items())
    for target in ATTEMPTS:
        for who in ("", cookie):
            r = _raw(emr, "GET", target, who)
            assert r.status < 500, (target, r.status)
            location = r.getheader("Location") or ""
            assert "\r" not in location and "\n" not in location, (target, location)
            if 300 <= r.status < 400:
                split = urlsplit(location)
                # Werkzeug makes the Location absolute: it must stay on this host and be a plain path.
                assert split.netloc in ("", urlsplit(emr.base).netloc), (target, location)
                assert split.path.startswith("/") and not split.path.startswith(("//", "/\\")), (target, location)
                assert "evil.example" not in split.netloc + split.path, (target, location)
    # The one legitimate case keeps only its query string, after the path the route gave.
    r = _raw(emr, "GET", "/admin/ops/?next=http://evil.example/")
    assert r.status == 308 and urlsplit(r.getheader("Location") or "").path == "/admin/ops"


def test_redirect_then_the_page_applies_its_rights(emr: RunningEmr) -> None:
    anonymous = _raw(emr, "GET", "/admin/ops/")
    assert anonymous.status == 308 and urlsplit(anonymous.getheader("Location") or "").path == "/admin/ops"
    assert _raw(emr, "GET", "/admin/ops").status == 302  # to the login page
    doctor, r = emr.login("bs1")
    assert r.status_code == 302
    r = doctor.get(emr.url("/admin/ops/"), timeout=20)
    assert r.status_code == 403 and [h.status_code for h in r.history] == [308]
    admin, _ = emr.login("admin1")
    r = admin.get(emr.url("/admin/audit/"), timeout=20)
    assert r.status_code == 200 and r.url.endswith("/admin/audit")


def test_forms_and_program_interfaces_are_not_redirected(emr: RunningEmr) -> None:
    admin, _ = emr.login("admin1")
    cookie = "; ".join(f"{k}={v}" for k, v in admin.cookies.items())
    for method in ("POST", "PUT", "DELETE"):
        r = _raw(emr, method, "/admin/ops/", cookie)
        assert r.status in (400, 404, 405), (method, r.status)
    for target in ("/api/patients/", "/fhir/metadata/", "/network/api/v1/studies/"):
        r = _raw(emr, "GET", target)
        assert r.status in (401, 404) and not r.getheader("Location"), (target, r.status)
