"""Compressed transfer syntaxes are decoded in the browser (WASM codecs), a
multi-frame ultrasound plays as cine, and an undecodable series shows a
message instead of a blank canvas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storage import OrthancStore
from tests.viewer.browser import open_study, viewer_state, wait_until
from tests.viewer.phantom import COMPRESSORS, compress, make_ct_series, make_undecodable, make_us_cine, parse
from tests.viewer.pixels import canvas_grey, compare, reference_view

CATALOGUE = json.loads((Path(__file__).resolve().parents[2] / "emr" / "i18n" / "vi.json").read_text("utf-8"))


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_compressed_series_is_decoded_in_the_browser(
    page: Any, viewer_url: str, orthanc: OrthancStore, tmp_path: Path, codec: str, rules: Any
) -> None:
    series = make_ct_series(count=2, size=256)
    stored = [compress(blob, codec, tmp_path) for blob in series.encoded()]
    for blob in stored:
        orthanc.upload(blob)
    state = open_study(page, viewer_url, series.study_uid)
    assert state["ready"] and not state["failed"], state
    # The reference is pydicom's own decoding of the very file Orthanc holds.
    first = parse(stored[0])
    pixels, rect = canvas_grey(page)
    voi = state["voi"]
    ref, inside = reference_view(
        first, voi["center"], voi["width"], rect, pixels.shape, window_first=state["renderer"] == "cpu"
    )
    result = compare(pixels, ref, inside)
    assert result.matches(), (codec, result)


def test_multiframe_ultrasound_plays_as_cine(page: Any, viewer_url: str, orthanc: OrthancStore, rules: Any) -> None:
    cine = make_us_cine(frames=12)
    orthanc.upload(next(cine.encoded()))
    state = open_study(page, viewer_url, cine.study_uid)
    assert state["count"] == 12
    seen = {state["index"]}
    wait_until(page, lambda s: seen.add(s["index"]) or len(seen) >= 4, what="cine advancing frames by itself")
    assert "on" in (page.locator("[data-key=cine]").get_attribute("class") or "")
    page.locator("[data-key=cine]").click()
    stopped = viewer_state(page)["index"]
    page.wait_for_timeout(300)
    assert viewer_state(page)["index"] == stopped


def test_undecodable_series_shows_message(page: Any, viewer_url: str, orthanc: OrthancStore, rules: Any) -> None:
    broken = make_undecodable()
    orthanc.upload(next(broken.encoded()))
    page.goto(f"{viewer_url}/viewer/?study={broken.study_uid}")
    state = wait_until(page, lambda s: s["failed"], what="decode failure")
    assert not state["ready"]
    message = page.locator(".cell.active .cell-message")
    assert message.is_visible()
    text = message.inner_text()
    assert text.startswith(CATALOGUE["viewer.error.undecodable"].split("(")[0].strip())
