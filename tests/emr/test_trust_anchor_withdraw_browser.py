"""Withdrawing a trust anchor in a real browser (Debian chromium): from the trust-anchor list on the network
sites page to the confirmation page (what, whose, the effect, a reason and a tick), then back to the list,
which shows the CA as withdrawn with when, by whom and why. Screenshots: test-artifacts/emr/."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from emr.i18n import t
from emr.signing.pki import fingerprint, list_trust_anchors, list_withdrawn_anchors
from emr.signing.trust import trust_anchors_dir

from . import test_network_signing_ca_browser as signing_ca_browser
from .conftest import PASSWORD, World
from .test_network_signing_ca_browser import OVERFLOW, WIDE
from .test_trust_anchor_withdraw import _site_with_ca

base_url = signing_ca_browser.base_url  # the app served on a free port (a fixture)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "emr"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [820, 390])
def test_an_admin_withdraws_a_ca_from_the_trust_anchor_list(
    browser: Any, base_url: str, session: Session, world: World, settings: Any, pki: Any, width: int,
) -> None:
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    _site_with_ca(session, settings, pki)
    session.rollback()
    context = browser.new_context(viewport={"width": width, "height": 1000}, device_scale_factor=1, locale="vi-VN")
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
        page.locator(f"#trust-anchors tr[data-sha256='{sha}'] a.danger").click()
        page.wait_for_load_state()
        card = page.locator("#withdraw-anchor")
        assert fingerprint(sha) in card.inner_text().replace("\n", "")
        assert t("network.anchors.owner", site="Bệnh viện tỉnh B") in card.inner_text()
        page.fill("textarea[name=reason]", "CA của BV B bị lộ khoá (công văn số 12/BVB)")
        scroll, inner = page.evaluate(OVERFLOW)
        assert scroll <= inner, f"{scroll}px wide in a {inner}px viewport: {page.evaluate(WIDE)}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        card.screenshot(path=str(ARTIFACTS / f"trust-anchor-withdraw-{width}.png"))
        page.click("#withdraw-anchor button.danger")  # not ticked: the browser asks for the tick first
        assert [a.sha256 for a in list_trust_anchors(trust_anchors_dir(settings))] == [sha]
        page.check("input[name=confirm]")
        page.click("#withdraw-anchor button.danger")
        page.wait_for_load_state()
        assert t("network.withdraw.done") in page.locator("#anchor-withdrawn").inner_text()
        withdrawn = page.locator(f"table.withdrawn-anchors tr[data-sha256='{sha}']")
        assert "CA của BV B bị lộ khoá" in withdrawn.inner_text()
        assert page.locator(f"table.anchors tr[data-sha256='{sha}']").count() == 0
        assert list_trust_anchors(trust_anchors_dir(settings)) == []
        assert [w.sha256 for w in list_withdrawn_anchors(trust_anchors_dir(settings))] == [sha]
        scroll, inner = page.evaluate(OVERFLOW)
        assert scroll <= inner, f"{scroll}px wide in a {inner}px viewport: {page.evaluate(WIDE)}"
        page.locator("#trust-anchors").screenshot(path=str(ARTIFACTS / f"trust-anchor-withdrawn-{width}.png"))
        assert not errors, errors
    finally:
        context.close()
