"""break-the-glass: time-limited emergency access to a patient outside one's care, with its reason

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "break_glass_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_break_glass_access_user_id_users"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_break_glass_access_patient_id_patients"),
        sa.PrimaryKeyConstraint("id", name="pk_break_glass_access"),
    )
    op.create_index("ix_break_glass_user_patient", "break_glass_access", ["user_id", "patient_id", "expires_at"])
    op.create_index("ix_break_glass_created_at", "break_glass_access", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_break_glass_created_at", table_name="break_glass_access")
    op.drop_index("ix_break_glass_user_patient", table_name="break_glass_access")
    op.drop_table("break_glass_access")
