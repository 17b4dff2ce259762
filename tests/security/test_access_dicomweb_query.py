"""Issue 10, item 1: no DICOMweb query key widens access beyond the studies the caller may open.

Real EMR, real Orthanc, real HTTP. Each attack is tried with a patient's
share token and as every clinical role: empty duplicate study keys, tag-number
aliases, includefield, fuzzy matching, wildcards, series/instance searches
without a study, and WADO paths that name another study's series or instance
under an allowed study. Nothing may come back that belongs to another study.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from storage import OrthancStore
from tests.security.access_world import AccessWorld, build_world, http_login, print_slip, share_token

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    yield from build_world(tmp_path_factory.mktemp("access-dicomweb"), orthanc)


@pytest.fixture(scope="module")
def callers(world: AccessWorld) -> dict[str, dict[str, Any]]:
    """name -> requests keyword arguments (session cookie or share-token header) for patient A's study."""
    out: dict[str, dict[str, Any]] = {}
    for username in ("bs_a", "bschan", "ktv"):
        out[username] = {"session": http_login(world.base, username)}
    slip = print_slip(world, out["bschan"]["session"], world.a)
    assert slip.status_code == 200, slip.text[:300]
    out["share"] = {"session": requests.Session(), "headers": {"X-Share-Token": share_token(world, slip.content)}}
    return out


def _get(caller: dict[str, Any], url: str) -> requests.Response:
    return caller["session"].get(url, headers=caller.get("headers", {}), timeout=30)


def _leaks(world: AccessWorld, r: requests.Response) -> list[str]:
    body = r.text
    found = [
        marker
        for marker in (
            world.b.study_uid,
            world.b.patient_code,
            world.stranger_study_uid,
            world.stranger_patient_id,
            "Người Lạ",
            "Trần",
        )
        if marker in body
    ]
    return found


def _attacks(world: AccessWorld) -> list[str]:
    a, b = world.a, world.b
    root = f"{world.base}/dicomweb"
    own = a.study_uid
    return [
        # The probe's finding: an empty second study key.
        f"{root}/studies?StudyInstanceUID={own}&0020000D=",
        f"{root}/studies?StudyInstanceUID={own}&0020000D={b.study_uid}",
        f"{root}/studies?StudyInstanceUID={own}&StudyInstanceUID=",
        f"{root}/studies?StudyInstanceUID={own}&studyinstanceuid=",
        f"{root}/studies?StudyInstanceUID={own}&PatientID=*",
        f"{root}/studies?StudyInstanceUID={own}&fuzzymatching=true&PatientName=Tr*",
        f"{root}/studies?StudyInstanceUID={own}&includefield=all",
        f"{root}/studies?0020000D={b.study_uid}",
        f"{root}/studies?StudyInstanceUID={own},{b.study_uid}",
        f"{root}/studies?StudyInstanceUID={own}%5C{b.study_uid}",
        # Series/instance level under the allowed study, with keys that name another.
        f"{root}/studies/{own}/series?0020000D=",
        f"{root}/studies/{own}/series?StudyInstanceUID={b.study_uid}",
        f"{root}/studies/{own}/series?0020000D={b.study_uid}",
        f"{root}/studies/{own}/series?SeriesInstanceUID={b.series_uid}",
        f"{root}/studies/{own}/series?includefield=00100020&0020000D=",
        f"{root}/studies/{own}/instances?0020000D=",
        f"{root}/studies/{own}/instances?StudyInstanceUID={b.study_uid}",
        f"{root}/studies/{own}/series/{a.series_uid}/instances?0020000E=&0020000D=",
        f"{root}/studies/{own}/series/{b.series_uid}/instances",
        # Searches without a study.
        f"{root}/series",
        f"{root}/instances",
        f"{root}/series?0020000D=",
        f"{root}/studies",
        f"{root}/studies?PatientName=*",
        # WADO paths naming B's series / instance under A's study.
        f"{root}/studies/{own}/series/{b.series_uid}/metadata",
        f"{root}/studies/{own}/series/{b.series_uid}",
        f"{root}/studies/{own}/series/{b.series_uid}/instances/{b.sop_uids[0]}",
        f"{root}/studies/{own}/series/{b.series_uid}/instances/{b.sop_uids[0]}/frames/1",
        f"{root}/studies/{own}/series/{a.series_uid}/instances/{b.sop_uids[0]}/frames/1",
        f"{root}/studies/{own}/series/{a.series_uid}/instances/{b.sop_uids[0]}/metadata",
        f"{root}/studies/{own}/series/{b.series_uid}/instances/{b.sop_uids[0]}/rendered",
        f"{root}/studies/{own}/series/{a.series_uid}/instances/{a.sop_uids[0]}/bulk/7FE00010?0020000D=",
        # Other studies directly.
        f"{root}/studies/{b.study_uid}/series",
        f"{root}/studies/{b.study_uid}/metadata",
        f"{root}/studies/{world.stranger_study_uid}/series",
        f"{root}/studies/{world.stranger_study_uid}",
    ]


