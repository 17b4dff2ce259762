"""The viewer in Debian chromium against a real Orthanc through the proxy.

Pixels on the canvas are compared with a numpy rendering of the same DICOM
at the window the viewer reports, so these tests fail if the viewer shows
the wrong slice, the wrong window, or mangles the pixel data.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.viewer.browser import open_study, viewer_state, wait_until
from tests.viewer.conftest import ARTIFACTS
from tests.viewer.phantom import CtSeries, make_ct_series
from tests.viewer.pixels import canvas_grey, compare, reference_view
from tests.viewer.test_emr_reading import Emr, browser_login, emr  # noqa: F401  (the EMR fixture, for the reading page)

CATALOGUE = json.loads((Path(__file__).resolve().parents[2] / "emr" / "i18n" / "vi.json").read_text("utf-8"))


def shows_slice(page: Any, study: CtSeries, index: int) -> bool:
    pixels, rect = canvas_grey(page)
    state = viewer_state(page)
    voi = state["voi"]
    ref, inside = reference_view(
        study.datasets[index], voi["center"], voi["width"], rect, pixels.shape, window_first=state["renderer"] == "cpu"
    )
    return compare(pixels, ref, inside).matches()


def canvas_centre(page: Any) -> tuple[float, float]:
    box = page.locator(".cell.active .viewport canvas").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


@pytest.mark.parametrize("render", ["cpu", "gpu"])
def test_first_slice_matches_reference_rendering(
    page: Any, viewer_url: str, ct_study: CtSeries, rules: Any, render: str
) -> None:
    """Both rendering paths: WebGL (GPU PCs) and Cornerstone's CPU path (no usable GPU)."""
    state = open_study(page, viewer_url, ct_study.study_uid, render=render)
    assert state["ready"] and state["error"] is None
    assert state["renderer"] == render
    # The GPU interpolates HU then windows; the CPU path windows, then the
    # 2D canvas interpolates the 8-bit image.
    window_first = render == "cpu"
    assert state["count"] == 20 and state["index"] == 0
    # The header's VOI (40/400) is where the viewer starts (DICOM's -0.5/-1 offsets).
    assert state["voi"] == {"center": 39.5, "width": 399}
    pixels, rect = canvas_grey(page)
    ref, inside = reference_view(ct_study.datasets[0], 39.5, 399, rect, pixels.shape, window_first=window_first)
    assert inside.mean() > 0.4, "the image should fill most of the viewport"
    result = compare(pixels, ref, inside)
    assert result.matches(), result
    # The comparison can tell slices apart: the next slice does not match.
    wrong, _ = reference_view(ct_study.datasets[1], 39.5, 399, rect, pixels.shape, window_first=window_first)
    assert not compare(pixels, wrong, inside).matches()
    # Patient overlay and orientation markers are on screen, in Vietnamese.
    overlay = page.locator(".cell.active .ov-tl").inner_text()
    assert "Nguyễn Thị Hồng Nhung" in overlay and "BN0001" in overlay
    assert "Ảnh 1/20" in page.locator(".cell.active .ov-bl").inner_text()
    markers = [page.locator(f".cell.active .mk-{side}").inner_text() for side in ("left", "right", "top", "bottom")]
    assert markers == ["R", "L", "A", "P"]
    assert page.page_errors == []


