"""Getting around the order entry checks and the draft-conflict check, against `filmless emr serve`.

The gateway is configured to admit two modalities by name (``FILMLESS_GATEWAY_ALLOWED``), so the EMR
knows its stations from the environment, end to end. A physician posts the order form by hand (no
browser enforcing the datetime input's min/max) and through the JSON API with a bearer token: far
dates, a time zone offset that moves a time out of the window, a station in another case, with a
backslash or a control character, or not one of the gateway's. All are refused (422) and nothing
reaches the worklist. A draft saved from a stale tab, or with the form's draft hash tampered with,
gets the 409 and the draft keeps the other tab's text, on the document page and the reading page alike.
Through ``PUT /api/documents/{id}/draft`` the hash is no way around the author check: someone else's
draft is a 403 whatever ``base_sha256`` says (a 409 would confirm or deny a guess of the text).
"""

from __future__ import annotations

import html
import re
from datetime import datetime, time, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from emr.core.clock import local_today, to_utc
from emr.models import AuditEntry, Document, ImagingOrder, User
from tests.security.auth_support import SETUP, RunningEmr, csrf, make_record, make_users, running_emr


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {"FILMLESS_GATEWAY_ALLOWED": "CT01@127.0.0.1,MR01@10.1.2.4"}
    with running_emr(tmp_path_factory.mktemp("emr-order-entry"), env) as running:
        make_users(running, ("bacsi", "physician"), ("bschan", "radiologist"))
        yield running


def _orders(emr: RunningEmr, patient_id: int) -> list[tuple[str | None, datetime]]:
    factory = emr.session_factory()
    with factory() as s:
        rows = s.execute(select(ImagingOrder.station_ae_title, ImagingOrder.scheduled_at)
                         .where(ImagingOrder.patient_id == patient_id).order_by(ImagingOrder.id)).all()
    factory.kw["bind"].dispose()
    return [(a, b) for a, b in rows]


def _token(emr: RunningEmr, username: str) -> str:
    from emr.access.users import create_token

    factory = emr.session_factory()
    with factory() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
        token = create_token(s, SETUP, int(uid or 0), "máy trạm")
        s.commit()
    factory.kw["bind"].dispose()
    return token


def test_order_checks_hold_on_the_form_and_the_api(emr: RunningEmr) -> None:
    record = make_record(emr, "bacsi", "bschan", signed=False)
    pid = record.patient_id
    before = _orders(emr, pid)
    http, r = emr.login("bacsi")
    assert r.status_code == 302
    url = emr.url(f"/orders/new/{pid}")
    page = http.get(url, timeout=30).text
    assert 'list="stations"' in page and '<option value="CT01">' in page  # the stations from the environment
    token = csrf(page)
    base = {"csrf_token": token, "modality": "CT", "procedure_name": "CT sọ não", "urgency": "routine",
            "encounter_id": str(record.encounter_id)}
    today = local_today()
    for extra in ({"scheduled_at": "1900-01-01T08:00"}, {"scheduled_at": "9999-12-31T23:59"},
                  {"scheduled_at": f"{today - timedelta(days=1)}T23:59"},
                  {"scheduled_at": f"{today.replace(year=today.year + 2)}T08:00"},
                  {"station_ae_title": "ct 01 !@#"}, {"station_ae_title": "ct01"},
                  {"station_ae_title": "CT01\\MR01"}, {"station_ae_title": "CT\x1b01"},
                  {"station_ae_title": "MR02"}):
        r = http.post(url, data={**base, **extra}, allow_redirects=False, timeout=30)
        assert r.status_code == 422, (extra, r.status_code)
        assert re.search(r'class="error"', r.text), extra
    # The bearer API: same checks; an offset moving the time before today's facility midnight counts.
    h = {"Authorization": f"Bearer {_token(emr, 'bacsi')}"}
    body: dict[str, Any] = {"patient_id": pid, "encounter_id": record.encounter_id, "modality": "CT",
                            "procedure_name": "CT sọ"}
    early = (to_utc(datetime.combine(today, time.min)) - timedelta(seconds=1)).isoformat() + "Z"
    for extra in ({"scheduled_at": early}, {"scheduled_at": "9999-12-31T00:00:00+14:00"},
                  {"station_ae_title": "CT02"}, {"station_ae_title": "CT\u000001"}, {"station_ae_title": " "}):
        r = http.post(emr.url("/api/orders"), json={**body, **extra}, headers=h, timeout=30)
        assert r.status_code == 422, (extra, r.status_code, r.text[:300])
    assert _orders(emr, pid) == before  # nothing was placed, nothing reached the worklist
    r = http.post(url, data={**base, "station_ae_title": "MR01", "modality": "MR"}, allow_redirects=False,
                  timeout=30)
    assert r.status_code == 302
    r = http.post(emr.url("/api/orders"), json={**body, "station_ae_title": "CT01"}, headers=h, timeout=30)
    assert r.status_code == 201, r.text[:300]
    assert [a for a, _ in _orders(emr, pid)[len(before):]] == ["MR01", "CT01"]


