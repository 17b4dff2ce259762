"""README's "A first walk-through", step by step as written (issue 13's "done when").

A real ``filmless up --demo`` on free ports runs in a throw-away checkout (the
repository's ``.venv`` linked in, data in its ``./var``). Every shell command
is taken from the README's code blocks and run in a second "terminal" that has
no ``FILMLESS_*`` variables (the README says commands find the running
installation), with only what the README itself says to change: the ports the
banner printed, and the accession number and Study Instance UID ``findscu``
answered. Every name the test clicks or types is first looked up in the
README's walk-through text, so a step the README does not describe, or
describes differently from the UI, fails the test.

Screenshots of the chart, reading page, audit page and patient page at
1366×768 and 390×844 go to ``$FILMLESS_SCREENSHOTS`` (default
``test-artifacts/readme-walkthrough``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser import browser  # noqa: F401 - fixture
from tests.helpers import free_port, wait_for
from tests.viewer.browser import viewer_state, wait_until

ROOT = Path(__file__).parents[2]
SHOTS = Path(os.environ.get("FILMLESS_SCREENSHOTS") or ROOT / "test-artifacts" / "readme-walkthrough")
SIZES = {"desktop": (1366, 768), "phone": (390, 844)}
EXAMPLE_ACCESSION = "261123000005"
EXAMPLE_STUDY_UID = "2.25.273788619230723213859384069135213567663"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed"),
    pytest.mark.timeout(900),
]


# -- the README ----------------------------------------------------------------


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## A first walk-through")
    end = text.index("\n## ", start + 10)
    return text[start:end]


def step(number: int) -> str:
    """The text of step ``number`` (from its bold "N." to the next step)."""
    text = walkthrough()
    start = text.index(f"**{number}. ")
    nxt = text.find(f"**{number + 1}. ", start)
    return text[start : nxt if nxt != -1 else len(text)]


def says(number: int, phrase: str) -> str:
    """``phrase`` as step ``number`` of the README writes it (fails when the README does not say it)."""
    flat = re.sub(r"\s+", " ", step(number))
    assert phrase in flat, f"README step {number} does not say {phrase!r}"
    return phrase


def shell_commands(number: int) -> list[str]:
    """The commands of step ``number``'s ```sh blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", step(number), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    assert commands, f"README step {number} has no commands"
    return commands


# -- the running installation ------------------------------------------------------


