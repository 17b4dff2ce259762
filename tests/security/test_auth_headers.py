"""Browser hardening on every EMR page (issue 10, item 13), against a real `filmless emr serve`.

A CSP on every page (the viewer keeps its own), no caching of anything with
patient data (the share landing page included), and over an https public
URL: Secure cookies and HSTS.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from emr.web.security_headers import CONTENT_SECURITY_POLICY
from tests.security.auth_support import REPO, Record, RunningEmr, client, csrf, make_record, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-headers")) as running:
        make_users(running, ("quantri", "admin"), ("bacsi", "physician"), ("bschan", "radiologist"))
        yield running


@pytest.fixture(scope="module")
def record(emr: RunningEmr) -> Record:
    return make_record(emr, "bacsi", "bschan", signed=True)


def _hardened(r: requests.Response) -> None:
    assert r.headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY, (r.url, r.headers)
    assert r.headers.get("Cache-Control") == "no-store", (r.url, r.headers)
    assert "Strict-Transport-Security" not in r.headers  # plain http public URL: no HSTS promise


def test_every_page_has_a_csp_and_patient_pages_are_not_stored(emr: RunningEmr, record: Record) -> None:
    anonymous = client()
    _hardened(anonymous.get(emr.url("/login"), timeout=30))
    doctor, _ = emr.login("bacsi")
    for path in ("/patients/", f"/patients/{record.patient_id}", f"/documents/{record.report_id}",
                 f"/patients/{record.patient_id}/documents/new", f"/orders/new/{record.patient_id}"):
        r = doctor.get(emr.url(path), timeout=30)
        assert r.status_code == 200, path
        _hardened(r)
    reader, _ = emr.login("bschan")
    r = reader.get(emr.url(f"/reading/studies/{record.study_id}"), timeout=30)
    assert r.status_code == 200 and "Trần Văn Đức" in r.text
    _hardened(r)
    admin, _ = emr.login("quantri")
    for path in ("/admin/users/", "/admin/audit"):
        r = admin.get(emr.url(path), timeout=30)
        assert r.status_code == 200, path
        _hardened(r)
    _hardened(requests.get(emr.url("/documents/999999"), timeout=30))  # error and redirect pages too


def test_share_landing_page_is_not_stored(emr: RunningEmr, record: Record) -> None:
    from sqlalchemy import select

    from emr import Actor
    from emr.models import User
    from emr.sharing import service as sharing

    factory = emr.session_factory()
    with factory() as session:
        reader = session.scalar(select(User).where(User.username == "bschan"))
        assert reader is not None
        _link, code, pin = sharing.create_share_link(session, Actor(reader.id, "bschan", "radiologist", None),
                                                     record.study_id)
    factory.kw["bind"].dispose()
    visitor = client("127.0.0.20")
    page = visitor.get(emr.url(f"/s/{code}"), timeout=30)
    _hardened(page)
    r = visitor.post(emr.url(f"/s/{code}"), data={"pin": pin, "csrf_token": csrf(page.text)}, timeout=30)
    assert r.status_code == 200 and "Trần Văn Đức" in r.text  # the patient's own study page
    _hardened(r)


def test_viewer_keeps_its_own_policy(emr: RunningEmr) -> None:
    from viewer import dist_path

    if not (dist_path() / "index.html").is_file():
        pytest.fail("the viewer is not built: run scripts/bootstrap.sh")
    r = requests.get(emr.url("/viewer/"), timeout=30)
    assert r.status_code == 200
    assert "'wasm-unsafe-eval'" in r.headers["Content-Security-Policy"]  # the viewer's, not the pages' policy


def test_templates_need_no_inline_script_or_style() -> None:
    """The page policy allows no inline code: every template must keep scripts and styles in files."""
    problems = []
    for path in sorted((REPO / "emr" / "templates").rglob("*.html")):
        text = path.read_text("utf-8")
        for m in re.finditer(r"<script\b([^>]*)>", text):
            attrs = m.group(1)
            if "src=" not in attrs and 'type="application/json"' not in attrs:
                problems.append(f"{path.name}: inline <script{attrs}>")
        if re.search(r"<style\b", text):
            problems.append(f"{path.name}: <style> block")
        if re.search(r"\sstyle=", text):
            problems.append(f"{path.name}: style= attribute")
        if re.search(r"\son[a-z]+=", text):
            problems.append(f"{path.name}: inline event handler")
        if "javascript:" in text:
            problems.append(f"{path.name}: javascript: URL")
    assert not problems, problems


def test_https_public_url_gives_secure_cookies_and_hsts(tmp_path: Path) -> None:
    """Behind the TLS proxy (trusted, X-Forwarded-Proto: https), as docker-compose.yml runs it."""
    env = {"FILMLESS_PUBLIC_URL": "https://emr.benhvien.example", "FILMLESS_EMR_TRUSTED_PROXY": "127.0.0.1"}
    with running_emr(tmp_path, env) as emr:
        make_users(emr, ("bacsi", "physician"))
        host = emr.base.split("://", 1)[1]
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.50", "Referer": f"https://{host}/login"}
        page = requests.get(emr.url("/login"), headers=proxied, timeout=30)
        assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        first = page.headers["Set-Cookie"]
        assert "Secure" in first
        cookie = first.split(";", 1)[0]  # a browser sends a Secure cookie back over https only
        form = {"username": "bacsi", "password": "correct horse battery", "csrf_token": csrf(page.text)}
        r = requests.post(emr.url("/login"), headers={**proxied, "Cookie": cookie}, data=form,
                          allow_redirects=False, timeout=60)
        assert r.status_code == 302, r.text[-500:]
        cookie = r.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert r.headers["Location"].startswith(("/", "https://"))  # never sent back to http