def test_a_stale_or_tampered_draft_form_never_overwrites(emr: RunningEmr) -> None:
    record = make_record(emr, "bacsi", "bschan", signed=False)
    http, r = emr.login("bschan")
    assert r.status_code == 302
    url = emr.url(f"/documents/{record.report_id}/edit")

    def form(page: str, conclusion: str, **over: str) -> dict[str, str]:
        hidden = dict(re.findall(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)"', page))
        return {**hidden, "c_findings": "Không thấy tổn thương khu trú.", "c_conclusion": conclusion, **over}

    tab_a, tab_b = http.get(url, timeout=30).text, http.get(url, timeout=30).text
    tampered = form(tab_b, "Giả mạo", base_sha256="0" * 64)
    assert http.post(url, data=form(tab_a, "Thẻ A"), allow_redirects=False, timeout=30).status_code == 302
    for data in (form(tab_b, "Thẻ B"), tampered, form(tab_b, "Thẻ B", base_sha256="x")):
        r = http.post(url, data=data, allow_redirects=False, timeout=30)
        assert r.status_code == 409, r.status_code
        assert data["c_conclusion"] + "</textarea>" in html.unescape(r.text)
    factory = emr.session_factory()
    with factory() as s:
        doc = s.get(Document, record.report_id)
        assert doc is not None and len(doc.versions) == 1 and "Thẻ A" in doc.versions[0].content_json
        assert s.scalar(select(func.count()).select_from(Document).where(Document.patient_id == record.patient_id)) == 1
    factory.kw["bind"].dispose()


def test_the_draft_hash_is_no_way_around_the_author_check(emr: RunningEmr) -> None:
    record = make_record(emr, "bacsi", "bschan", signed=False)
    url = emr.url(f"/api/documents/{record.report_id}/draft")
    author = {"Authorization": f"Bearer {_token(emr, 'bschan')}"}
    other = {"Authorization": f"Bearer {_token(emr, 'bacsi')}"}
    shown = requests.get(emr.url(f"/api/documents/{record.report_id}"), headers=author, timeout=30) \
        .json()["versions"][0]["content_sha256"]
    forged = {"findings": "Nốt mờ 2 cm thùy trên phổi phải.", "conclusion": "U phổi."}
    for base in (shown, "0" * 64, None):  # the right hash, a guess, none: the same refusal
        body: dict[str, Any] = {"content": forged, **({"base_sha256": base} if base else {})}
        r = requests.put(url, json=body, headers=other, timeout=30)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (base, r.status_code, r.text[:300])
    factory = emr.session_factory()
    with factory() as s:
        denied = s.scalars(select(AuditEntry).where(
            AuditEntry.action == "document.edit", AuditEntry.outcome == "denied", AuditEntry.username == "bacsi",
            AuditEntry.object_id == str(record.report_id))).all()
        assert len(denied) == 3
    factory.kw["bind"].dispose()
    # The author: a stale hash is the 409, the current one saves.
    mine = {"findings": "Không thấy tổn thương khu trú.", "conclusion": "Bình thường."}
    r = requests.put(url, json={"content": mine, "base_sha256": "0" * 64}, headers=author, timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "document_changed", r.text[:300]
    r = requests.put(url, json={"content": mine, "base_sha256": shown}, headers=author, timeout=30)
    assert r.status_code == 200, r.text[:300]

    # The reading page's form: a tampered hash, or "there was no report", is the 409 too, the text kept.
    http, r = emr.login("bschan")
    assert r.status_code == 302
    page = http.get(emr.url(f"/reading/studies/{record.study_id}"), timeout=30).text
    hidden = dict(re.findall(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)"', page))
    assert hidden["base_sha256"] != shown  # the text the API saved
    for n, base in enumerate(("0" * 64, "", "x")):
        data = {**hidden, "base_sha256": base, "c_findings": "Giả mạo.", "c_conclusion": f"Giả mạo {n}"}
        r = http.post(emr.url(f"/reading/studies/{record.study_id}/report"), data=data, allow_redirects=False,
                      timeout=30)
        assert r.status_code == 409, (base, r.status_code)
        assert f"Giả mạo {n}</textarea>" in html.unescape(r.text)
    with factory() as s:
        doc = s.get(Document, record.report_id)
        assert doc is not None and len(doc.versions) == 1 and "Bình thường." in doc.versions[0].content_json
    factory.kw["bind"].dispose()
