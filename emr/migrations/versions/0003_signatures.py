"""signatures: signing keys, signed PDFs per document version, signing steps; department heads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_department_head", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("p12_data", sa.LargeBinary(), nullable=True),
        sa.Column("token_label", sa.String(length=64), nullable=True),
        sa.Column("key_label", sa.String(length=64), nullable=True),
        sa.Column("cert_subject", sa.String(length=500), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_signing_keys_user_id_users"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_signing_keys_created_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_signing_keys"),
    )
    op.create_index("ix_signing_keys_user_id", "signing_keys", ["user_id"])
    op.create_table(
        "signed_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("verification_code", sa.String(length=64), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("signatures_required", sa.Integer(), nullable=False),
        sa.Column("signatures_done", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("pacs_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("pacs_instance_id", sa.String(length=64), nullable=True),
        sa.Column("pacs_stored_at", sa.DateTime(), nullable=True),
        sa.Column("pacs_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["document_versions.id"], name="fk_signed_artifacts_version_id"),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], name="fk_signed_artifacts_document_id"),
        sa.PrimaryKeyConstraint("id", name="pk_signed_artifacts"),
        sa.UniqueConstraint("version_id", name="uq_signed_artifacts_version_id"),
        sa.UniqueConstraint("verification_code", name="uq_signed_artifacts_verification_code"),
    )
    op.create_index("ix_signed_artifacts_document_id", "signed_artifacts", ["document_id"])
    op.create_table(
        "document_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("field_name", sa.String(length=64), nullable=False),
        sa.Column("signer_role", sa.String(length=30), nullable=False),
        sa.Column("signer_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("cert_subject", sa.String(length=500), nullable=False),
        sa.Column("cert_serial", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=False),
        sa.Column("timestamp_at", sa.DateTime(), nullable=True),
        sa.Column("pdf_length", sa.Integer(), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("cms", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["signed_artifacts.id"], name="fk_document_signatures_artifact_id"),
        sa.ForeignKeyConstraint(["version_id"], ["document_versions.id"], name="fk_document_signatures_version_id"),
        sa.ForeignKeyConstraint(["signer_id"], ["users.id"], name="fk_document_signatures_signer_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_document_signatures"),
        sa.UniqueConstraint("version_id", "order_index", name="uq_document_signatures_order"),
    )
    op.create_index("ix_document_signatures_artifact_id", "document_signatures", ["artifact_id"])
    op.create_index("ix_document_signatures_version_id", "document_signatures", ["version_id"])


def downgrade() -> None:
    op.drop_table("document_signatures")
    op.drop_table("signed_artifacts")
    op.drop_table("signing_keys")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_department_head")
