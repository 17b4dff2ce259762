"""The signed report beside the images in the viewer, after an amendment and before the PDF reaches the PACS.

The signing workflow stores every fully signed version of a radiology report in its study as a DICOM
Encapsulated PDF, each in a series of its own with the same number and title. The viewer used to make one
disabled "Báo cáo (PDF)" entry per DOC series: after an amendment, two identical dead buttons, and while the
amendment's PDF was not stored yet, only the superseded version under the report's name. Now the EMR lists the
signed versions (``GET /reading/reports/<StudyInstanceUID>``) and the viewer shows one "Báo cáo (PDF)" link to
the version in force (the EMR's PDF route, which checks the role and the care scope and audits), the older
versions labelled as superseded.

Real EMR (SQLite), the session Orthanc, SoftHSM signing with the dev TSA, Debian chromium.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emr import create_app
from emr.access.audit import Actor
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.documents import service as documents
from emr.imaging import linking, orders
from emr.models import AuditEntry, Document, Study
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing import DevPki, DevPkiServer
from emr.signing import service as signing_service
from filmless.wiring import viewer_extension
from storage import OrthancStore, StorageUnavailable
from tests.helpers import skip_existing_changes
from tests.signing.test_workflow import token_keys  # noqa: F401 - fixture
from tests.signing_fixtures import TOKEN_LABEL, TOKEN_PIN, signing_emr_settings
from tests.viewer.browser import wait_until
from tests.viewer.phantom import make_ct_series
from tests.viewer.server import serve
from tests.viewer.test_emr_reading import CATALOGUE, PASSWORD, browser_login, http_login

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
SHOT = Path("/work/brief/shots/viewer_report.png")
FINDINGS_V1 = "Khối tăng tỷ trọng vùng đỉnh phải, đường kính 21 mm."
FINDINGS_V2 = "Khối tăng tỷ trọng vùng đỉnh phải, đường kính 12 mm (sửa số đo)."


@dataclass
class World:
    base: str
    app: Any
    sessions: Any
    study_uid: str
    doc_id: int
    reader: Actor


class _PacsDown:
    """An image store that refuses every upload (the PACS unreachable when the report is signed)."""

    def upload(self, data: bytes) -> Any:
        raise StorageUnavailable("PACS unreachable (test)")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    orthanc: OrthancStore,
    viewer_dist: Path,
    pki: DevPki,
    pki_server: DevPkiServer,
    token_keys: dict[str, str],  # noqa: F811
) -> Iterator[World]:
    """The EMR with viewer, proxy and signing; a linked CT with a radiology report draft (version 1)."""
    tmp = tmp_path_factory.mktemp("report-versions")
    settings = signing_emr_settings(tmp, pki, pki_server)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        k48 = encounters.ensure_department(s, "K48", "Khoa Chẩn đoán hình ảnh")
        encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
        k01 = encounters.ensure_department(s, "K01", "Khoa Khám bệnh")
        reader = create_user(
            s, SETUP, "radiologist1", PASSWORD, "radiologist", "BS. Trần Thị Bích Ngọc",
            department_id=k48.id, practising_cert_no="1/HCM-CCHN",
        )
        create_user(s, SETUP, "physician1", PASSWORD, "physician", "BS. Lê Văn Chỉ Định",
                    practising_cert_no="2/HCM-CCHN")
        # A physician of another department with no part in this patient's care.
        create_user(s, SETUP, "physician9", PASSWORD, "physician", "BS. Ngoài Khoa",
                    department_id=k01.id, practising_cert_no="9/HCM-CCHN")
        signing_service.register_token_key(s, SETUP, reader.id, TOKEN_LABEL, token_keys["radiologist"])
        s.commit()
        doctor = Actor(2, "physician1", "physician", "127.0.0.1")
        p = patients.create_patient(s, doctor, {"full_name": "Trần Văn Đức", "birth_date": "1958-11-02", "sex": "M"})
        enc = encounters.create_encounter(
            s, doctor, {"patient_id": p.id, "kind": "emergency", "department_code": "K19", "reason": "Đau đầu sau ngã",
                        "attending_username": "physician1"}
        )
        order = orders.create_order(
            s, doctor,
            {"patient_id": p.id, "encounter_id": enc.id, "modality": "CT", "procedure_name": "CT sọ não không tiêm"},
        )
        skip_existing_changes(s, orthanc)
        for blob in make_ct_series(count=4, study_uid=order.study_instance_uid).encoded():
            orthanc.upload(blob)
        assert linking.link_new_studies(s, orthanc).linked == 1
        assert s.scalars(select(Study).where(Study.study_instance_uid == order.study_instance_uid)).one()
        reader_actor = Actor(reader.id, "radiologist1", "radiologist", "127.0.0.1")
        doc = documents.create_document(
            s, reader_actor,
            {"encounter_id": enc.id, "form_type": "radiology_report", "order_id": order.id,
             "content": {"findings": FINDINGS_V1, "conclusion": "Máu tụ nhỏ vùng đỉnh phải."}},
        )
        ids = (order.study_instance_uid, doc.id)
    app = create_app(
        settings, store=orthanc, test_config={"EMR_ENGINE": engine}, extensions=[viewer_extension(orthanc)]
    )
    with serve(app) as base:
        app.extensions["emr.settings"] = replace(settings, public_url=base)
        yield World(base, app, sessions, *ids, reader_actor)
    engine.dispose()


def _sign(w: World, http: requests.Session) -> None:
    """The "Ký số" form as a browser submits it, with the token PIN."""
    url = f"{w.base}/signing/documents/{w.doc_id}/sign"
    form = http.get(url, timeout=20).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    shown = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', form)
    assert csrf, form[-2000:]
    data = {"csrf_token": csrf.group(1), "method": "pkcs11", "secret": TOKEN_PIN}
    if shown:
        data["content_sha256"] = shown.group(1)
    r = http.post(url, data=data, allow_redirects=False, timeout=60)
    assert r.status_code == 302, r.text[-2000:]


def _reports(w: World, http: requests.Session) -> list[dict[str, Any]]:
    r = http.get(f"{w.base}/reading/reports/{w.study_uid}", timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert "no-store" in r.headers["Cache-Control"]
    return r.json()["reports"]  # type: ignore[no-any-return]


def _doc_series(w: World, http: requests.Session) -> list[dict[str, Any]]:
    """The study's DOC series as the viewer's series list gets them through the proxy."""
    r = http.get(f"{w.base}/dicomweb/studies/{w.study_uid}/series", timeout=20)
    assert r.status_code == 200, r.text
    return [s for s in r.json() if s.get("00080060", {}).get("Value") == ["DOC"]]


def _side_entries(page: Any, w: World) -> list[dict[str, Any]]:
    """Open the study in the viewer (logged in) and read the entries after the thumbnails once the EMR answered."""
    page.goto(f"{w.base}/viewer/?study={w.study_uid}")
    state = wait_until(page, lambda s: s["ready"] or s["error"], what="first image or error")
    assert state["ready"] and state["error"] is None, state
    deadline = time.monotonic() + 20
    while not page.evaluate("() => window.filmlessViewer.reportsLoaded"):  # no wait_for_function: the CSP
        assert time.monotonic() < deadline, "the viewer never got the EMR's answer about the report"
        time.sleep(0.05)
    return page.evaluate(
        """() => [...document.querySelectorAll('#thumbnails .thumb.nonimage')].map((e) => ({
            tag: e.tagName.toLowerCase(), text: e.textContent.trim(), href: e.getAttribute('href'),
            target: e.getAttribute('target'), rel: e.getAttribute('rel'),
            disabled: Boolean(e.disabled), title: e.title, cls: e.className }))"""
    )


@pytest.fixture(scope="module")
def signed_v1_pacs_down(world: World) -> World:
    """Version 1 signed while the PACS refuses the upload: signed in the EMR, no PDF in the study."""
    config = world.app.extensions["emr.signing_config"]
    world.app.extensions["emr.signing_config"] = replace(config, store=_PacsDown())
    try:
        _sign(world, http_login(world.base, "radiologist1"))
    finally:
        world.app.extensions["emr.signing_config"] = config
    return world


@pytest.fixture(scope="module")
def amended(signed_v1_pacs_down: World) -> World:
    """Version 1 resent to the PACS, then amended and the amendment (version 2) signed and stored."""
    w = signed_v1_pacs_down
    with w.sessions() as s:
        assert signing_service.store_in_pacs(s, SETUP, w.doc_id, w.app.extensions["emr.signing_config"])
        documents.amend_document(
            s, w.reader, w.doc_id, {"findings": FINDINGS_V2, "conclusion": "Máu tụ nhỏ vùng đỉnh phải."},
            "Sửa số đo đường kính",
        )
    _sign(w, http_login(w.base, "radiologist1"))
    return w


def test_a_signed_report_not_yet_in_the_pacs_is_linked_from_the_emr(page: Any, signed_v1_pacs_down: World) -> None:
    w = signed_v1_pacs_down
    staff = http_login(w.base, "radiologist1")
    assert _doc_series(w, staff) == []  # nothing in the study yet
    [v1] = _reports(w, staff)
    assert v1["version"] == 1 and v1["current"] is True and v1["in_pacs"] is False and v1["sop_instance_uid"] is None
    assert v1["url"] == f"/signing/documents/{w.doc_id}/versions/1/pdf?inline=1"
    browser_login(page, w.base, "radiologist1")
    entries = _side_entries(page, w)
    assert [(e["tag"], e["text"], e["href"]) for e in entries] == [
        ("a", CATALOGUE["viewer.series.document"], v1["url"])
    ], entries
    assert page.page_errors == []


def test_an_amended_report_gives_one_link_to_the_version_in_force(page: Any, amended: World) -> None:
    w = amended
    staff = http_login(w.base, "radiologist1")
    # The cause: the PACS holds one Encapsulated PDF series per signed version, alike.
    docs = _doc_series(w, staff)
    assert len(docs) == 2, docs
    alike = {tuple(d.get(tag, {}).get("Value", [None])[0] for tag in ("00200011", "0008103E")) for d in docs}
    assert len(alike) == 1, alike
    reports = _reports(w, staff)
    assert [(r["version"], r["current"], r["in_pacs"]) for r in reports] == [(2, True, True), (1, False, True)]
    with w.sessions() as s:
        doc = s.get(Document, w.doc_id)
        stored = {v.number: signing_service.artifact_for(s, v.id) for v in doc.versions}
        assert {r["version"]: r["sop_instance_uid"] for r in reports} == {
            n: a.pacs_sop_instance_uid for n, a in stored.items()
        }
        pdf_v2 = bytes(stored[2].pdf)

    browser_login(page, w.base, "radiologist1")
    entries = _side_entries(page, w)
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT))
    report_label = CATALOGUE["viewer.series.document"]
    assert [e for e in entries if e["disabled"]] == [], entries  # no dead button left for the DOC series
    current = [e for e in entries if e["text"] == report_label]
    assert len(current) == 1, entries
    assert current[0]["tag"] == "a" and current[0]["href"] == f"/signing/documents/{w.doc_id}/versions/2/pdf?inline=1"
    superseded = CATALOGUE["viewer.report.superseded"].replace("{version}", "1")
    assert superseded == "Bản cũ — phiên bản 1 (đã được thay thế)"  # the old one, replaced (the chart's words)
    assert [(e["tag"], e["text"], e["href"]) for e in entries] == [
        ("a", report_label, f"/signing/documents/{w.doc_id}/versions/2/pdf?inline=1"),
        ("a", superseded, f"/signing/documents/{w.doc_id}/versions/1/pdf?inline=1"),
    ], entries
    assert "superseded" in entries[1]["cls"] and "current" in entries[0]["cls"]
    # Opened in a tab of its own (the images stay), shown there rather than saved.
    assert all(e["target"] == "_blank" and e["rel"] == "noopener" for e in entries), entries

    # The link opens the version in force through the EMR, audited as a reading of the document.
    def views() -> int:
        with w.sessions() as s:
            return len(s.scalars(
                select(AuditEntry).where(AuditEntry.action == "document.view", AuditEntry.object_id == str(w.doc_id),
                                         AuditEntry.username == "radiologist1")
            ).all())

    before = views()
    r = staff.get(f"{w.base}{current[0]['href']}", timeout=20)
    assert r.status_code == 200 and r.content == pdf_v2 and r.headers["Content-Type"] == "application/pdf"
    assert r.headers["Content-Disposition"] == f'inline; filename="document-{w.doc_id}-v2.pdf"'
    assert views() == before + 1, "opening the report PDF is audited"
    download = staff.get(f"{w.base}/signing/documents/{w.doc_id}/versions/2/pdf", timeout=20)  # the document page's
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert page.page_errors == []


def test_a_user_outside_the_patients_care_gets_neither_the_list_nor_the_pdf(amended: World) -> None:
    w = amended
    outsider = http_login(w.base, "physician9")
    r = outsider.get(f"{w.base}/reading/reports/{w.study_uid}", timeout=10)
    assert r.status_code == 403 and "/signing/documents/" not in r.text
    for n in (1, 2):
        pdf = outsider.get(f"{w.base}/signing/documents/{w.doc_id}/versions/{n}/pdf", timeout=10)
        assert pdf.status_code == 403 and b"%PDF" not in pdf.content
