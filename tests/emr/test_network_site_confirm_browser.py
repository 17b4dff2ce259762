"""The site form's confirmation step in a real browser (Debian chromium), as the QA walkthrough did it: the
first submit lands on the "nothing saved yet" box with the fingerprint and its confirmation (not at the top of
the page ~1000 px above them), and the outbound token typed then is what gets saved. Screenshots:
test-artifacts/emr/network-site-confirm-*.png."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.models import NetworkSite
from emr.signing.pki import fingerprint

from .browser_support import ARTIFACTS, logged_in_page
from .conftest import World

OUTBOUND = "token-bv-b-cap-cho-ta-" + "q" * 24
IN_VIEW = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight; }"""
STARTS_IN_VIEW = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
  return r.top > -2 && r.top < window.innerHeight / 4; }"""



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [1280, 390])
def test_the_confirmation_is_in_view_and_the_token_is_saved(
    browser: Any, base_url: str, world: World, session: Session, pki: Any, width: int,
) -> None:
    sha = hashlib.sha256(pki.ca_certificate().public_bytes(serialization.Encoding.DER)).hexdigest()
    with logged_in_page(browser, base_url, "admin1", width, 800) as (page, errors):
        page.goto(f"{base_url}/network/sites")
        form = page.locator("form.site-form")
        form.locator("input[name=name]").fill("BV Đa khoa tỉnh Thử nghiệm")
        form.locator("input[name=ae_title]").fill("BVTEST")
        form.locator("input[name=host]").fill("10.0.0.5")
        form.locator("input[name=emr_url]").fill("https://emr.bvtest.vn")
        form.locator("input[name=outbound_token]").fill(OUTBOUND)
        form.locator("textarea[name=signing_ca_pem]").fill(pki.ca_cert_path.read_text())
        form.locator("button[type=submit]").click()
        page.wait_for_load_state()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # Where the browser lands: the box saying nothing is saved, with the fingerprint and its confirmation.
        page.screenshot(path=str(ARTIFACTS / f"network-site-confirm-{width}.png"))
        assert page.evaluate(STARTS_IN_VIEW, "#site-form-status")
        assert page.evaluate(IN_VIEW, "input[name=signing_ca_confirm]")
        assert fingerprint(sha) in page.locator("#signing-ca-offered").inner_text().replace("\u200b", "")
        assert OUTBOUND not in page.content()
        page.check("input[name=signing_ca_confirm]")
        page.locator("form.site-form button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator("#issued-token").is_visible()
        session.expire_all()
        site = session.scalar(select(NetworkSite).where(NetworkSite.ae_title == "BVTEST"))
        assert site is not None and site.outbound_token == OUTBOUND and site.signing_ca_sha256 == sha
        session.rollback()
        assert not errors, errors
