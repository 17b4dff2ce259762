"""The EMR in a real browser (Debian chromium via Playwright) at tablet and phone width.

A clinician's path: log in, find a patient with and without diacritics, open
the chart, order a CT through the form and see it listed; on every page
nothing may overflow horizontally. Screenshots go to test-artifacts/emr/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from emr.documents import service as documents
from emr.i18n import t
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import PASSWORD, World, patient_data

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "emr"
VIEWPORTS = {"tablet": {"width": 820, "height": 1180}, "phone": {"width": 390, "height": 844}}
OVERFLOW = "() => [document.scrollingElement.scrollWidth, window.innerWidth]"


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="emr-test-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def _no_overflow(page: Any, what: str) -> None:
    scroll, inner = page.evaluate(OVERFLOW)
    assert scroll <= inner, f"{what}: page is {scroll}px wide in a {inner}px viewport"


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_clinician_path_fits_the_screen(
    browser: Any, base_url: str, world: World, session: Session, viewport: str
) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    patients.create_patient(
        session, doctor, patient_data(full_name="Trần Văn Đức", cccd=None, bhyt_number=None, sex="M")
    )
    encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code}
    )
    session.commit()
    session.close()

    context = browser.new_context(viewport=VIEWPORTS[viewport], device_scale_factor=1, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base_url}/patients/")
        assert "/login" in page.url  # not logged in yet
        _no_overflow(page, "login")
        _shot(page, f"{viewport}-1-login")
        page.fill("input[name=username]", "physician1")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        page.wait_for_url("**/patients/**")

        for query in ("nguyen thi hong", "Nguyễn Thị Hồng"):
            page.fill("input[name=q]", query)
            page.click("form.row button[type=submit]")
            page.wait_for_load_state()
            assert page.locator("table.list a", has_text="Nguyễn Thị Hồng Nhung").count() == 1, query
            assert page.locator("table.list a", has_text="Trần Văn Đức").count() == 0
        _no_overflow(page, "search results")
        _shot(page, f"{viewport}-2-search")

        page.click("table.list a:has-text('Nguyễn Thị Hồng Nhung')")
        page.wait_for_url(f"**/patients/{p.id}")
        _no_overflow(page, "chart")
        page.click(f"a.button:has-text('{t('orders.new.title')}')")
        page.wait_for_url(f"**/orders/new/{p.id}")
        _no_overflow(page, "order form")
        page.select_option("select[name=modality]", "CT")
        page.fill("input[name=procedure_name]", "CT ngực không tiêm thuốc cản quang")
        page.fill("input[name=body_part]", "CHEST")
        page.select_option("select[name=urgency]", "urgent")
        page.fill("textarea[name=clinical_info]", "Ho, sốt 3 ngày, ran nổ đáy phổi phải")
        _shot(page, f"{viewport}-3-order-form")
        page.click(f"button:has-text('{t('orders.submit')}')")
        page.wait_for_url(f"**/patients/{p.id}")
        row = page.locator("table.orders tbody tr").first
        assert "CT ngực không tiêm thuốc cản quang" in row.inner_text()
        assert t("orders.status.scheduled") in row.inner_text()
        accession = row.get_attribute("data-accession")
        assert accession and accession.isdigit() and len(accession) == 12
        _no_overflow(page, "chart with order")
        _shot(page, f"{viewport}-4-chart")

        # The document form is long and has the widest fields: it must fit as well.
        page.goto(f"{base_url}/patients/{p.id}/documents/new?form_type=outpatient_record")
        page.click(f"button:has-text('{t('documents.save_draft')}')")  # empty: errors beside the fields
        assert page.locator("small.error").count() >= 3
        _no_overflow(page, "document form with errors")
        _shot(page, f"{viewport}-5-document-errors")
        assert not errors, errors
    finally:
        context.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_signing_page_fits_a_phone(browser: Any, base_url: str, world: World, session: Session) -> None:
    """The "Ký số" page a physician may open on a phone: the 64-character SHA-256 of the content wraps
    inside the card instead of pushing the page wider than the screen (390 × 844)."""
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code}
    )
    doc = documents.create_document(
        session, doctor, {"encounter_id": enc.id, "form_type": "progress_note", "content": {"note": "Hết sốt"}}
    )
    session.commit()
    session.close()

    context = browser.new_context(viewport=VIEWPORTS["phone"], device_scale_factor=1, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base_url}/login")
        page.fill("input[name=username]", "physician1")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        page.wait_for_url("**/patients/**")
        page.goto(f"{base_url}/signing/documents/{doc.id}/sign")
        digest = page.locator("code.hash")
        assert len(digest.inner_text()) == 64
        box = digest.bounding_box()
        assert box is not None and box["x"] + box["width"] <= VIEWPORTS["phone"]["width"], box
        _no_overflow(page, "signing page")
        _shot(page, "phone-6-signing")
        assert not errors, errors
    finally:
        context.close()
