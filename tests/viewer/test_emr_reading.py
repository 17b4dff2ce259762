"""The real EMR app (SQLite, real Orthanc) with the viewer and proxy mounted, in Debian chromium.

A radiologist logs in, opens the patient's chart and the CT study from it:
the canvas must show the first slice (pixel comparison with a numpy
rendering). A user without image rights gets 403 from the proxy. The report
panel saves a draft; once signed, a share slip (PDF with QR, link, PIN)
opens the study without login, with the PIN, until revoked or expired; the
ZIP download carries a DICOMDIR pydicom reads.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlalchemy import select

from emr import EmrSettings, create_app, upgrade_database
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.documents import service as documents
from emr.imaging import linking, orders
from emr.models import AuditEntry, ShareLink, Study, utcnow
from emr.patients import encounters
from emr.patients import service as patients
from filmless.wiring import viewer_extension
from storage import OrthancStore
from tests import helpers
from tests.helpers import csrf_from, skip_existing_changes
from tests.viewer.browser import wait_until
from tests.viewer.conftest import ARTIFACTS
from tests.viewer.phantom import CtSeries, make_ct_series
from tests.viewer.pixels import canvas_grey, compare, reference_view
from tests.viewer.server import serve

PASSWORD = "correct horse battery staple"
CATALOGUE = json.loads((Path(__file__).resolve().parents[2] / "emr" / "i18n" / "vi.json").read_text("utf-8"))
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")


@dataclass
class Emr:
    base: str
    app: Any
    sessions: Any
    patient_id: int
    order_id: int
    study_id: int
    series: CtSeries




@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore, viewer_dist: Path) -> Iterator[Emr]:
    tmp = tmp_path_factory.mktemp("emr-reading")
    settings = EmrSettings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'emr.sqlite3'}", secret_key_file=tmp / "secret_key"
    )
    upgrade_database(settings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        for username, role, name in (
            ("radiologist1", "radiologist", "Trần Văn Đọc"),
            ("physician1", "physician", "Lê Thị Chỉ Định"),
            ("clerk1", "records_clerk", "Phạm Văn Lưu"),
            ("nurse1", "nurse", "Võ Thị Điều Dưỡng"),
            ("radiologist2", "radiologist", "Đỗ Văn Đo"),
            ("radiologist3", "radiologist", "Ngô Thị Lưu"),
        ):
            create_user(s, SETUP, username, PASSWORD, role, name, practising_cert_no=f"{username}/HCM-CCHN")
        encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
        s.commit()
        doctor = Actor(2, "physician1", "physician", "127.0.0.1")
        p = patients.create_patient(
            s, doctor, {"full_name": "Nguyễn Thị Hồng Nhung", "birth_date": "1980-01-01", "sex": "F"}
        )
        enc = encounters.create_encounter(
            s,
            doctor,
            {"patient_id": p.id, "kind": "outpatient", "department_code": "K19", "attending_username": "physician1"},
        )
        order = orders.create_order(
            s,
            doctor,
            {
                "patient_id": p.id,
                "encounter_id": enc.id,
                "modality": "CT",
                "procedure_name": "CT ngực",
                "urgency": "urgent",
            },
        )
        skip_existing_changes(s, orthanc)
        series = make_ct_series(count=12, study_uid=order.study_instance_uid)
        for blob in series.encoded():
            orthanc.upload(blob)
        result = linking.link_new_studies(s, orthanc)
        assert result.linked == 1, result
        study = s.scalars(select(Study).where(Study.study_instance_uid == order.study_instance_uid)).one()
        ids = (p.id, order.id, study.id)
    app = create_app(
        settings, store=orthanc, test_config={"EMR_ENGINE": engine},
        extensions=[viewer_extension(orthanc)],
    )
    with serve(app) as base:
        # The slip prints the public address: here, where the test server listens.
        app.extensions["emr.settings"] = replace(settings, public_url=base)
        yield Emr(base, app, sessions, *ids, series)
    engine.dispose()


def browser_login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r".*/(?!login).*"))


def http_login(base: str, username: str) -> requests.Session:
    return helpers.http_login(base, username, PASSWORD)


def shows_slice(page: Any, series: CtSeries, index: int) -> bool:
    pixels, rect = canvas_grey(page)
    state = page.evaluate("() => ({voi: window.filmlessViewer.voi(), r: window.filmlessViewer.renderer})")
    voi = state["voi"]
    ref, inside = reference_view(
        series.datasets[index], voi["center"], voi["width"], rect, pixels.shape, window_first=state["r"] == "cpu"
    )
    return inside.mean() > 0.3 and compare(pixels, ref, inside).matches()


def test_login_open_patient_open_ct_from_chart(page: Any, emr: Emr) -> None:
    browser_login(page, emr.base, "radiologist1")
    page.goto(f"{emr.base}/patients/{emr.patient_id}")
    link = page.locator("a.study-link").first
    assert link.get_attribute("href") == f"/viewer/?study={emr.series.study_uid}"
    link.click()
    state = wait_until(page, lambda s: s["ready"] or s["error"], what="first image or error")
    assert state["ready"] and state["error"] is None, state
    assert state["count"] == 12 and state["index"] == 0
    wait_until(page, lambda s: shows_slice(page, emr.series, 0), what="slice 1 on the canvas")
    assert not shows_slice_other(page, emr.series)
    # One audit row for the study opened (not one per frame), naming the patient.
    with emr.sessions() as s:
        views = s.scalars(select(AuditEntry).where(AuditEntry.action == "study.view")).all()
    assert [(v.username, v.patient_id, v.object_id) for v in views] == [
        ("radiologist1", emr.patient_id, str(emr.study_id))
    ]
    assert page.page_errors == []


def shows_slice_other(page: Any, series: CtSeries) -> bool:
    """The comparison can tell slices apart: slice 6 is not what is shown."""
    return shows_slice(page, series, 6)


def test_reading_worklist_lists_the_study_unread_and_opens_the_reading_page(page: Any, emr: Emr) -> None:
    browser_login(page, emr.base, "radiologist1")
    page.goto(f"{emr.base}/reading/?modality=CT&urgency=urgent")
    row = page.locator(f"tr[data-study-uid='{emr.series.study_uid}']")
    assert row.get_attribute("data-status") == "unread"
    assert "Chưa đọc" in row.inner_text()
    page.goto(f"{emr.base}/reading/?modality=MR")
    assert page.locator(f"tr[data-study-uid='{emr.series.study_uid}']").count() == 0
    page.goto(f"{emr.base}/reading/?modality=CT")
    page.locator(f"tr[data-study-uid='{emr.series.study_uid}'] a.read-link").click()
    frame = page.frame_locator("iframe.reading-viewer")
    frame.locator(".cell.active .viewport canvas").wait_for(timeout=20000)
    # The CT template fills the report; save it as a draft.
    findings = page.locator("textarea[name=c_findings]")
    assert "Nhu mô" in findings.input_value()
    findings.fill("Nốt mờ 8 mm thuỳ dưới phổi phải, tỷ trọng 35 HU.")
    page.fill("textarea[name=c_conclusion]", "Nốt phổi phải, đề nghị theo dõi.")
    page.click("#save-draft")
    page.wait_for_url(re.compile(r".*saved=1"))
    assert page.locator("#report-status").inner_text() == "Bản nháp"
    page.goto(f"{emr.base}/reading/?modality=CT")
    assert page.locator(f"tr[data-study-uid='{emr.series.study_uid}']").get_attribute("data-status") == "draft"


def test_proxy_refuses_users_without_image_rights(emr: Emr, ct_study: CtSeries) -> None:
    url = f"{emr.base}/dicomweb/studies/{emr.series.study_uid}/series"
    assert requests.get(url, timeout=10).status_code == 401
    nurse = http_login(emr.base, "nurse1")
    assert nurse.get(url, timeout=10).status_code == 403
    clerk = http_login(emr.base, "clerk1")
    assert clerk.get(url, timeout=10).status_code == 403
    radiologist = http_login(emr.base, "radiologist1")
    r = radiologist.get(url, timeout=10)
    assert r.status_code == 200 and len(r.json()) == 1
    # A study in Orthanc that the EMR has not linked to a patient: no one may open it.
    assert radiologist.get(f"{emr.base}/dicomweb/studies/{ct_study.study_uid}/series", timeout=10).status_code == 403
    with emr.sessions() as s:
        denied = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "image.view", AuditEntry.outcome == "denied")
        ).all()
    assert {d.username for d in denied} >= {"nurse1", "clerk1"}


def _sign_report(emr: Emr) -> None:
    """Signing is issue 5's workflow; its state change is documents.mark_signed."""
    from emr.reading.service import latest_report

    with emr.sessions() as s:
        doc = latest_report(s, emr.order_id)
        if doc is None:
            enc_id = s.get(__import__("emr.models", fromlist=["ImagingOrder"]).ImagingOrder, emr.order_id).encounter_id
            doc = documents.create_document(
                s,
                Actor(1, "radiologist1", "radiologist", "127.0.0.1"),
                {
                    "encounter_id": enc_id,
                    "form_type": "radiology_report",
                    "order_id": emr.order_id,
                    "content": {"findings": "Nốt mờ 8 mm thuỳ dưới phổi phải.", "conclusion": "Nốt phổi phải."},
                },
            )
        if doc.status != "signed":
            documents.mark_signed(s, Actor(1, "radiologist1", "radiologist", "127.0.0.1"), doc.id, doc.current_version)