@dataclass
class Install:
    checkout: Path
    tmp: Path
    banner: str
    emr: str
    gateway_port: int
    output: list[str]
    values: dict[str, str] = field(default_factory=dict)  # what the README tells the reader to carry along

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """One README command as the second terminal runs it (no FILMLESS_* in its environment)."""
        command = command.replace("127.0.0.1 11112", f"127.0.0.1 {self.gateway_port}")
        command = command.replace(" /tmp/", f" {self.tmp}/").replace("=/tmp/", f"={self.tmp}/")
        for example, actual in (
            (EXAMPLE_ACCESSION, self.values.get("accession")),
            (EXAMPLE_STUDY_UID, self.values.get("study_uid")),
            ("<MA_LK from the file name>", self.values.get("ma_lk")),
        ):
            if actual:
                command = command.replace(example, actual)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
        result = subprocess.run(
            ["bash", "-c", command], cwd=self.checkout, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def login(self, page: Any, user: str, password: str) -> None:
        page.goto(f"{self.emr}/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(r".*/(?!login).*"))


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    checkout = tmp_path_factory.mktemp("checkout")
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    tmp = tmp_path_factory.mktemp("tmp")
    ports = {name: free_port() for name in ("gw", "http", "dicom", "emr")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env.update(
        {
            "FILMLESS_GATEWAY_PORT": str(ports["gw"]),
            "FILMLESS_ORTHANC_HTTP_PORT": str(ports["http"]),
            "FILMLESS_ORTHANC_DICOM_PORT": str(ports["dicom"]),
            "FILMLESS_EMR_PORT": str(ports["emr"]),
            "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
        }
    )
    env.pop("SOFTHSM2_CONF", None)
    proc = subprocess.Popen(
        [str(checkout / ".venv" / "bin" / "filmless"), "up", "--demo"],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            wait_for(lambda: "Signing token" in "".join(output), timeout=300, what="the banner")
        except AssertionError:
            raise AssertionError("".join(output)[-4000:]) from None
        banner = "".join(output)
        emr = re.search(r"EMR \(web\)\s+(http://\S+)", banner).group(1)  # type: ignore[union-attr]
        gw = int(re.search(r"DICOM gateway\s+AE title FILMLESS, port (\d+)", banner).group(1))  # type: ignore[union-attr]
        assert gw == ports["gw"] and emr.endswith(f":{ports['emr']}")
        yield Install(checkout, tmp, banner, emr, gw, output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = "".join(output)
    # `filmless up` says why and when it stopped.
    assert re.search(r"\d\d:\d\d:\d\d.*filmless stopped \(received SIGINT\)", log), log[-2000:]


def _shoot(page: Any, name: str) -> None:
    """The page at both sizes (the viewport is put back afterwards)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    for label, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / f"{name}-{label}-{w}x{h}.png"))
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {w}px is {overflow}px wider than the screen"
    page.set_viewport_size(before)


def _account(number: int, role_user: str) -> str:
    """The password the README gives next to ``role_user`` in step ``number``."""
    m = re.search(rf"`{role_user}`\s*/\s*`([^`]+)`", re.sub(r"\s+", " ", step(number)))
    assert m, f"README step {number} gives no password for {role_user}"
    return m.group(1)


# -- the walk-through -------------------------------------------------------------


def test_readme_walkthrough_from_order_to_the_patients_phone(browser: Any, install: Install) -> None:  # noqa: F811
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    bad: list[str] = []
    page.on("response", lambda r: bad.append(f"{r.status} {r.url}") if r.status == 404 else None)

    # Banner: the admin is `quantri`, and the README's sample banner says so.
    assert re.search(r"admin\s+quantri\s+demo-quantri-2026", install.banner)
    assert "admin          quantri" in (ROOT / "README.md").read_text(encoding="utf-8")

    # 1. Order a CT.
    install.login(page, says(1, "bacsi"), _account(1, "bacsi"))
    assert page.get_by_role("heading", name=says(1, "Tìm bệnh nhân")).is_visible()
    page.locator("input[type=search]").fill(says(1, "dang quoc bao"))
    page.get_by_role("button", name=says(1, "Tìm"), exact=True).click()
    page.get_by_role("link", name=says(1, "Đặng Quốc Bảo")).click()
    page.get_by_role("link", name=says(1, "Chỉ định chụp")).click()
    assert says(1, "Loại máy") and says(1, "Kỹ thuật") and says(1, "Máy thực hiện (AE title)")
    page.get_by_label("Loại máy").select_option(says(1, "CT"))
    page.get_by_label("Kỹ thuật", exact=False).first.fill(says(1, "CT sọ não không tiêm"))
    page.get_by_label("Máy thực hiện (AE title)").fill(says(1, "CT01"))
    page.get_by_role("button", name=says(1, "Gửi chỉ định")).click()
    page.wait_for_url(re.compile(r".*/patients/\d+$"))
    chart_url = page.url
    orders = page.locator("table.orders tbody tr", has_text="CT sọ não không tiêm")
    assert orders.count() == 1
    row = orders.first
    accession = re.search(r"\b(\d{12})\b", row.inner_text()).group(1)  # type: ignore[union-attr]
    assert says(1, "Đã chỉ định") in row.inner_text()
    vietnam_today = datetime.now(ZoneInfo(says(1, "Asia/Ho_Chi_Minh")))
    assert accession.startswith(f"{vietnam_today:%y%m%d}"), accession  # the facility's date, not the server's
    assert says(1, "Chỉ định chẩn đoán hình ảnh") in page.content()

    # 2. The modality worklist, as the CT console asks for it (today's date in Vietnam).
    answer = install.run(shell_commands(2)[0])
    found = answer.stdout + answer.stderr
    assert f"[{accession}]" in found, found[-3000:]
    assert "Đặng^Quốc Bảo" in found and "ISO_IR 192" in found
    install.values["accession"] = accession
    uid = re.search(r"\(0020,000d\) UI \[([0-9.]+)", found[found.index(f"[{accession}]") :], re.I)
    assert uid, found[-3000:]
    install.values["study_uid"] = uid.group(1)

    # 3. Send a study for that order.
    for command in shell_commands(3):
        result = install.run(command)
    assert says(3, "Received Store Response (Success)") in result.stdout + result.stderr
    wait_for(lambda: "PatientID '1CT1' -> " in "".join(install.output), timeout=60, what="the gateway's log line")

    # 4. The study in the chart.
    def linked() -> bool:
        page.goto(chart_url)
        return says(4, "Đã có hình ảnh") in page.locator("table.orders tbody tr", has_text=accession).inner_text()

    wait_for(linked, timeout=60, interval=2, what="the study linked to the order")
    link = page.locator("table.orders tbody tr", has_text=accession).locator("a.study-link")
    assert link.inner_text().startswith(says(4, "Xem ảnh"))
    assert re.search(r"\(\d\d/\d\d/\d{4}\)", link.inner_text())
    box = link.bounding_box()
    assert box is not None and box["height"] < 30, "the image link wraps in the middle of its label"
    _shoot(page, "chart")

    # 5. A study that matches no order, linked by the records clerk.
    for command in shell_commands(5):
        install.run(command)
    says(5, "Log out")
    page.get_by_role("button", name="Đăng xuất").click()
    install.login(page, says(5, "luutru"), _account(5, "luutru"))
    page.get_by_role("link", name=says(5, "Đối chiếu ca chụp")).first.click()

    def queued() -> bool:
        page.reload()
        return page.locator("section.study", has_text="PHAM THI MAI ANH").count() == 1

    wait_for(queued, timeout=60, interval=2, what="the unmatched study in the queue")
    card = page.locator("section.study", has_text="PHAM THI MAI ANH")
    suggestion = card.locator("tr", has_text="Phạm Thị Mai Anh")
    assert says(5, "Trùng họ tên") in suggestion.inner_text()
    suggestion.get_by_role("link", name=says(5, "Chọn")).click()
    assert page.locator("#mismatch-warning").is_visible()
    page.get_by_label(says(5, "Tôi đã kiểm tra và vẫn gắn ca chụp vào chỉ định này")).check()
    page.get_by_role("button", name=says(5, "Xác nhận gắn")).click()
    page.wait_for_url(re.compile(r".*/reconcile/\?linked=\d+"))
    page.get_by_role("button", name="Đăng xuất").click()
    install.login(page, says(5, "quantri"), _account(5, "quantri"))
    # The admin lands on /admin, which lists the audit log too: the top bar's link.
    page.locator("header.top").get_by_role("link", name=says(5, "Nhật ký truy cập")).click()
    page.get_by_label("Thao tác").select_option(label=says(5, "Gắn ca chụp"))
    page.get_by_role("button", name="Lọc").click()
    # count() does not wait: let the filtered page load first (it raced the navigation once).
    page.wait_for_url(re.compile(r".*[?&]action=study\.link"))
    rows = page.locator("table.audit tbody tr")
    rows.first.wait_for()
    assert rows.count() >= 2 and "luutru" in rows.first.inner_text(), rows.first.inner_text()
    assert re.search(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", rows.first.inner_text())
    assert "Xuất CSV" in page.content()
    _shoot(page, "audit")
    page.get_by_role("button", name="Đăng xuất").click()

    # 6. Read, sign and hand the patient a slip.
    install.login(page, says(6, "bschan"), _account(6, "bschan"))
    page.get_by_role("link", name=says(6, "Danh sách đọc")).click()
    row = page.locator("tr", has_text=accession)
    row.get_by_role("link", name=says(6, "Đọc ca")).click()
    page.frame_locator("iframe.reading-viewer").locator(".cell.active .viewport canvas").wait_for(timeout=30000)
    frame = next(f for f in page.frames if "/viewer/" in f.url)
    wait_until(frame, lambda st: st["ready"] or st["error"], timeout=60, what="the CT in the reading page")
    assert viewer_state(frame)["error"] is None
    says(6, "ellipse tool")
    page.frame_locator("iframe.reading-viewer").locator("[data-key=tool-ellipse]").click()
    canvas = page.frame_locator("iframe.reading-viewer").locator(".cell.active .viewport canvas").bounding_box()
    cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 20, cy + 15, steps=6)
    page.mouse.up()
    wait_for(
        lambda: any(m["tool"] == "EllipticalROI" for m in frame.evaluate("filmlessViewer.measurements()")),
        timeout=20,
        what="the ellipse measurement",
    )
    says(6, "Mô tả hình ảnh") and says(6, "Kết luận")
    assert page.locator("textarea[data-field=findings]").input_value().strip(), "the CT template filled nothing"
    page.get_by_role("button", name=says(6, "Lưu nháp")).click()
    page.wait_for_url(re.compile(r".*saved=1"))
    assert page.locator(".error[role=alert], .errorbox").count() == 0, page.content()[:2000]
    reading_url = page.url.split("?")[0]
    _shoot(page, "reading")
    page.get_by_role("link", name=says(6, "Ký kết quả")).click()
    page.get_by_label(says(6, "Token USB (PKCS#11)")).check()
    pin = says(6, "246810")
    assert f"PIN {pin}" in install.banner
    page.locator("input[name=secret]").fill(pin)
    page.get_by_role("button", name=says(6, "Ký số")).click()
    page.wait_for_url(reading_url, timeout=60000)
    assert page.locator("#report-status").inner_text() == "Đã ký"
    # The slip opens in a new tab as a PDF: keep a copy of what the browser receives.
    slips: list[bytes] = []

    def keep(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        response = route.fetch()
        slips.append(response.body())
        route.fulfill(response=response)

    context.route(re.compile(r".*/reading/studies/\d+/share$"), keep)
    page.get_by_role("button", name=says(6, "In phiếu (QR + mã PIN)")).click()
    for _ in range(150):  # Playwright runs the route handler while the page waits, not during sleep()
        if slips:
            break
        page.wait_for_timeout(200)
    assert slips, "the slip PDF never arrived"
    slip_pdf = slips[0]
    assert slip_pdf.startswith(b"%PDF"), slip_pdf[:300]
    slip_text = subprocess.run(["pdftotext", "-", "-"], input=slip_pdf, capture_output=True, check=True).stdout.decode()
    share_url = re.search(re.escape(install.emr) + r"/s/[a-z0-9]+", slip_text).group(0)  # type: ignore[union-attr]
    share_pin = re.search(r"Mã PIN: (\d{6})", slip_text).group(1)  # type: ignore[union-attr]
    page.reload()
    links = page.locator("table.share-links tbody tr")
    assert links.count() == 1 and "…" in links.first.inner_text() and "Trần Thị Bích Ngọc" in links.first.inner_text()
    assert "Chưa mở" in links.first.inner_text()

    # The patient's phone: the slip's link and PIN, the report, the signed PDF.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, locale="vi-VN")
    mobile = phone.new_page()
    mobile.goto(share_url)
    mobile.locator("input[name=pin]").fill(share_pin)
    mobile.locator("#pin-submit").click()
    assert mobile.locator("#report-conclusion").inner_text().strip()
    _shoot(mobile, "patient")
    with mobile.expect_download() as download:
        mobile.get_by_role("link", name=says(6, "Tải kết quả đã ký (PDF)")).click()
    signed = Path(download.value.path()).read_bytes()
    assert signed.startswith(b"%PDF")
    pdf_path = install.checkout / "ket-qua.pdf"
    pdf_path.write_bytes(signed)
    printed = subprocess.run(["pdftotext", str(pdf_path), "-"], capture_output=True, check=True, text=True).stdout
    # The report names the exam.
    for label, value in (
        ("Số phiếu chụp (Accession)", accession),
        ("Kỹ thuật", "CT sọ não không tiêm"),
        ("Loại máy", "CT"),
        ("Bác sĩ chỉ định", "Nguyễn Văn An"),
        ("Khoa chỉ định", "Khoa Khám bệnh"),
    ):
        assert re.search(re.escape(label) + r":\s*" + re.escape(value), printed), (label, printed[:3000])
    assert re.search(r"Ngày chụp:\s*\d\d/\d\d/\d{4}", printed)
    # The verification code is printed whole: typed into /verify by someone not logged in, it is found.
    code = re.search(r"Mã kiểm tra: ([A-Za-z0-9_-]+)", printed).group(1)  # type: ignore[union-attr]
    stranger = browser.new_context().new_page()
    stranger.goto(f"{install.emr}/verify/{code}")
    assert "HỢP LỆ" in stranger.locator(".verdict").inner_text()
    assert "Đặng Quốc Bảo" not in stranger.content()  # no patient data for anyone not logged in
    phone.close()
    page.reload()
    assert "Chưa mở" not in page.locator("table.share-links tbody tr").first.inner_text()
    # `filmless verify FILE.pdf` offline, as the README writes it.
    assert says(6, ".venv/bin/filmless verify FILE.pdf")
    offline = install.run(f".venv/bin/filmless verify {pdf_path.name}")
    assert "HỢP LỆ" in offline.stdout and "Traceback" not in offline.stderr

    # 7. Export the visit (the records clerk's job), commands as written.
    assert says(7, "luutru")
    commands = shell_commands(7)
    assert install.run(commands[0]).returncode == 0
    files = sorted((install.tmp / "xml130").glob("*.xml"))
    assert files, "no XML 130 file"
    assert "OK" in (lambda r: r.stdout + r.stderr)(install.run(commands[1]))
    install.values["ma_lk"] = re.search(r"([0-9A-Za-z]+)\.xml$", files[0].name).group(1)  # type: ignore[union-attr]
    install.run(commands[2])

    context.close()
    assert not errors, errors
    assert not [b for b in bad if "favicon" in b], bad
