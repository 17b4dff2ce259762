"""Issue 10, item 3: a technician (no ``document.read``) reads no report content anywhere.

Not on the reading page beside the images, not through the signed PDF stored
in the study as an Encapsulated PDF (DOC series) over /dicomweb: not in the
series or instance lists, not in metadata, not by retrieving the series, the
instance or the whole study. Roles that may read reports still see all of it,
and every showing of report content on the reading page is audited.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select

from emr.models import AuditEntry
from storage import OrthancStore
from tests.security.access_world import REPORT_TEXT, AccessWorld, build_world, http_login, print_slip, share_token


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    yield from build_world(tmp_path_factory.mktemp("access-reports"), orthanc)


def _doc_paths(world: AccessWorld) -> list[str]:
    a = world.a
    root = f"{world.base}/dicomweb/studies/{a.study_uid}"
    doc = f"{root}/series/{a.doc_series_uid}"
    return [
        f"{doc}/metadata",
        doc,
        f"{doc}/instances",
        f"{doc}/instances/{a.doc_sop_uid}",
        f"{doc}/instances/{a.doc_sop_uid}/metadata",
        f"{doc}/instances/{a.doc_sop_uid}/bulk/00420011",
        f"{doc}/instances/{a.doc_sop_uid}/rendered",
        f"{doc}/rendered",
        root,  # the whole study carries the PDF too
        f"{root}/rendered",
    ]


def test_technician_sees_no_report_on_the_reading_page(world: AccessWorld) -> None:
    ktv = http_login(world.base, "ktv")
    r = ktv.get(f"{world.base}/reading/studies/{world.a.study_id}", timeout=10)
    assert r.status_code == 200  # the images, yes: the technician checks the acquisition
    assert REPORT_TEXT not in r.text and "Viêm phổi thùy dưới phải" not in r.text
    assert 'id="report-hidden"' in r.text
    # The document itself stays closed to the role.
    assert ktv.get(f"{world.base}/documents/{world.a.doc_id}", timeout=10).status_code == 403
    assert ktv.get(f"{world.base}/signing/documents/{world.a.doc_id}/versions/1/pdf", timeout=10).status_code == 403


def test_technician_gets_no_report_object_over_dicomweb(world: AccessWorld) -> None:
    ktv = http_login(world.base, "ktv")
    a = world.a
    root = f"{world.base}/dicomweb/studies/{a.study_uid}"
    series = ktv.get(f"{root}/series", timeout=30)
    assert series.status_code == 200
    listed = {s["0020000E"]["Value"][0] for s in series.json()}
    assert listed == {a.series_uid}, "the DOC series must not be listed"
    for url in (f"{root}/instances", f"{root}/metadata", f"{root}/series?Modality=DOC"):
        r = ktv.get(url, timeout=30)
        assert r.status_code in (200, 404), (url, r.status_code)
        if r.status_code == 200:
            assert a.doc_sop_uid not in r.text and a.doc_series_uid not in r.text, url
    for url in _doc_paths(world):
        r = ktv.get(url, timeout=30)
        # Refused, or (a search) answered with nothing.
        assert r.status_code in (403, 404) or (r.status_code == 200 and r.json() == []), (url, r.status_code)
        assert REPORT_TEXT.encode("utf-8") not in r.content and b"%PDF" not in r.content, url
    # The images still open.
    meta = ktv.get(f"{root}/series/{a.series_uid}/metadata", timeout=30)
    assert meta.status_code == 200 and len(meta.json()) == len(a.sop_uids)


def test_report_readers_and_share_links_still_get_the_report(world: AccessWorld) -> None:
    a = world.a
    root = f"{world.base}/dicomweb/studies/{a.study_uid}"
    doctor = http_login(world.base, "bs_a")
    listed = {s["0020000E"]["Value"][0] for s in doctor.get(f"{root}/series", timeout=30).json()}
    assert listed == {a.series_uid, a.doc_series_uid}
    pdf = doctor.get(f"{root}/series/{a.doc_series_uid}/instances/{a.doc_sop_uid}", timeout=30)
    assert pdf.status_code == 200 and REPORT_TEXT.encode("utf-8") in pdf.content
    page = doctor.get(f"{world.base}/reading/studies/{a.study_id}", timeout=10)
    assert page.status_code == 200 and REPORT_TEXT in page.text
    with world.sessions() as s:
        views = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "document.view", AuditEntry.username == "bs_a")
        ).all()
    assert any(v.object_id == str(a.doc_id) and '"via":"reading"' in v.details.replace(" ", "") for v in views)
    # The PDF fetched over DICOMweb is a read of the report too: audited each time.
    assert sum('"via":"dicomweb"' in v.details.replace(" ", "") for v in views) >= 1
    # The patient's slip shows the signed report, so its token sees the DOC series.
    slip = print_slip(world, doctor, a)
    assert slip.status_code == 200
    token = share_token(world, slip.content)
    shared = requests.get(f"{root}/series", headers={"X-Share-Token": token}, timeout=30)
    assert a.doc_series_uid in {s["0020000E"]["Value"][0] for s in shared.json()}
