"""Fixtures for the viewer: the built bundle, a CT study in the session
Orthanc, a stand-in EMR app serving the viewer and the proxy, and Debian
chromium driven by Playwright."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import OrthancProcess, OrthancStore
from tests.viewer.phantom import CtSeries, make_ct_series
from tests.viewer.server import AccessRules, make_app, serve
from viewer import dist_path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "viewer"


@pytest.fixture(scope="session")
def viewer_dist() -> Path:
    """The built viewer; built here if the sources are newer (bootstrap normally does it)."""
    dist = dist_path()
    src = REPO / "viewer"
    sources = [*(src / "src").rglob("*"), src / "index.html", *src.glob("vite.config.*")]
    sources.append(REPO / "emr" / "i18n" / "vi.json")  # the viewer's words, bundled (viewer/src/i18n.js)
    newest_source = max(p.stat().st_mtime for p in sources)
    index = dist / "index.html"
    if not index.exists() or index.stat().st_mtime < newest_source:
        if not (src / "node_modules").is_dir():
            pytest.fail("viewer/node_modules is missing: run scripts/bootstrap.sh (npm ci in viewer/)")
        subprocess.run(["npm", "run", "build", "--silent"], cwd=src, check=True, capture_output=True, timeout=300)
    return dist_path(check=True)


@pytest.fixture(scope="session")
def ct_study(orthanc: OrthancStore) -> CtSeries:
    series = make_ct_series(count=20)
    for blob in series.encoded():
        orthanc.upload(blob)
    return series


@pytest.fixture(scope="session")
def access_rules() -> AccessRules:
    return AccessRules()


@pytest.fixture
def rules(access_rules: AccessRules) -> Iterator[AccessRules]:
    """The session app's access rules, emptied before and after each test."""
    for r in (access_rules.refused, access_rules.expired_tokens, access_rules.arriving, access_rules.audit_log):
        r.clear()
    yield access_rules
    for r in (access_rules.refused, access_rules.expired_tokens, access_rules.arriving, access_rules.audit_log):
        r.clear()


@pytest.fixture(scope="session")
def viewer_url(
    viewer_dist: Path, orthanc_process: OrthancProcess, orthanc: OrthancStore, access_rules: AccessRules
) -> Iterator[str]:
    creds = orthanc_process.credentials
    app = make_app(orthanc.url, (creds.username, creds.password), access_rules)
    with serve(app) as base:
        yield base


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; its screenshot is kept under test-artifacts/."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, device_scale_factor=1)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.page_errors = errors
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    finally:
        context.close()
