"""The site form in a real browser (Debian chromium): pasting another site's signing CA shows its subject
and SHA-256 fingerprint to read out by phone, and nothing is trusted until the admin ticks the
confirmation; then the trust-anchor list names the site. Screenshot: test-artifacts/emr/."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from emr.i18n import t
from emr.signing.pki import fingerprint, list_trust_anchors
from emr.signing.trust import trust_anchors_dir

from .browser_support import ARTIFACTS, OVERFLOW, WIDE, logged_in_page
from .conftest import World


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [820, 390])
def test_the_site_form_shows_the_fingerprint_before_trusting(
    browser: Any, base_url: str, world: World, settings: Any, pki: Any, width: int,
) -> None:
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    with logged_in_page(browser, base_url, "admin1", width, 1100) as (page, errors):
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