def _print_slip(emr: Emr, http: requests.Session, days: int = 30) -> tuple[bytes, str, str]:
    token = csrf_from(http, f"{emr.base}/reading/studies/{emr.study_id}/share")
    r = http.post(
        f"{emr.base}/reading/studies/{emr.study_id}/share", data={"csrf_token": token, "days": str(days)}, timeout=20
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/pdf", r.text[:500]
    text = subprocess.run(["pdftotext", "-", "-"], input=r.content, capture_output=True, check=True).stdout.decode()
    url = re.search(re.escape(emr.base) + r"/s/[a-z0-9]+", text).group(0)  # type: ignore[union-attr]
    pin = re.search(r"Mã PIN: (\d{6})", text).group(1)  # type: ignore[union-attr]
    return r.content, url, pin


def _unlock(url: str, pin: str) -> requests.Session:
    http = requests.Session()
    token = csrf_from(http, url)
    r = http.post(url, data={"csrf_token": token, "pin": pin}, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.status_code
    return http


def test_share_slip_link_pin_viewer_zip_revoke_expire(browser: Any, emr: Emr, tmp_path: Path) -> None:
    # The reader prints the slip (it hands out images and the report: issue 10); the records
    # clerk at the desk may still list and revoke slips.
    clerk = http_login(emr.base, "clerk1")
    reader = http_login(emr.base, "radiologist1")
    # No slip before the report is signed.
    with emr.sessions() as s:
        from emr.reading.service import latest_report

        doc = latest_report(s, emr.order_id)
        unsigned = doc is None or doc.status != "signed"
    if unsigned:
        token = csrf_from(reader, f"{emr.base}/reading/studies/{emr.study_id}/share")
        r = reader.post(f"{emr.base}/reading/studies/{emr.study_id}/share", data={"csrf_token": token}, timeout=10)
        assert r.status_code == 409 and "chưa được ký" in r.text
    _sign_report(emr)
    pdf, url, pin = _print_slip(emr, reader)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "share-slip.pdf").write_bytes(pdf)
    images = subprocess.run(["pdfimages", "-list", "-"], input=pdf, capture_output=True).stdout.decode()
    if "image" not in images:  # pdfimages cannot read stdin on every version: use a file
        (tmp_path / "slip.pdf").write_bytes(pdf)
        images = subprocess.run(["pdfimages", "-list", str(tmp_path / "slip.pdf")], capture_output=True).stdout.decode()
    assert re.search(r"^\s*1\s+0\s+image", images, re.M), images  # the QR code

    # The patient's phone: no login, the PIN first.
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
    phone = context.new_page()
    phone.page_errors = []
    phone.on("pageerror", lambda e: phone.page_errors.append(str(e)))
    try:
        phone.goto(url)
        phone.fill("input[name=pin]", "000000" if pin != "000000" else "111111")
        phone.click("#pin-submit")
        assert "Mã PIN không đúng" in phone.locator("[role=alert]").inner_text()
        phone.fill("input[name=pin]", pin)
        phone.click("#pin-submit")
        assert phone.locator("#report-conclusion").inner_text().startswith("Nốt phổi phải")
        phone.screenshot(path=str(ARTIFACTS / "share-phone-report.png"))
        phone.click("#open-viewer")
        state = wait_until(phone, lambda s: s["ready"] or s["error"], what="shared study on the phone")
        assert state["ready"] and state["error"] is None, state
        wait_until(phone, lambda s: shows_slice(phone, emr.series, 0), what="slice 1 on the phone")
        phone.screenshot(path=str(ARTIFACTS / "share-phone-viewer.png"))
        viewer_url = phone.url
    finally:
        context.close()
    token = re.search(r"token=([^&]+)", viewer_url).group(1)  # type: ignore[union-attr]
    series_url = f"{emr.base}/dicomweb/studies/{emr.series.study_uid}/series"
    assert requests.get(series_url, headers={"X-Share-Token": token}, timeout=10).status_code == 200
    # The token opens exactly that study.
    other = f"{emr.base}/dicomweb/studies/1.2.3.4/series"
    assert requests.get(other, headers={"X-Share-Token": token}, timeout=10).status_code == 403

    # ZIP with DICOMDIR, read back with pydicom.
    visitor = _unlock(url, pin)
    r = visitor.get(f"{url}/study.zip", timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(tmp_path / "cd")
    fs = FileSet(dcmread(tmp_path / "cd" / "DICOMDIR"))
    assert sorted(i.SOPInstanceUID for i in fs) == sorted(emr.series.sop_uids)
    first = next(i for i in fs if i.SOPInstanceUID == emr.series.sop_uids[0]).load()
    assert first.pixel_array.shape == (512, 512)
    assert requests.get(f"{url}/study.zip", timeout=10, allow_redirects=False).status_code == 302  # PIN first

    # Revoked: the landing page and the viewer token stop working at once.
    link_id = _link_id(emr, url)
    token_form = csrf_from(clerk, f"{emr.base}/reading/studies/{emr.study_id}/share")
    r = clerk.post(f"{emr.base}/reading/shares/{link_id}/revoke", data={"csrf_token": token_form}, timeout=10)
    assert r.status_code == 200
    assert requests.get(url, timeout=10).status_code == 410
    assert requests.get(series_url, headers={"X-Share-Token": token}, timeout=10).status_code == 403
    assert visitor.get(f"{url}/study.zip", timeout=10).status_code == 410

    # Expired: 410 on the page, "expired" from the proxy.
    _, url2, pin2 = _print_slip(emr, reader, days=1)
    visitor2 = _unlock(url2, pin2)
    page2 = visitor2.get(url2, timeout=10).text
    viewer2 = re.search(r'id="open-viewer" href="([^"]+)"', page2).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    token2 = re.search(r"token=([^&]+)", viewer2).group(1)  # type: ignore[union-attr]
    with emr.sessions() as s:
        link = s.get(ShareLink, _link_id(emr, url2))
        link.expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert requests.get(url2, timeout=10).status_code == 410
    r = requests.get(series_url, headers={"X-Share-Token": token2}, timeout=10)
    assert (r.status_code, r.json()["error"]) == (410, "expired")

    # Every access is audited.
    with emr.sessions() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.username.like("share:%")))]
    assert {"share.pin", "share.open", "share.view", "share.download", "study.view"} <= set(actions)


