"""network_sites.signing_ca_sha256: the signing CA another facility's reports chain to

A report signed at another site and sent back showed "chain not trusted" until someone imported that
site's CA by hand, elsewhere (``filmless pki import-anchor``). Registering or editing a site now
attaches its CA certificate: after the admin confirms its SHA-256 fingerprint with the other hospital
by phone, it goes into the one trust store (``emr.signing.pki.import_trust_anchor``) and this column
keeps the fingerprint(s) (hex, space-separated for a chain), so the trust-anchor list can say whose
CA it is. NULL: no CA attached (sites registered before this revision).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network_sites") as batch:
        batch.add_column(sa.Column("signing_ca_sha256", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("network_sites") as batch:
        batch.drop_column("signing_ca_sha256")
