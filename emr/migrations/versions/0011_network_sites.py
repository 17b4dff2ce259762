"""provincial network (issue 15 §1): other facilities, transfers out, what they sent us

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "network_sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("emr_url", sa.String(length=500), nullable=True),
        sa.Column("dicomweb_url", sa.String(length=500), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=True),
        sa.Column("inbound_token_sha256", sa.String(length=64), nullable=True),
        sa.Column("outbound_token", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_network_sites_created_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_network_sites"),
        sa.UniqueConstraint("name", name="uq_network_sites_name"),
        sa.UniqueConstraint("ae_title", name="uq_network_sites_ae_title"),
        sa.UniqueConstraint("inbound_token_sha256", name="uq_network_sites_inbound_token_sha256"),
    )
    op.create_table(
        "network_transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("question", sa.Text(), nullable=True),
        sa.Column("urgency", sa.String(length=8), nullable=True),
        sa.Column("remote_ref", sa.String(length=64), nullable=True),
        sa.Column("reply_to", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("instances_sent", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("report_received_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["network_sites.id"], name="fk_network_transfers_site_id_network_sites"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_network_transfers_patient_id_patients"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["imaging_orders.id"], name="fk_network_transfers_order_id_imaging_orders"
        ),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_network_transfers_created_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_network_transfers"),
    )
    op.create_index("ix_network_transfers_site_id", "network_transfers", ["site_id"])
    op.create_index("ix_network_transfers_patient_id", "network_transfers", ["patient_id"])
    op.create_index("ix_network_transfers_order_id", "network_transfers", ["order_id"])
    op.create_index("ix_network_transfers_status", "network_transfers", ["status"])
    op.create_table(
        "network_received",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("remote_ref", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_cccd", sa.String(length=12), nullable=True),
        sa.Column("patient_name", sa.String(length=200), nullable=True),
        sa.Column("patient_birth_date", sa.String(length=10), nullable=True),
        sa.Column("patient_sex", sa.String(length=1), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("match_method", sa.String(length=20), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("question", sa.Text(), nullable=True),
        sa.Column("urgency", sa.String(length=8), nullable=True),
        sa.Column("modality", sa.String(length=4), nullable=True),
        sa.Column("procedure_name", sa.String(length=200), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("dicom", sa.LargeBinary(), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("signature_status", sa.String(length=200), nullable=True),
        sa.Column("signer", sa.String(length=500), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["network_sites.id"], name="fk_network_received_site_id_network_sites"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_network_received_patient_id_patients"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["imaging_orders.id"], name="fk_network_received_order_id_imaging_orders"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_network_received"),
        sa.UniqueConstraint("site_id", "kind", "remote_ref", name="uq_network_received_ref"),
    )
    op.create_index("ix_network_received_site_id", "network_received", ["site_id"])
    op.create_index("ix_network_received_patient_id", "network_received", ["patient_id"])
    op.create_index("ix_network_received_study_instance_uid", "network_received", ["study_instance_uid"])


def downgrade() -> None:
    op.drop_table("network_received")
    op.drop_table("network_transfers")
    op.drop_table("network_sites")
