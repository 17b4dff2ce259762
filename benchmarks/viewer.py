"""Viewer speed in headless Debian chromium over loopback.

Measures, the way shared/domain-notes.md ("How viewer speed is judged")
describes it, on a 200-slice CT (512×512, 16-bit, uncompressed) in a local
Orthanc behind the viewer's DICOMweb proxy:

* time to first image: navigation start → first animation frame in which the
  viewer's canvas, scaled down to 64×64, shows at least 16 grey levels
  (cold browser profile per run; median of --runs);
* scrolling, closed loop: 100 wheel steps, each waiting until the slice
  index and the canvas pixels have changed (slices/s);
* scrolling, open loop: 100 wheel steps at 60 Hz without waiting (slices/s
  and how many of the 100 were reached);
* memory: PSS of the tab's renderer process after the stack is loaded.

Targets (issue 6): first image < 500 ms, scrolling ≥ 30 slices/s.

    .venv/bin/python benchmarks/viewer.py [--slices 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from storage import OrthancProcess, StorageSettings  # noqa: E402
from tests.browser import launch  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.viewer.phantom import make_ct_series  # noqa: E402
from tests.viewer.server import AccessRules, make_app, serve  # noqa: E402
from viewer import dist_path  # noqa: E402

# Injected before any page script: watches every animation frame for the
# first one whose canvas (scaled to 64×64) has ≥ 16 grey levels.
FIRST_IMAGE_PROBE = """
(() => {
  const probe = document.createElement('canvas');
  probe.width = probe.height = 64;
  const ctx = probe.getContext('2d', { willReadFrequently: true });
  function tick() {
    const c = document.querySelector('.viewport canvas');
    if (c && c.width > 0) {
      ctx.clearRect(0, 0, 64, 64);
      ctx.drawImage(c, 0, 0, 64, 64);
      const d = ctx.getImageData(0, 0, 64, 64).data;
      const levels = new Set();
      for (let i = 0; i < d.length; i += 4) levels.add(d[i]);
      if (levels.size >= 16) { window.__firstImageMs = performance.now(); return; }
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
})();
"""

# Both scroll loops run inside the page (the viewer's CSP forbids eval, so
# no helper is passed as a string). A fingerprint is the 64×64 down-scaled
# grey values of the active canvas.
SCROLL_LOOPS = """async ([mode, steps]) => {
  const probe = Object.assign(document.createElement('canvas'), { width: 64, height: 64 });
  const pctx = probe.getContext('2d', { willReadFrequently: true });
  const fingerprint = () => {
    pctx.drawImage(window.filmlessViewer.canvas(), 0, 0, 64, 64);
    const d = pctx.getImageData(0, 0, 64, 64).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i]) | 0;
    return h;
  };
  const el = document.querySelector('.cell.active .viewport');
  const r = el.getBoundingClientRect();
  // Chrome fills the legacy wheelDeltaY of a synthetic WheelEvent with the
  // sign of deltaY (a real wheel has the opposite sign), and Cornerstone
  // reads the legacy field first: deltaY -100 here is one step forward.
  const wheel = () => el.dispatchEvent(new WheelEvent('wheel', {
    deltaY: -100, deltaMode: 0, clientX: r.x + r.width / 2, clientY: r.y + r.height / 2,
    bubbles: true, cancelable: true }));
  const frame = () => new Promise((res) => requestAnimationFrame(res));
  const index = () => window.filmlessViewer.currentIndex;
  const start = index();
  const t0 = performance.now();
  if (mode === 'closed') {
    let done = 0;
    for (let i = 0; i < steps; i++) {
      const idx = index();
      const fp = fingerprint();
      wheel();
      const limit = performance.now() + 2000;
      for (;;) {
        await frame();
        if (index() !== idx && fingerprint() !== fp) { done++; break; }
        if (performance.now() > limit) break;
      }
    }
    return { seconds: (performance.now() - t0) / 1000, advanced: done };
  }
  // Open loop: one wheel step per animation frame (60 Hz), no waiting;
  // then let the viewer settle and count how far it got.
  let lastChange = t0;
  let last = start;
  for (let i = 0; i < steps; i++) {
    wheel();
    await frame();
    if (index() !== last) { last = index(); lastChange = performance.now(); }
  }
  const settle = performance.now() + 1000;
  while (performance.now() < settle) {
    await frame();
    if (index() !== last) { last = index(); lastChange = performance.now(); }
  }
  return { seconds: (lastChange - t0) / 1000, advanced: last - start };
}"""


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def renderer_pids(browser: Any) -> list[int]:
    cdp = browser.new_browser_cdp_session()
    info = cdp.send("SystemInfo.getProcessInfo")
    return [int(p["id"]) for p in info["processInfo"] if p["type"] == "renderer"]


def wait(page: Any, expression: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {expression}")


def first_image_run(pw: Any, url: str) -> float:
    browser = launch(pw)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        context.add_init_script(FIRST_IMAGE_PROBE)
        page = context.new_page()
        page.goto(url)
        ms = wait(page, "window.__firstImageMs", timeout=60)
        return float(ms)
    finally:
        browser.close()


def scroll_and_memory(pw: Any, url: str, slices: int) -> dict[str, float]:
    browser = launch(pw)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page = context.new_page()
        page.goto(url)
        wait(page, "window.filmlessViewer && window.filmlessViewer.ready")
        t0 = time.monotonic()
        wait(page, f"window.filmlessViewer.loadedCount >= {slices}", timeout=120)
        load_s = time.monotonic() - t0
        # Closed loop from the first slice, then the open loop from the first slice.
        page.evaluate("filmlessViewer.setIndex(0)")
        time.sleep(0.3)
        closed = page.evaluate(SCROLL_LOOPS, ["closed", 100])
        page.evaluate("filmlessViewer.setIndex(0)")
        time.sleep(0.3)
        opened = page.evaluate(SCROLL_LOOPS, ["open", 100])
        pids = renderer_pids(browser)
        # The tab is the renderer using the most memory (others are spare
        # or utility renderers of the headless browser).
        pss = sorted((pss_kib(pid) for pid in pids), reverse=True)
        return {
            "stack_load_s": load_s,
            "closed_fps": closed["advanced"] / closed["seconds"],
            "closed_done": closed["advanced"],
            "open_fps": opened["advanced"] / max(opened["seconds"], 1e-3),
            "open_reached": opened["advanced"],
            "pss_mib": pss[0] / 1024 if pss else 0.0,
            "other_renderers_mib": sum(pss[1:]) / 1024,
        }
    finally:
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    dist_path(check=True)
    with tempfile.TemporaryDirectory(prefix="filmless-bench-") as tmp:
        settings = replace(StorageSettings(), data_dir=Path(tmp), http_port=free_port(), dicom_port=free_port())
        proc = OrthancProcess(settings)
        store = proc.start()
        try:
            t = time.monotonic()
            series = make_ct_series(count=args.slices)
            for blob in series.encoded():
                store.upload(blob)
            print(f"uploaded {args.slices} CT slices (512×512, 16-bit) in {time.monotonic() - t:.1f} s")
            app = make_app(store.url, (proc.credentials.username, proc.credentials.password), AccessRules())
            with serve(app) as base, sync_playwright() as pw:
                url = f"{base}/viewer/?study={series.study_uid}"
                first = [first_image_run(pw, url) for _ in range(args.runs)]
                scroll = scroll_and_memory(pw, url, args.slices)
        finally:
            proc.stop()
    med = statistics.median(first)
    print(
        f"time to first image: median {med:.0f} ms (runs: {', '.join(f'{x:.0f}' for x in first)}) "
        f"target < 500 ms: {'OK' if med < 500 else 'MISSED'}"
    )
    print(f"whole stack loaded after first image: {scroll['stack_load_s']:.2f} s")
    print(
        f"scrolling, closed loop: {scroll['closed_fps']:.1f} slices/s ({scroll['closed_done']}/100 steps) "
        f"target ≥ 30: {'OK' if scroll['closed_fps'] >= 30 else 'MISSED'} (harness ceiling ≈ 30 at 60 Hz)"
    )
    print(f"scrolling, open loop at 60 Hz: {scroll['open_fps']:.1f} slices/s, reached {scroll['open_reached']}/100")
    print(
        f"tab memory (renderer PSS): {scroll['pss_mib']:.0f} MiB "
        f"(other renderer processes: {scroll['other_renderers_mib']:.0f} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
