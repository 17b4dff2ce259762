"""Issue 10, item 4: printing a share slip is no way around the role matrix.

A slip's link opens the study's images, its ZIP and the signed report. A
records clerk (no ``image.view``) and a technician (no ``document.read``)
must not create one — by the form, by replaying the POST, or through the
service — and every refusal is audited. A reader may, for a patient in their
care; the clerk may still list and revoke slips at the desk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from emr.access.audit import Actor
from emr.core.exceptions import PermissionDenied
from emr.models import AuditEntry, ShareLink, User
from emr.sharing import service as sharing
from storage import OrthancStore
from tests.security.access_world import AccessWorld, build_world, csrf_from, http_login, print_slip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    yield from build_world(tmp_path_factory.mktemp("access-slips"), orthanc)


def _links(world: AccessWorld) -> int:
    with world.sessions() as s:
        return s.scalar(select(func.count(ShareLink.id))) or 0


@pytest.mark.parametrize("username", ["luutru", "ktv"])
def test_roles_that_cannot_see_everything_a_slip_grants_cannot_print_one(world: AccessWorld, username: str) -> None:
    before = _links(world)
    http = http_login(world.base, username)
    # The desk page still opens for listing and revoking (share.manage) but offers no print button.
    page = http.get(f"{world.base}/reading/studies/{world.a.study_id}/share", timeout=10)
    if page.status_code == 200:
        assert 'id="print-slip"' not in page.text
    # Replay the form's POST directly (any CSRF token of the session will do).
    token = csrf_from(http, f"{world.base}/")
    r = http.post(
        f"{world.base}/reading/studies/{world.a.study_id}/share", data={"csrf_token": token, "days": "30"}, timeout=20
    )
    assert r.status_code == 403 and not r.content.startswith(b"%PDF")
    assert _links(world) == before
    with world.sessions() as s:
        denied = s.scalars(
            select(AuditEntry).where(
                AuditEntry.username == username, AuditEntry.action == "share.create", AuditEntry.outcome == "denied"
            )
        ).all()
        assert denied, "the refusal is audited"
        user = s.scalars(select(User).where(User.username == username)).one()
        # The service refuses too (an API or a future view cannot forget the check).
        with pytest.raises(PermissionDenied):
            sharing.create_share_link(s, Actor(user.id, username, user.role, "127.0.0.1"), world.a.study_id)
    assert _links(world) == before


def test_a_reader_prints_only_for_patients_in_their_care_and_the_clerk_still_revokes(world: AccessWorld) -> None:
    doctor = http_login(world.base, "bs_a")
    assert print_slip(world, doctor, world.a).status_code == 200
    before = _links(world)
    # Patient B is not in bs_a's care: no slip (and no study page).
    token = csrf_from(doctor, f"{world.base}/")
    r = doctor.post(
        f"{world.base}/reading/studies/{world.b.study_id}/share", data={"csrf_token": token, "days": "30"}, timeout=20
    )
    assert r.status_code == 403 and _links(world) == before
    clerk = http_login(world.base, "luutru")
    with world.sessions() as s:
        link_id = s.scalar(select(func.max(ShareLink.id)))
    token = csrf_from(clerk, f"{world.base}/reading/studies/{world.a.study_id}/share")
    r = clerk.post(f"{world.base}/reading/shares/{link_id}/revoke", data={"csrf_token": token}, timeout=10)
    assert r.status_code == 200
    with world.sessions() as s:
        assert s.get(ShareLink, link_id).revoked_at is not None


def test_a_validity_out_of_range_or_not_a_number_prints_no_slip(world: AccessWorld) -> None:
    """Walkthrough 2: -5 or 99999 typed past the field's min/max printed a slip valid 30 days (only 0 was refused).

    Whatever is posted, the link lives 1 to 365 days or there is no link; the care scope is checked first."""
    doctor = http_login(world.base, "bs_a")
    token = csrf_from(doctor, f"{world.base}/reading/studies/{world.a.study_id}/share")
    before = _links(world)
    for days in ("-5", "99999", "0", "366", "abc", "", "1e3", "30.5", "0x10", "9" * 40, "٣٠"):
        r = doctor.post(f"{world.base}/reading/studies/{world.a.study_id}/share",
                        data={"csrf_token": token, "days": days}, timeout=20)
        assert r.status_code == 409 and not r.content.startswith(b"%PDF"), days
        assert "Số ngày hiệu lực phải từ 1 đến 365." in r.text, days
    r = doctor.post(f"{world.base}/reading/studies/{world.b.study_id}/share",
                    data={"csrf_token": token, "days": "-5"}, timeout=20)
    assert r.status_code == 403  # not in bs_a's care: refused as such, whatever the days
    assert _links(world) == before
    r = doctor.post(f"{world.base}/reading/studies/{world.a.study_id}/share",
                    data={"csrf_token": token, "days": " 365 "}, timeout=20)
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    with world.sessions() as s:
        link = s.scalars(select(ShareLink).order_by(ShareLink.id.desc()).limit(1)).one()
        assert (link.expires_at - link.created_at).days == 365
