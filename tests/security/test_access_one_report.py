"""One radiology report per exam: every way of getting a second report in is refused.

Real HTTP against `filmless emr serve` (SQLite, several request threads). The exam has a signed report by
the radiologist; a physician, the head of department and another radiologist then try to add a second one:
through the JSON API, through the document form with the order named in the posted form (the page no longer
offers it), through the reading page; then, on an exam whose report was cancelled, six writers post the
first report at the same moment through the form, the API and the reading page. Exactly one report is in
force for the exam at every step, and the refusals point to it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from emr.access.audit import Actor
from emr.models import Document, User
from tests.security.auth_support import SETUP, RunningEmr, csrf, make_record, make_users, running_emr

SECOND = {"findings": "Khối choán chỗ thùy trán phải.", "conclusion": "U não, đề nghị MRI."}


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_emr(tmp_path_factory.mktemp("emr-one-report")) as running:
        make_users(running, ("bacsi", "physician"), ("truongkhoa", "physician"), ("bschan", "radiologist"),
                   ("bskhac", "radiologist"), ("bsthu", "radiologist"), ("bsnam", "radiologist"))
        factory = running.session_factory()
        with factory() as s:
            head = s.scalar(select(User).where(User.username == "truongkhoa"))
            assert head is not None
            head.is_department_head = True
            s.commit()
        factory.kw["bind"].dispose()
        yield running


def _db(emr: RunningEmr, fn: Any) -> Any:
    factory = emr.session_factory()
    with factory() as s:
        out = fn(s)
    factory.kw["bind"].dispose()
    return out


def _live(emr: RunningEmr, order_id: int) -> list[int]:
    return _db(emr, lambda s: list(s.scalars(select(Document.id).where(
        Document.order_id == order_id, Document.form_type == "radiology_report", Document.status != "cancelled"))))


def _token(emr: RunningEmr, username: str) -> str:
    from emr.access.users import create_token

    def make(s: Any) -> str:
        uid = s.scalar(select(User.id).where(User.username == username))
        return str(create_token(s, SETUP, uid, "máy trạm"))

    return str(_db(emr, make))


def _form(record: Any) -> dict[str, str]:
    return {"encounter_id": str(record.encounter_id), "order_id": str(record.order_id),
            "c_findings": SECOND["findings"], "c_conclusion": SECOND["conclusion"]}


def _api(emr: RunningEmr, token: str, record: Any) -> requests.Response:
    return requests.post(emr.url("/api/documents"), headers={"Authorization": f"Bearer {token}"}, timeout=60, json={
        "encounter_id": record.encounter_id, "form_type": "radiology_report", "order_id": record.order_id,
        "content": SECOND})


def test_no_second_report_for_an_exam_with_a_signed_one(emr: RunningEmr) -> None:
    record = make_record(emr, "bacsi", "bschan", signed=True)
    documents_before = _db(emr, lambda s: s.scalar(select(func.count(Document.id))))

    # The JSON API, for each role that may write documents.
    for username in ("bacsi", "truongkhoa", "bskhac", "bschan"):
        r = _api(emr, _token(emr, username), record)
        assert r.status_code == 409, (username, r.status_code, r.text)
        body = r.json()
        assert body["error"] == "report_exists"
        assert body["existing_document"] == {"id": record.report_id, "status": "signed"}

    # The form: the chart offers "Xem kết quả" only; the order is put into the posted form by hand, also with
    # leading zeros, and on the page without the order in its address.
    for username in ("bacsi", "truongkhoa", "bskhac"):
        http, r = emr.login(username)
        assert r.status_code == 302
        chart = http.get(emr.url(f"/patients/{record.patient_id}"), timeout=30).text
        assert "Viết kết quả" not in chart and f'href="/documents/{record.report_id}">Xem kết quả' in chart
        for url in (f"/patients/{record.patient_id}/documents/new?form_type=radiology_report",
                    f"/patients/{record.patient_id}/documents/new?form_type=radiology_report"
                    f"&order_id={record.order_id}"):
            token = csrf(http.get(emr.url(url), timeout=30).text)
            for order_id in (str(record.order_id), f"000{record.order_id}"):
                r = http.post(emr.url(url), data={**_form(record), "order_id": order_id, "csrf_token": token},
                              allow_redirects=False, timeout=30)
                assert r.status_code == 409, (username, url, order_id, r.status_code)
                assert f"văn bản số {record.report_id}" in r.text and "Tạo bản sửa đổi" in r.text

    # The reading page of another radiologist: the signed report is shown, never replaced by a new one.
    http, _ = emr.login("bskhac")
    page = http.get(emr.url(f"/reading/studies/{record.study_id}"), timeout=30).text
    token = csrf(page)
    r = http.post(emr.url(f"/reading/studies/{record.study_id}/report"),
                  data={**_form(record), "csrf_token": token}, allow_redirects=False, timeout=30)
    assert r.status_code in (403, 409, 422), r.status_code  # a signed version is amended, never saved over

    assert _live(emr, record.order_id) == [record.report_id]
    assert _db(emr, lambda s: s.scalar(select(func.count(Document.id)))) == documents_before


def test_six_writers_at_once_make_one_report(emr: RunningEmr) -> None:
    from emr.documents import service as documents

    record = make_record(emr, "bacsi", "bschan", signed=False)

    def cancel(s: Any) -> None:
        author = s.scalar(select(User).where(User.username == "bschan"))
        documents.cancel_document(s, Actor(author.id, "bschan", "radiologist", "127.0.0.1"), record.report_id,
                                  "viết nhầm ca")

    _db(emr, cancel)
    assert _live(emr, record.order_id) == []
    new_url = emr.url(f"/patients/{record.patient_id}/documents/new?form_type=radiology_report")
    read_url = emr.url(f"/reading/studies/{record.study_id}")
    calls: list[Any] = []
    for username, way in (("bschan", "form"), ("bskhac", "form"), ("bsthu", "api"), ("bacsi", "api"),
                          ("truongkhoa", "reading"), ("bsnam", "reading")):
        if way == "api":
            token = _token(emr, username)
            calls.append(lambda token=token: _api(emr, token, record))
            continue
        http, _ = emr.login(username)
        page = http.get(new_url if way == "form" else read_url, timeout=30).text
        target = new_url if way == "form" else read_url + "/report"
        token = csrf(page)
        calls.append(lambda http=http, target=target, token=token: http.post(
            target, data={**_form(record), "csrf_token": token}, allow_redirects=False, timeout=60))

    start = threading.Barrier(len(calls))
    codes: list[int] = []

    def run(call: Any) -> None:
        start.wait()
        codes.append(call().status_code)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for th in threads:
        th.start()
    for th in threads:
        th.join(90)
    created = [c for c in codes if c in (201, 302)]  # six different writers: no one edits their own draft
    assert len(codes) == 6 and len(created) == 1, codes
    # Refused: the exam's report exists (409), or the reading page would edit another's draft (422, 403).
    assert all(c in (201, 302, 403, 409, 422) for c in codes), codes
    assert len(_live(emr, record.order_id)) == 1
