"""Withdrawing a trust anchor in a real browser (Debian chromium): from the trust-anchor list on the network
sites page to the confirmation page (what, whose, the effect, a reason and a tick), then back to the list,
which shows the CA as withdrawn with when, by whom and why. Screenshots: test-artifacts/emr/."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from emr.i18n import t
from emr.signing.pki import fingerprint, list_trust_anchors, list_withdrawn_anchors
from emr.signing.trust import trust_anchors_dir

from .browser_support import ARTIFACTS, OVERFLOW, WIDE, logged_in_page
from .conftest import World
from .test_trust_anchor_withdraw import _site_with_ca


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [820, 390])
def test_an_admin_withdraws_a_ca_from_the_trust_anchor_list(
    browser: Any, base_url: str, session: Session, world: World, settings: Any, pki: Any, width: int,
) -> None:
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    _site_with_ca(session, settings, pki)
    session.rollback()
    with logged_in_page(browser, base_url, "admin1", width, 1000) as (page, errors):
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
