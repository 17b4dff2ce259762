"""The image viewer says so while the user holds an emergency (break-the-glass) access, as every EMR page does.

The viewer is a page of its own (no base.html): a physician outside the patient's care who broke the glass saw
the images with no word of the emergency access. Now the viewer asks the EMR (``GET /break-glass/mine``, the
user's own accesses only) and shows the same banner: the patient covered, when the access ends in facility time,
and that every access is logged and reviewed, in the catalogue's words. A user without one sees no banner.

Real EMR (SQLite) with the viewer and proxy, the session Orthanc, Debian chromium.
"""

from __future__ import annotations

import time
from typing import Any

from emr.access import break_glass
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.core.clock import to_local
from emr.models import Patient
from emr.patients import encounters
from tests.viewer.browser import wait_until
from tests.viewer.test_emr_reading import (  # noqa: F401 - the module's EMR world (fixture)
    CATALOGUE,
    PASSWORD,
    SETUP,
    Emr,
    browser_login,
    emr,
)

REASON = "Cấp cứu ngoài giờ, bác sĩ điều trị vắng mặt"


def _banner(page: Any) -> dict[str, Any] | None:
    return page.evaluate(
        """() => { const b = document.getElementById('break-glass-banner');
          return b && { text: b.innerText, links: [...b.querySelectorAll('a')].map((a) => a.getAttribute('href')),
                        height: b.getBoundingClientRect().height }; }"""
    )


def _open(page: Any, emr: Emr) -> None:  # noqa: F811
    page.goto(f"{emr.base}/viewer/?study={emr.series.study_uid}")
    state = wait_until(page, lambda s: s["ready"] or s["error"], what="first image or error")
    assert state["ready"] and state["error"] is None, state
    deadline = time.monotonic() + 20
    while not page.evaluate("() => window.filmlessViewer.emergencyLoaded"):  # no wait_for_function: the CSP
        assert time.monotonic() < deadline, "the viewer never asked the EMR about emergency accesses"
        time.sleep(0.05)


def test_the_viewer_shows_the_banner_during_an_emergency_access(page: Any, emr: Emr) -> None:  # noqa: F811
    with emr.sessions() as s:
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        outsider = create_user(s, SETUP, "bsngoai", PASSWORD, "physician", "BS. Ngoài Khoa",
                               department_id=k01.id, practising_cert_no="bsngoai/HCM-CCHN")
        s.commit()
        grant = break_glass.open_break_glass(s, Actor(outsider.id, "bsngoai", "physician", "127.0.0.1"),
                                             emr.patient_id, REASON, hours=4)
        patient = s.get(Patient, emr.patient_id)
        name, code = patient.full_name, patient.code
        until = to_local(grant.expires_at).strftime("%d/%m/%Y %H:%M")
    assert until != grant.expires_at.strftime("%d/%m/%Y %H:%M")  # facility time, not UTC

    browser_login(page, emr.base, "bsngoai")
    _open(page, emr)
    banner = _banner(page)
    assert banner is not None, "no emergency-access banner in the viewer"
    text = " ".join(banner["text"].split())
    assert CATALOGUE["care.banner.title"] in text
    assert name in text and CATALOGUE["care.banner.code"].replace("{code}", code) in text
    assert CATALOGUE["care.banner.until"].replace("{at}", until) in text
    assert CATALOGUE["care.banner.logged"] in text
    assert banner["links"] == [f"/patients/{emr.patient_id}"]  # the name opens the chart it covers
    assert 0 < banner["height"] < 200, banner  # a strip above the images, not over them
    assert page.page_errors == []


def test_no_banner_without_an_emergency_access(page: Any, emr: Emr) -> None:  # noqa: F811
    browser_login(page, emr.base, "radiologist1")
    _open(page, emr)
    assert _banner(page) is None
    assert page.evaluate("() => window.filmlessViewer.emergency") == []
    assert page.page_errors == []
