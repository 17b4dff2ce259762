"""The site form in a real browser (Debian chromium): pasting another site's signing CA shows its subject
and SHA-256 fingerprint to read out by phone, and nothing is trusted until the admin ticks the
confirmation; then the trust-anchor list names the site. Screenshot: test-artifacts/emr/."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from werkzeug.serving import make_server

from emr.i18n import t
from emr.signing.pki import fingerprint, list_trust_anchors
from emr.signing.trust import trust_anchors_dir

from .conftest import PASSWORD, World

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "emr"
OVERFLOW = "() => [document.scrollingElement.scrollWidth, window.innerWidth]"
WIDE = """() => Array.from(document.querySelectorAll('*'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`).slice(0, 12)"""


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="emr-test-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [820, 390])
def test_the_site_form_shows_the_fingerprint_before_trusting(
    browser: Any, base_url: str, world: World, settings: Any, pki: Any, width: int,
) -> None:
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    context = browser.new_context(viewport={"width": width, "height": 1100}, device_scale_factor=1, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base_url}/login")
        page.fill("input[name=username]", "admin1")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        page.wait_for_load_state()
        page.goto(f"{base_url}/network/sites")
        form = page.locator("form.site-form")
        form.locator("input[name=name]").fill("Bệnh viện Đa khoa tỉnh B")
        form.locator("input[name=ae_title]").fill("SITEB")
        form.locator("input[name=host]").fill("10.0.0.2")
        form.locator("textarea[name=signing_ca_pem]").fill(pki.ca_cert_path.read_text())
        form.locator("button[type=submit]").click()
        page.wait_for_load_state()
        offered = page.locator("#signing-ca-offered")
        assert fingerprint(sha) in offered.inner_text()
        assert list_trust_anchors(trust_anchors_dir(settings)) == []  # shown, not trusted yet
        scroll, inner = page.evaluate(OVERFLOW)
        assert scroll <= inner, f"{scroll}px wide in a {inner}px viewport: {page.evaluate(WIDE)}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#signing-ca").screenshot(path=str(ARTIFACTS / f"network-signing-ca-{width}.png"))
        page.check("input[name=signing_ca_confirm]")
        page.locator("form.site-form button[type=submit]").click()
        page.wait_for_load_state()
        row = page.locator(f"#trust-anchors tr[data-sha256='{sha}']")
        assert t("network.anchors.owner", site="Bệnh viện Đa khoa tỉnh B") in row.inner_text()
        assert [a.sha256 for a in list_trust_anchors(trust_anchors_dir(settings))] == [sha]
        assert not errors, errors
    finally:
        context.close()
