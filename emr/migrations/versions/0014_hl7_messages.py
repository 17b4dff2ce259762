"""hl7 v2 interface: the message log and the HIS patient/order identifier links (issue 15 §5)

Revision ID: 0014
Revises: 0010
Create Date: 2026-12-07 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("peer", sa.String(80)),
        sa.Column("sending_application", sa.String(180)),
        sa.Column("sending_facility", sa.String(180)),
        sa.Column("message_type", sa.String(20)),
        sa.Column("control_id", sa.String(199)),
        sa.Column("charset", sa.String(40)),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("ack_code", sa.String(2)),
        sa.Column("ack", sa.LargeBinary()),
        sa.Column("error", sa.Text()),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patients.id")),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("imaging_orders.id")),
        sa.Column("replay_of_id", sa.Integer(), sa.ForeignKey("hl7_messages.id")),
        sa.Column("replayed_by", sa.String(64)),
    )
    op.create_index("ix_hl7_messages_at", "hl7_messages", ["at"])
    op.create_index("ix_hl7_messages_control", "hl7_messages", ["sending_facility", "control_id"])
    op.create_index("ix_hl7_messages_status", "hl7_messages", ["status", "at"])
    op.create_table(
        "hl7_patient_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("authority", sa.String(180), nullable=False),
        sa.Column("identifier", sa.String(80), nullable=False),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("authority", "identifier", name="uq_hl7_patient_links"),
    )
    op.create_index("ix_hl7_patient_links_patient_id", "hl7_patient_links", ["patient_id"])
    op.create_table(
        "hl7_order_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("authority", sa.String(180), nullable=False),
        sa.Column("placer_number", sa.String(80), nullable=False),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("imaging_orders.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("authority", "placer_number", name="uq_hl7_order_links"),
    )
    op.create_index("ix_hl7_order_links_order_id", "hl7_order_links", ["order_id"])


def downgrade() -> None:
    op.drop_table("hl7_order_links")
    op.drop_table("hl7_patient_links")
    op.drop_table("hl7_messages")