def test_pin_guessing_locks_the_link(emr: Emr) -> None:
    _sign_report(emr)
    reader = http_login(emr.base, "radiologist1")
    _, url, pin = _print_slip(emr, reader)
    guess = requests.Session()
    statuses = []
    for attempt in range(6):
        token = csrf_from(guess, url)
        wrong = f"{(int(pin) + 1 + attempt) % 10**6:06d}"
        statuses.append(guess.post(url, data={"csrf_token": token, "pin": wrong}, timeout=10).status_code)
    assert statuses == [403, 403, 403, 403, 403, 429]
    token = csrf_from(guess, url)
    assert guess.post(url, data={"csrf_token": token, "pin": pin}, timeout=10).status_code == 429  # even the right one


def _link_id(emr: Emr, url: str) -> int:
    from emr.sharing.service import _code_hash

    code = url.rsplit("/", 1)[1]
    with emr.sessions() as s:
        return s.scalars(select(ShareLink.id).where(ShareLink.code_sha256 == _code_hash(code))).one()


def _sync(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.filmlessViewer.measurementSync")


def _draw_ellipse(page: Any, i: float, j: float) -> None:
    """Draw a small elliptical ROI at pixel (i, j) of the shown 512×512 slice; wait until it is saved."""
    page.locator("[data-key=tool-ellipse]").click()
    rect = page.evaluate("filmlessViewer.imageRect()")
    box = page.locator(".cell.active .viewport canvas").bounding_box()
    (x0, y0), (x1, y1) = rect["first"], rect["last"]

    def at(i: float, j: float) -> tuple[float, float]:
        return box["x"] + x0 + (x1 - x0) * i / 511, box["y"] + y0 + (y1 - y0) * j / 511

    saved = _sync(page)["saved"]
    page.mouse.move(*at(i, j))
    page.mouse.down()
    page.mouse.move(*at(i + 10, j + 10), steps=6)
    page.mouse.up()
    wait_until(page, lambda s: _sync(page)["saved"] > saved and not _sync(page)["busy"], what="measurements saved")
    assert _sync(page)["status"] == 200


def _saved_on_server(page: Any, emr: Emr) -> list[dict[str, Any]]:
    return page.evaluate(f"() => fetch('/reading/measurements/{emr.series.study_uid}').then(r => r.json())")[
        "measurements"
    ]


def test_measurements_are_saved_per_user_and_study(page: Any, emr: Emr) -> None:
    browser_login(page, emr.base, "radiologist1")
    page.goto(f"{emr.base}/viewer/?study={emr.series.study_uid}")
    wait_until(page, lambda s: s["ready"], what="first image")
    wait_until(page, lambda s: _sync(page)["enabled"], what="measurement store")
    _draw_ellipse(page, 256, 306)
    saved = {"measurements": _saved_on_server(page, emr)}
    assert len(saved["measurements"]) == 1
    assert saved["measurements"][0]["sop"] == emr.series.sop_uids[0]
    assert saved["measurements"][0]["metadata"]["toolName"] == "EllipticalROI"
    # Back after a reload, with its HU statistics recomputed.
    page.reload()
    wait_until(page, lambda s: s["ready"], what="first image after reload")
    state: list[Any] = []

    def restored(_: Any) -> bool:
        state[:] = page.evaluate("filmlessViewer.measurements()")
        return len(state) == 1 and bool(state[0]["stats"])

    wait_until(page, restored, what="measurement restored")
    stats = next(iter(state[0]["stats"].values()))
    assert abs(stats["mean"] - 40) < 3, stats
    # Per user: another reader starts with none; share visitors cannot use the API.
    other = http_login(emr.base, "physician1")
    assert other.get(f"{emr.base}/reading/measurements/{emr.series.study_uid}", timeout=10).json()["measurements"] == []
    r = other.put(f"{emr.base}/reading/measurements/{emr.series.study_uid}", json={"measurements": "x"}, timeout=10)
    assert r.status_code == 422
    assert (
        requests.get(
            f"{emr.base}/reading/measurements/{emr.series.study_uid}", timeout=10, allow_redirects=False
        ).status_code
        == 302
    )


def test_clearing_measurements_asks_first_and_cancelling_keeps_them(page: Any, emr: Emr) -> None:
    """"Xoá số đo" deletes the study's saved measurements on the server: only once the reader confirms."""
    browser_login(page, emr.base, "radiologist2")  # measurements of their own: radiologist1's are another test's
    page.goto(f"{emr.base}/viewer/?study={emr.series.study_uid}")
    wait_until(page, lambda s: s["ready"], what="first image")
    wait_until(page, lambda s: _sync(page)["enabled"], what="measurement store")
    _draw_ellipse(page, 200, 200)
    _draw_ellipse(page, 300, 300)
    assert len(_saved_on_server(page, emr)) == 2
    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def handle(dialog: Any) -> None:
            asked.append(f"{dialog.type}: {dialog.message}")
            dialog.accept() if accept else dialog.dismiss()

        return handle

    page.once("dialog", answer(False))
    page.locator("[data-key=clear]").click()
    expected = CATALOGUE["viewer.tool.clear_confirm"].replace("{count}", "2")
    assert asked == [f"confirm: {expected}"]
    page.wait_for_timeout(1500)  # longer than the viewer waits before saving
    assert len(page.evaluate("filmlessViewer.measurements()")) == 2
    assert len(_saved_on_server(page, emr)) == 2 and not _sync(page)["busy"]

    page.once("dialog", answer(True))
    page.locator("[data-key=clear]").click()
    assert len(asked) == 2
    wait_until(page, lambda s: _sync(page)["saved"] == 0 and not _sync(page)["busy"], what="clearing saved")
    assert _sync(page)["status"] == 200
    assert page.evaluate("filmlessViewer.measurements()") == []
    assert _saved_on_server(page, emr) == []
    assert page.page_errors == []


def test_a_save_keeps_the_measurements_of_series_not_on_screen(page: Any, emr: Emr) -> None:
    """The save replaces the study's list: a measurement saved on another series (not opened this time)
    must survive the next save of the series on screen; only an explicit clear removes it."""
    browser_login(page, emr.base, "radiologist3")
    elsewhere = {"uid": "other-series-1", "sop": "1.2.826.0.1.3680043.8.498.999", "frame": 1,
                 "metadata": {"toolName": "Length"}, "handles": {"points": [[0, 0, 0], [1, 1, 0]]}, "label": ""}
    put = page.evaluate(
        """([url, m]) => fetch(url, {method: 'PUT', headers: {'Content-Type': 'application/json',
             'X-CSRFToken': document.querySelector('meta[name=csrf-token]')?.content || ''},
             body: JSON.stringify({measurements: [m]})}).then(r => r.status)""",
        [f"/reading/measurements/{emr.series.study_uid}", elsewhere],
    )
    assert put == 200, "seeding the other series' measurement"
    page.goto(f"{emr.base}/viewer/?study={emr.series.study_uid}")
    wait_until(page, lambda s: s["ready"], what="first image")
    wait_until(page, lambda s: _sync(page)["enabled"], what="measurement store")
    _draw_ellipse(page, 220, 220)
    saved = _saved_on_server(page, emr)
    assert {m["uid"] for m in saved} >= {"other-series-1"} and len(saved) == 2, saved
