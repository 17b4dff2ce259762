"""Documents with only some of their required signatures are "signing", not "signed"

A discharge paper is signed by the treating physician and then the head of
department (emr.signing.service.slots_for). Until 0021 the first signature
marked the version and its document "signed" and set ``signed_at`` /
``signed_by``; the chart, the HSBA export (``da_ky``) and FHIR (docStatus
final) then called it signed while the head's signature was still missing.
Now a version is locked at its first signature but "signing" (and a first
version's document too) until the last required signature, and only then
gets ``signed_at`` / ``signed_by``.

Data only, no schema change: versions whose signed PDF still lacks signatures
(``signed_artifacts.complete`` false) lose the ``signed_at`` / ``signed_by``
of their first signature (each signature's own time and signer stay in
``document_signatures``) and, if "signed", become "signing"; their documents
become "signing" (a first version) or "amended" (an earlier signed version
stays in force), the same for ``status_before_cancel`` of cancelled ones.


Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_versions = sa.table(
    "document_versions",
    sa.column("id", sa.Integer),
    sa.column("document_id", sa.Integer),
    sa.column("number", sa.Integer),
    sa.column("status", sa.String),
    sa.column("locked", sa.Boolean),
    sa.column("signed_at", sa.DateTime),
    sa.column("signed_by", sa.Integer),
)
_documents = sa.table(
    "documents",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("status_before_cancel", sa.String),
    sa.column("current_version", sa.Integer),
)
_artifacts = sa.table("signed_artifacts", sa.column("version_id", sa.Integer), sa.column("complete", sa.Boolean))
_signatures = sa.table(
    "document_signatures",
    sa.column("version_id", sa.Integer),
    sa.column("order_index", sa.Integer),
    sa.column("signer_id", sa.Integer),
    sa.column("signed_at", sa.DateTime),
)


def _current_is(status: str) -> sa.ColumnElement[bool]:
    """The document's current version has ``status``."""
    v = _versions.alias("current")
    return sa.exists().where(
        v.c.document_id == _documents.c.id, v.c.number == _documents.c.current_version, v.c.status == status
    )


def upgrade() -> None:
    partial = sa.select(_artifacts.c.version_id).where(_artifacts.c.complete == sa.false())
    op.execute(
        _versions.update()
        .where(_versions.c.id.in_(partial), _versions.c.locked == sa.true())
        .values(signed_at=None, signed_by=None)
    )
    op.execute(
        _versions.update().where(_versions.c.id.in_(partial), _versions.c.status == "signed").values(status="signing")
    )
    earlier = _versions.alias("earlier")
    amended = sa.exists().where(
        earlier.c.document_id == _documents.c.id,
        earlier.c.number < _documents.c.current_version,
        earlier.c.locked == sa.true(),
    )
    standing = sa.case((amended, "amended"), else_="signing")
    op.execute(
        _documents.update().where(_documents.c.status == "signed", _current_is("signing")).values(status=standing)
    )
    op.execute(
        _documents.update()
        .where(
            _documents.c.status == "cancelled", _documents.c.status_before_cancel == "signed", _current_is("signing")
        )
        .values(status_before_cancel=standing)
    )


def downgrade() -> None:
    first = _signatures.alias("first")

    def first_signature(column: sa.ColumnElement[object]) -> sa.ScalarSelect[object]:
        return (
            sa.select(column)
            .where(first.c.version_id == _versions.c.id, first.c.order_index == 1)
            .scalar_subquery()
        )

    partial = sa.select(_artifacts.c.version_id).where(_artifacts.c.complete == sa.false())
    op.execute(
        _versions.update()
        .where(_versions.c.id.in_(partial), _versions.c.locked == sa.true(), _versions.c.signed_at.is_(None))
        .values(signed_at=first_signature(first.c.signed_at), signed_by=first_signature(first.c.signer_id))
    )
    # Before 0021 the first signature made the document "signed", an amendment's too.
    op.execute(
        _documents.update().where(_documents.c.status.in_(("signing", "amended")), _current_is("signing"))
        .values(status="signed")
    )
    op.execute(
        _documents.update()
        .where(_documents.c.status == "cancelled", _documents.c.status_before_cancel.in_(("signing", "amended")),
               _current_is("signing"))
        .values(status_before_cancel="signed")
    )
    op.execute(_versions.update().where(_versions.c.status == "signing").values(status="signed"))
