"""catalogues: versioned Ministry catalogues (ICD-10, DVKT, facilities, departments, administrative units)

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-07 02:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("loaded_by", sa.String(length=64), nullable=True),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue_versions")),
        sa.UniqueConstraint("kind", "valid_from", name="uq_catalogue_versions_kind_valid_from"),
    )
    op.create_table(
        "catalogue_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("parent", sa.String(length=30), nullable=True),
        sa.Column("price", sa.Numeric(precision=15, scale=2), nullable=True),
        sa.Column("folded", sa.String(length=540), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["catalogue_versions.id"],
            name=op.f("fk_catalogue_entries_version_id_catalogue_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue_entries")),
        sa.UniqueConstraint("version_id", "code", "parent", name="uq_catalogue_entries_version_code_parent"),
    )
    op.create_index("ix_catalogue_entries_version_code", "catalogue_entries", ["version_id", "code"])
    op.create_index("ix_catalogue_entries_version_parent", "catalogue_entries", ["version_id", "parent"])


def downgrade() -> None:
    op.drop_index("ix_catalogue_entries_version_parent", table_name="catalogue_entries")
    op.drop_index("ix_catalogue_entries_version_code", table_name="catalogue_entries")
    op.drop_table("catalogue_entries")
    op.drop_table("catalogue_versions")
