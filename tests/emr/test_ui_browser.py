"""The EMR in a real browser (Debian chromium via Playwright) at tablet and phone width.

A clinician's path: log in, find a patient with and without diacritics, open
the chart, order a CT through the form and see it listed; on every page
nothing may overflow horizontally. Screenshots go to test-artifacts/emr/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from emr.documents import service as documents
from emr.i18n import t
from emr.models.signing import DocumentSignature, SignedArtifact
from emr.patients import encounters
from emr.patients import service as patients

from .browser_support import OVERFLOW
from .conftest import PASSWORD, World, patient_data

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "emr"
VIEWPORTS = {"tablet": {"width": 820, "height": 1180}, "phone": {"width": 390, "height": 844}}



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
    inside the card instead of pushing the page wider than the screen (390 × 844). So does the document page
    once signed: its badge "Đã ký: <slot> <signer's name>" wraps inside the card."""
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code}
    )
    doc = documents.create_document(
        session, doctor, {"encounter_id": enc.id, "form_type": "progress_note", "content": {"note": "Hết sốt"}}
    )
    signed = documents.create_document(
        session, doctor, {"encounter_id": enc.id, "form_type": "progress_note", "content": {"note": "Đỡ ho"}}
    )
    _signed_by(session, signed, world.users["radiologist"], "Trần Thị Bích Ngọc Phương")
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
        page.goto(f"{base_url}/documents/{signed.id}")
        badge = page.locator(".signing-status .status.s-doc-signed")
        assert "Trần Thị Bích Ngọc Phương" in badge.inner_text()
        box = badge.bounding_box()
        assert box is not None and box["x"] + box["width"] <= VIEWPORTS["phone"]["width"], box
        _no_overflow(page, "signed document page")
        _shot(page, "phone-7-signed-document")
        assert not errors, errors
    finally:
        context.close()


def _signed_by(session: Session, doc: Any, signer: Any, name: str) -> None:
    """The document's version shown as signed by ``signer`` (renamed ``name``) in the radiologist's slot: the
    rows the document page reads (no real signature: the page's layout is what is tested here)."""
    signer.full_name = name
    version = doc.versions[-1]
    artifact = SignedArtifact(version_id=version.id, document_id=doc.id, verification_code=f"ui-{doc.id}",
                              pdf=b"%PDF-1.7", pdf_sha256="0" * 64, content_sha256="0" * 64)
    session.add(artifact)
    session.flush()
    session.add(DocumentSignature(artifact_id=artifact.id, version_id=version.id, order_index=0, field_name="sig1",
                                  signer_role="radiologist", signer_id=signer.id, method="pkcs12",
                                  cert_subject=f"CN={name}", cert_serial="01", pdf_length=8, pdf_sha256="0" * 64,
                                  cms=b"0"))


SHOTS = Path("/work/brief/shots")  # the walk-through's screenshots, beside the test artifacts
# The labels (td[data-label]::before, the first column of a phone's card) wider than that column: they run over
# the value beside them (grid-template-columns resolves to the tracks' widths in px).
LABELS_OVERFLOWING = """(selector) => [...document.querySelectorAll(selector)].filter((td) => {
  const column = parseFloat(getComputedStyle(td).gridTemplateColumns.split(' ')[0]);
  const label = parseFloat(getComputedStyle(td, '::before').width);
  return !(label <= column + 0.5);
}).map((td) => td.dataset.label)"""


def _login(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_load_state()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_technicians_day_and_break_glass_review_fit_a_phone(
    browser: Any, base_url: str, world: World, session: Session
) -> None:
    """At 390 × 844 the technician's "Ca chụp hôm nay" shows each cell with its label (the accession number
    under "Số phiếu (Accession)", not a header squeezed into a column), and a break-glass reason or review
    note typed as one long word wraps: it made the review page ~9000 px wide."""
    from emr.access import break_glass
    from emr.core.clock import local_day_bounds, local_today
    from emr.imaging import orders
    from emr.models import Study

    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(
        session,
        doctor,
        {"patient_id": p.id, "modality": "CT", "station_ae_title": "CT01",
         "procedure_name": "Chụp cắt lớp vi tính lồng ngực liều thấp không tiêm thuốc cản quang (tầm soát)"},
    )  # fmt: skip
    assert local_day_bounds(local_today())[0] <= order.scheduled_at  # on today's list (scheduled now)
    session.add(Study(orthanc_id=f"o-{order.id}", study_instance_uid=order.study_instance_uid, state="linked",
                      order_id=order.id, patient_id=p.id, modalities="CT"))  # fmt: skip
    order.status = "images_available"
    other = patients.create_patient(session, doctor, patient_data(full_name="Lý Thị Khẩn", cccd="079190000020",
                                                                  bhyt_number=None))  # fmt: skip
    long_word = "Cấpcứungoàigiờ" + "x" * 600  # one word, as pasted from a system that strips spaces
    grant = break_glass.open_break_glass(session, world.actor("technician"), other.id, long_word, hours=4)
    session.commit()
    session.close()

    SHOTS.mkdir(parents=True, exist_ok=True)
    phone = VIEWPORTS["phone"]
    context = browser.new_context(viewport=phone, device_scale_factor=1, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        _login(page, base_url, "technician1")
        page.goto(f"{base_url}/patients/")
        assert page.locator(f"tr[data-order-id='{order.id}']").count() == 1
        accession = page.locator(f"tr[data-order-id='{order.id}'] td[data-label='{t('orders.accession')}']")
        assert accession.inner_text().strip() == order.accession_number
        box = accession.bounding_box()
        assert box is not None and box["x"] + box["width"] <= phone["width"], box
        assert page.evaluate("() => document.documentElement.scrollWidth") <= phone["width"]
        overflowing = page.evaluate(LABELS_OVERFLOWING, f"tr[data-order-id='{order.id}'] td[data-label]")
        assert overflowing == [], overflowing  # each label stays in its column, off the value beside it
        page.screenshot(path=str(SHOTS / "phone-technician-day.png"), full_page=True)
        _shot(page, "phone-7-technician-day")

        _login(page, base_url, "admin1")
        page.goto(f"{base_url}/admin/break-glass")
        reason = page.locator(f"#bg-{grant.id} td.reason")
        assert reason.inner_text().startswith("Cấpcứungoàigiờ")
        page.fill(f"#bg-{grant.id} textarea[name=note]", "Đãkiểmtra" + "y" * 900)
        page.click(f"#bg-{grant.id} button[type=submit]")
        page.wait_for_load_state()
        assert page.locator(f"#bg-{grant.id} .review-note").count() == 1
        assert page.evaluate("() => document.documentElement.scrollWidth") <= phone["width"]
        page.screenshot(path=str(SHOTS / "phone-break-glass-review.png"), full_page=True)
        _shot(page, "phone-8-break-glass-review")
        assert not errors, errors
    finally:
        context.close()
