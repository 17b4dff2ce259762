"""network sites: send by STOW-RS (DICOMweb) instead of C-STORE, with the site's DICOMweb credentials

Issue 15 §1: a facility whose archive takes studies only over DICOMweb (no DICOM port),
or that prefers it, gets studies and signed reports by STOW-RS. ``send_by`` is the
per-site choice ("dicom" | "stow"); the user name and password are what that
archive's DICOMweb service asks for (HTTP Basic); both are sent, so kept, like the
inter-site token.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network_sites") as batch:
        batch.add_column(sa.Column("send_by", sa.String(8), nullable=False, server_default="dicom"))
        batch.add_column(sa.Column("dicomweb_username", sa.String(64), nullable=True))
        batch.add_column(sa.Column("dicomweb_password", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("network_sites") as batch:
        batch.drop_column("dicomweb_password")
        batch.drop_column("dicomweb_username")
        batch.drop_column("send_by")
