"""share links for film-less patient access; saved viewer measurements

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "share_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("pin_hash", sa.String(length=200), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.Integer(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("last_access_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_share_links_created_by_users")),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], name=op.f("fk_share_links_document_id_documents")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_share_links_patient_id_patients")),
        sa.ForeignKeyConstraint(["revoked_by"], ["users.id"], name=op.f("fk_share_links_revoked_by_users")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_share_links_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_links")),
        sa.UniqueConstraint("code_sha256", name=op.f("uq_share_links_code_sha256")),
    )
    op.create_index(op.f("ix_share_links_patient_id"), "share_links", ["patient_id"], unique=False)
    op.create_index(op.f("ix_share_links_study_id"), "share_links", ["study_id"], unique=False)
    op.create_table(
        "study_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_study_measurements_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_measurements")),
        sa.UniqueConstraint("user_id", "study_instance_uid", name="uq_study_measurements_user_study"),
    )
    op.create_index(
        op.f("ix_study_measurements_study_instance_uid"), "study_measurements", ["study_instance_uid"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_study_measurements_study_instance_uid"), table_name="study_measurements")
    op.drop_table("study_measurements")
    op.drop_index(op.f("ix_share_links_study_id"), table_name="share_links")
    op.drop_index(op.f("ix_share_links_patient_id"), table_name="share_links")
    op.drop_table("share_links")