@pytest.mark.parametrize("who", ["share", "bs_a", "bschan", "ktv"])
def test_no_query_key_or_path_widens_access(world: AccessWorld, callers: dict[str, dict[str, Any]], who: str) -> None:
    caller = callers[who]
    # The caller does see their own study (the attacks below are not refused for lack of access).
    r = _get(caller, f"{world.base}/dicomweb/studies?StudyInstanceUID={world.a.study_uid}")
    assert r.status_code == 200, (who, r.status_code, r.text[:200])
    assert [i["0020000D"]["Value"][0] for i in r.json()] == [world.a.study_uid]
    leaked = {}
    for url in _attacks(world):
        r = _get(caller, url)
        found = _leaks(world, r)
        if found or r.status_code >= 500:
            leaked[url] = (r.status_code, found)
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/dicom+json"):
            uids = {i.get("0020000D", {}).get("Value", [None])[0] for i in r.json()}
            assert uids <= {world.a.study_uid}, (url, uids)
    assert leaked == {}, f"{who}: {leaked}"


@pytest.mark.parametrize("who", ["share", "bs_a", "bschan", "ktv"])
def test_own_study_still_works_for_the_viewer(world: AccessWorld, callers: dict[str, dict[str, Any]], who: str) -> None:
    caller = callers[who]
    a = world.a
    root = f"{world.base}/dicomweb/studies/{a.study_uid}"
    series = _get(caller, f"{root}/series")
    assert series.status_code == 200
    assert a.series_uid in {s["0020000E"]["Value"][0] for s in series.json()}
    meta = _get(caller, f"{root}/series/{a.series_uid}/metadata")
    assert meta.status_code == 200 and len(meta.json()) == len(a.sop_uids)
    one = _get(caller, f"{root}/series/{a.series_uid}/instances?limit=1")
    assert one.status_code == 200 and len(one.json()) == 1
    frame = caller["session"].get(
        f"{root}/series/{a.series_uid}/instances/{a.sop_uids[0]}/frames/1",
        headers={**caller.get("headers", {}), "Accept": FRAME_ACCEPT},
        timeout=30,
    )
    assert frame.status_code == 200 and frame.headers["Content-Type"].startswith("multipart/related")
    rendered = _get(caller, f"{root}/series/{a.series_uid}/instances/{a.sop_uids[0]}/rendered")
    assert rendered.status_code == 200


def test_unknown_query_keys_are_refused_not_ignored(world: AccessWorld, callers: dict[str, dict[str, Any]]) -> None:
    caller = callers["bs_a"]
    root = f"{world.base}/dicomweb/studies/{world.a.study_uid}"
    for url in (
        f"{root}/series?0020000D=",
        f"{root}/series?StudyInstanceUID={world.a.study_uid}",
        f"{root}/series?fuzzymatching=true",
        f"{root}/series?Modality=C*",
        f"{root}/series?includefield=all",
        f"{world.base}/dicomweb/studies?StudyInstanceUID={world.a.study_uid}&0020000D=",
    ):
        r = _get(caller, url)
        assert (r.status_code, r.json()) == (400, {"error": "bad_query"}), url