def test_wheel_and_keys_scroll_the_stack(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    x, y = canvas_centre(page)
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    state = wait_until(page, lambda s: s["index"] != 0, what="wheel scroll")
    index = state["index"]
    assert 0 < index < 20
    wait_until(page, lambda s: shows_slice(page, ct_study, index), what=f"slice {index} on the canvas")
    page.keyboard.press("ArrowDown")
    wait_until(page, lambda s: s["index"] == index + 1, what="key scroll")
    wait_until(page, lambda s: shows_slice(page, ct_study, index + 1), what=f"slice {index + 1} on the canvas")
    page.keyboard.press("End")
    wait_until(page, lambda s: s["index"] == 19 and shows_slice(page, ct_study, 19), what="last slice")
    assert "Ảnh 20/20" in page.locator(".cell.active .ov-bl").inner_text()


def test_drag_scroll_tool(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    page.locator("[data-key=tool-scroll]").click()
    x, y = canvas_centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 150, steps=10)
    page.mouse.up()
    state = wait_until(page, lambda s: s["index"] > 0, what="drag scroll")
    wait_until(page, lambda s: shows_slice(page, ct_study, state["index"]), what="dragged-to slice on the canvas")


def test_window_level_drag_and_presets_change_pixels(
    page: Any, viewer_url: str, ct_study: CtSeries, rules: Any
) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    before, _ = canvas_grey(page)
    x, y = canvas_centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 60, steps=8)
    page.mouse.up()
    state = wait_until(page, lambda s: s["voi"] != {"center": 39.5, "width": 399}, what="window change")
    voi = state["voi"]
    wait_until(page, lambda s: shows_slice(page, ct_study, 0), what="slice at the dragged window")
    after, _ = canvas_grey(page)
    assert (before != after).mean() > 0.05, "a window/level drag must change the pixels"
    assert "W: " in page.locator(".cell.active .ov-bl").inner_text()
    # Lung preset: the window radiologists use (1500/-600), and the pixels follow.
    page.locator("select[data-key=preset]").select_option("lung")
    state = wait_until(page, lambda s: s["voi"] == {"center": -600, "width": 1500}, what="lung preset")
    assert state["voi"] != voi
    wait_until(page, lambda s: shows_slice(page, ct_study, 0), what="slice at the lung window")
    # Back to the header's window.
    page.locator("select[data-key=preset]").select_option("default")
    wait_until(page, lambda s: s["voi"] == {"center": 39.5, "width": 399}, what="header window again")


