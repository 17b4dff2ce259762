"""A refused request's audit row keeps the whole path it asked for: the object id column holds 64
characters, and a trust anchor's withdrawal route alone is longer (its SHA-256 fingerprint), so the
fingerprint a clinician tried to withdraw was cut off the record."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.models import AuditEntry

from .conftest import World, login


def test_a_refused_requests_whole_path_is_in_the_audit_row(client: FlaskClient, session: Session,
                                                           world: World) -> None:
    session.rollback()
    sha = "ab" * 32
    path = f"/network/trust-anchors/{sha}/withdraw"
    login(client, "physician1")
    assert client.get(path).status_code == 403
    session.expire_all()
    row = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied", AuditEntry.object_type == "route")
                          .order_by(AuditEntry.id.desc())).first()
    assert row is not None and row.username == "physician1"
    assert row.object_id == path[:64] and sha not in (row.object_id or "")
    assert f'"path": "{path}"' in (row.details or "")