def test_view_manipulations_and_reset(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    original, _ = canvas_grey(page)
    page.locator("[data-key=flipH]").click()
    wait_until(page, lambda s: page.locator(".cell.active .mk-right").inner_text() == "R", what="flip markers")
    page.locator("[data-key=invert]").click()
    flipped, _ = canvas_grey(page)
    assert (flipped != original).mean() > 0.05
    page.locator("[data-key=rotate]").click()
    wait_until(page, lambda s: page.locator(".cell.active .mk-top").inner_text() in {"R", "L"}, what="rotated markers")
    page.locator("[data-key=reset]").click()
    wait_until(page, lambda s: shows_slice(page, ct_study, 0), what="reset view")
    assert [page.locator(f".cell.active .mk-{s}").inner_text() for s in ("left", "right", "top", "bottom")] == [
        "R",
        "L",
        "A",
        "P",
    ]


def test_elliptical_roi_reports_mean_hu_and_area(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    page.locator("[data-key=tool-ellipse]").click()
    rect = page.evaluate("filmlessViewer.imageRect()")
    box = page.locator(".cell.active .viewport canvas").bounding_box()
    (x0, y0), (x1, y1) = rect["first"], rect["last"]

    def at(i: float, j: float) -> tuple[float, float]:
        return box["x"] + x0 + (x1 - x0) * i / 511, box["y"] + y0 + (y1 - y0) * j / 511

    # The tool draws from the centre: an ellipse of radius 10 image pixels in
    # soft tissue (40 HU) between the lungs, above the ramp.
    sx, sy = at(256, 306)
    ex, ey = at(266, 316)
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(ex, ey, steps=6)
    page.mouse.up()
    # Statistics are recomputed with a throttle: wait until they settle.
    last: list[Any] = []

    def settled(_: Any) -> bool:
        last.append(page.evaluate("filmlessViewer.measurements()"))
        return len(last) > 3 and last[-1] == last[-4]

    wait_until(page, settled, what="ROI statistics")
    measurements = last[-1]
    assert len(measurements) == 1
    stats = next(iter(measurements[0]["stats"].values()))
    assert abs(stats["mean"] - 40) < 3, stats
    assert stats["modalityUnit"] == "HU"
    # Radius 10 pixels of 0.7 mm: π·7·7 ≈ 154 mm².
    assert 120 < stats["area"] < 190, stats
    # The text beside it is Vietnamese (decimal comma), not Cornerstone's English.
    label = page.locator(".cell.active svg text").all_text_contents()
    text = " ".join(label)
    for key in ("area", "mean", "max", "min", "stdDev"):
        assert CATALOGUE[f"viewer.measure.{key}"] + ":" in text, text
    assert "mm²" in text and "HU" in text, text
    assert not any(word in text for word in ("Area", "Mean", "Max:", "Min:", "Std Dev")), text


def test_layouts_fill_cells(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    open_study(page, viewer_url, ct_study.study_uid)
    page.locator("[data-key=layout-2x2]").click()
    # "ready" waits for the layout to be filled and painted, not just for the cells to exist.
    wait_until(page, lambda s: s["cells"] == 4 and s["ready"], what="2x2 layout filled")
    assert page.locator(".cell").count() == 4
    assert page.evaluate("filmlessViewer.filledCount") == 4
    # Two clicks in quick succession: the second waits for the first, no cell is filled after removal.
    page.locator("[data-key=layout-1x2]").click()
    page.locator("[data-key=layout-1x1]").click()
    wait_until(page, lambda s: s["cells"] == 1 and s["ready"], what="1x1 layout")
    assert shows_slice(page, ct_study, viewer_state(page)["index"])
    page.locator("[data-key=layout-1x2]").click()
    wait_until(page, lambda s: s["cells"] == 2 and s["ready"], what="1x2 layout")
    assert page.evaluate("filmlessViewer.filledCount") == 2
    assert shows_slice(page, ct_study, viewer_state(page)["index"])
    assert page.page_errors == []


def test_missing_study_shows_vietnamese_message(page: Any, viewer_url: str, rules: Any) -> None:
    state = open_study(page, viewer_url, generate_uid())
    assert state["error"] == "viewer.error.missing_study"
    message = page.locator("#message")
    assert message.is_visible()
    assert CATALOGUE["viewer.error.missing_study"] in message.inner_text()


def test_study_without_rights_shows_message(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    rules.refused.add(ct_study.study_uid)
    state = open_study(page, viewer_url, ct_study.study_uid)
    assert state["error"] == "viewer.error.forbidden" and not state["ready"]
    assert CATALOGUE["viewer.error.forbidden"] in page.locator("#message").inner_text()
    assert rules.audit_log == []


def test_expired_link_shows_message(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    rules.expired_tokens.add("old-link")
    state = open_study(page, viewer_url, ct_study.study_uid, token="old-link")
    assert state["error"] == "viewer.error.expired"
    assert CATALOGUE["viewer.error.expired"] in page.locator("#message").inner_text()


def test_arriving_study_shows_notice(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    rules.arriving.add(ct_study.study_uid)
    state = open_study(page, viewer_url, ct_study.study_uid)
    assert state["ready"] and state["notice"] == "viewer.notice.arriving"
    notice = page.locator("#notice")
    assert notice.is_visible() and "20 ảnh" in notice.inner_text()


def test_no_study_parameter(page: Any, viewer_url: str, rules: Any) -> None:
    """/viewer/ without a study: a Vietnamese message and a way back, and not one error in the console
    (it used to throw every second: the idle-worker timer ran without Cornerstone)."""
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(f"{viewer_url}/viewer/")
    state = wait_until(page, lambda s: s["error"], what="error")
    assert state["error"] == "viewer.error.no_study"
    message = page.locator("#message")
    assert CATALOGUE["viewer.error.no_study"] in message.inner_text()
    assert CATALOGUE["viewer.error.no_study"].startswith("Chưa chọn ca chụp")
    back = message.locator("a[data-key=back]")
    assert back.inner_text() == CATALOGUE["viewer.back_to_emr"] and back.get_attribute("href") == "/"
    assert not page.locator("#toolbar").is_visible() and not page.locator("#workspace").is_visible()
    page.wait_for_timeout(3500)  # the idle-worker timer ticks every second
    assert page.page_errors == [] and console == [], (page.page_errors, console)


def test_one_audit_entry_per_study_opened(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    # A share token of its own makes this test's principal new to the proxy.
    open_study(page, viewer_url, ct_study.study_uid, token="audit-once")
    # Let the whole stack prefetch: 20 frames and the metadata, all through the proxy.
    wait_until(page, lambda s: s["loaded"] == 20, what="stack prefetched")
    assert rules.audit_log == [(ct_study.study_uid, "audit-once")]
    page.reload()
    wait_until(page, lambda s: s["ready"] and s["loaded"] == 20, what="study opened again")
    assert rules.audit_log == [(ct_study.study_uid, "audit-once")]


def test_a_frame_that_failed_to_arrive_is_fetched_again(
    page: Any, viewer_url: str, ct_study: CtSeries, rules: Any
) -> None:
    """A dropped connection while prefetching must not leave a hole in the stack
    until the reader happens to scroll: the viewer asks for the frame again."""
    victim = str(ct_study.datasets[11].SOPInstanceUID)
    dropped: list[str] = []

    def drop_once(route: Any) -> None:
        if victim in route.request.url and not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/frames/**", drop_once)
    open_study(page, viewer_url, ct_study.study_uid)
    wait_until(page, lambda s: s["loaded"] == 20, what="every frame, the dropped one again")
    assert dropped, "the frame request was never made"
    state = viewer_state(page)
    assert state["index"] == 0 and not state["failed"]


def test_first_stage_preview_is_the_same_slice(page: Any, viewer_url: str, ct_study: CtSeries, rules: Any) -> None:
    """The preview drawn before Cornerstone loads (early.js) is the first slice at the header window."""
    page.route("**/viewer/assets/main-*.js", lambda route: route.abort())
    page.goto(f"{viewer_url}/viewer/?study={ct_study.study_uid}")
    canvas = page.locator(".preview canvas")
    canvas.wait_for(state="attached", timeout=20_000)
    pixels, _ = canvas_grey(page, ".preview canvas")
    height, width = pixels.shape
    # Same fit as Cornerstone: the 512×512 image scaled to the canvas height, centred.
    size = min(width, height)
    x0, y0 = (width - size) / 2, (height - size) / 2
    step = size / 512
    rect = {"first": [x0 + step / 2, y0 + step / 2], "last": [x0 + size - step / 2, y0 + size - step / 2]}
    ref, inside = reference_view(ct_study.datasets[0], 40, 400, rect, pixels.shape, window_first=True)
    result = compare(pixels, ref, inside)
    assert result.matches(), result
    wrong, _ = reference_view(ct_study.datasets[1], 40, 400, rect, pixels.shape, window_first=True)
    assert not compare(pixels, wrong, inside).matches()


def test_signed_report_pdf_is_a_labelled_entry_not_an_image(
    page: Any, viewer_url: str, orthanc: Any, rules: Any
) -> None:
    """The signed report lives in the study as an Encapsulated PDF (series 9901, DOC): no thumbnail, no stack."""
    from emr.signing import encapsulate_pdf

    series = make_ct_series(count=4)
    for blob in series.encoded():
        orthanc.upload(blob)
    first = series.datasets[0]
    tags = {k: str(first.get(k, "")) for k in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate")}
    pdf_blob = encapsulate_pdf(b"%PDF-1.4\n%%EOF\n", tags, title="Kết quả CT")
    orthanc.upload(pdf_blob)
    pdf_series = str(dcmread(io.BytesIO(pdf_blob)).SeriesInstanceUID)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    state = open_study(page, viewer_url, series.study_uid)
    assert state["ready"] and state["error"] is None, state
    assert state["count"] == 4
    page.locator(f".thumb[data-series='{pdf_series}']").wait_for()
    doc = page.locator(f".thumb[data-series='{pdf_series}']")
    assert doc.inner_text() == CATALOGUE["viewer.series.document"]
    assert doc.locator("img, canvas").count() == 0 and doc.is_disabled()
    # The image series' thumbnail is a real picture, not a black box.
    image_thumb = page.locator(f".thumb[data-series='{series.series_uid}'] img")
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }",
        arg=f".thumb[data-series='{series.series_uid}'] img",
    )
    assert image_thumb.count() == 1
    assert page.locator("#thumbnails img").count() == 1
    # A 2×2 layout fills cells with image series only; the PDF is never fetched as pixels.
    page.locator("[data-key=layout-2x2]").click()
    wait_until(page, lambda s: s["cells"] == 4, what="2x2 layout")
    assert viewer_state(page)["count"] == 4
    assert not [u for u in requested if f"/series/{pdf_series}/" in u], requested
    assert page.page_errors == []


# Every control of the toolbar, by its data-key.
CONTROLS = [
    *(f"tool-{k}" for k in ("windowLevel", "scroll", "pan", "zoom", "length", "angle", "ellipse")),
    *("rotate", "flipH", "flipV", "invert", "reset", "clear", "cine", "preset"),
    *(f"layout-{k}" for k in ("1x1", "1x2", "2x2")),
]
DESKTOP_SIZES = [(1280, 720), (1366, 768), (1920, 1080)]
TOUCH_SIZES = [(390, 844), (768, 1024)]


def _inside(box: dict[str, float] | None, area: dict[str, float]) -> bool:
    return (
        box is not None
        and box["width"] > 0
        and box["height"] > 0
        and box["x"] >= area["x"] - 0.5
        and box["y"] >= area["y"] - 0.5
        and box["x"] + box["width"] <= area["x"] + area["width"] + 0.5
        and box["y"] + box["height"] <= area["y"] + area["height"] + 0.5
    )


def assert_controls_usable(root: Any, areas: list[dict[str, float]]) -> None:
    """Each control is visible, inside every given area (viewport, iframe) and would receive a click."""
    for key in CONTROLS:
        control = root.locator(f"[data-key={key}]")
        control.scroll_into_view_if_needed(timeout=5000)
        assert control.is_visible(), key
        box = control.bounding_box()
        for area in areas:
            assert _inside(box, area), (key, box, area)
        # Actionability: visible, stable, enabled and not covered by anything else.
        control.click(trial=True, timeout=5000)
        name = control.get_attribute("aria-label") or control.get_attribute("title")
        assert name, f"{key} has no accessible name"


@pytest.mark.parametrize("size", DESKTOP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_toolbar_fits_desktop_screens(
    page: Any, viewer_url: str, ct_study: CtSeries, rules: Any, size: tuple[int, int]
) -> None:
    """Issue 13: at 1280×720 and up every tool is on screen and clickable, in one row, no menu."""
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    open_study(page, viewer_url, ct_study.study_uid)
    page.locator("[data-key=tool-windowLevel]").wait_for()
    assert not page.locator("[data-key=menu]").is_visible()
    assert_controls_usable(page, [{"x": 0, "y": 0, "width": width, "height": height}])
    tops = {round(page.locator(f"[data-key={k}]").bounding_box()["y"]) for k in CONTROLS}
    assert max(tops) - min(tops) <= 2, f"the toolbar wraps: {sorted(tops)}"
    # Names are Vietnamese, from the catalogue.
    assert page.locator("[data-key=tool-length]").get_attribute("aria-label") == CATALOGUE["viewer.tool.length"]
    if size == (1366, 768):
        page.screenshot(path=str(ARTIFACTS / "viewer-1366x768.png"))


@pytest.mark.parametrize("size", TOUCH_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_toolbar_collapses_into_a_menu_on_touch_screens(
    browser: Any, viewer_url: str, ct_study: CtSeries, rules: Any, size: tuple[int, int]
) -> None:
    width, height = size
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1, is_mobile=True, has_touch=True
    )
    phone = context.new_page()
    try:
        open_study(phone, viewer_url, ct_study.study_uid)
        menu = phone.locator("[data-key=menu]")
        menu.wait_for()
        assert menu.is_visible() and menu.get_attribute("aria-expanded") == "false"
        assert CATALOGUE["viewer.menu"] in menu.inner_text()
        assert not phone.locator("[data-key=tool-length]").is_visible()
        area = {"x": 0, "y": 0, "width": width, "height": height}
        assert _inside(menu.bounding_box(), area)
        if size == (390, 844):
            phone.screenshot(path=str(ARTIFACTS / "viewer-390x844.png"))
        menu.tap()
        assert menu.get_attribute("aria-expanded") == "true"
        # Labelled entries, every one reachable and clickable.
        assert phone.locator("[data-key=tool-length]").inner_text() == CATALOGUE["viewer.tool.length"]
        assert_controls_usable(phone, [area])
        if size == (390, 844):
            phone.screenshot(path=str(ARTIFACTS / "viewer-390x844-menu.png"))
        # Choosing a tool closes the menu and makes it the active tool.
        phone.locator("[data-key=tool-length]").tap()
        assert menu.get_attribute("aria-expanded") == "false"
        assert not phone.locator("[data-key=tool-length]").is_visible()
        assert CATALOGUE["viewer.tool.length"] in phone.locator(".tb-current").inner_text()
        menu.tap()
        assert "on" in (phone.locator("[data-key=tool-length]").get_attribute("class") or "")
        # A preset from the menu changes the window and closes it too.
        phone.locator("select[data-key=preset]").select_option("lung")
        wait_until(phone, lambda s: s["voi"] == {"center": -600, "width": 1500}, what="lung preset from the menu")
        assert menu.get_attribute("aria-expanded") == "false"
    finally:
        context.close()


@pytest.mark.parametrize("size", [(1280, 720), (1366, 768), (390, 844)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_toolbar_fits_in_the_reading_page(browser: Any, emr: Emr, size: tuple[int, int]) -> None:  # noqa: F811
    """Embedded beside the report (emr/templates/reading/read.html): every tool on screen, or the menu on a phone."""
    width, height = size
    phone = width < 700
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1, is_mobile=phone, has_touch=phone
    )
    page = context.new_page()
    try:
        browser_login(page, emr.base, "radiologist1")
        page.goto(f"{emr.base}/reading/studies/{emr.study_id}")
        frame = page.frame_locator("iframe.reading-viewer")
        frame.locator(".cell.active .viewport canvas").wait_for(timeout=30000)
        frame.locator("[data-key=menu]").wait_for(state="attached", timeout=30000)
        iframe = page.locator("iframe.reading-viewer").bounding_box()
        screen = {"x": 0, "y": 0, "width": width, "height": height}
        assert _inside(iframe, screen) if not phone else iframe["width"] <= width
        name = f"reading-{width}x{height}.png"
        if phone:
            menu = frame.locator("[data-key=menu]")
            assert menu.is_visible()
            page.screenshot(path=str(ARTIFACTS / name))
            menu.tap()
            assert_controls_usable(frame, [iframe])
            page.screenshot(path=str(ARTIFACTS / name.replace(".png", "-menu.png")))
        else:
            assert not frame.locator("[data-key=menu]").is_visible()
            assert_controls_usable(frame, [iframe, screen])
            # The report panel is still beside the viewer, not pushed off screen.
            panel = page.locator(".reading-panel").bounding_box()
            assert panel["x"] >= iframe["x"] + iframe["width"] and panel["x"] + panel["width"] <= width
            page.screenshot(path=str(ARTIFACTS / name))
    finally:
        context.close()
