"""identity checks by CCCD against the national population database, with their reconciliation (issue 15 §3)

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("cccd", sa.String(length=12), nullable=False),
        sa.Column("trigger", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=True),
        sa.Column("local_name", sa.String(length=200), nullable=True),
        sa.Column("local_birth", sa.String(length=10), nullable=True),
        sa.Column("local_sex", sa.String(length=1), nullable=True),
        sa.Column("national_name", sa.String(length=200), nullable=True),
        sa.Column("national_birth", sa.String(length=10), nullable=True),
        sa.Column("national_sex", sa.String(length=1), nullable=True),
        sa.Column("differences", sa.String(length=60), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_identity_checks_patient_id_patients"),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"], name="fk_identity_checks_decided_by_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_identity_checks"),
    )
    op.create_index("ix_identity_checks_patient", "identity_checks", ["patient_id", "requested_at"])
    op.create_index("ix_identity_checks_open", "identity_checks", ["resolved", "status"])


def downgrade() -> None:
    op.drop_index("ix_identity_checks_open", table_name="identity_checks")
    op.drop_index("ix_identity_checks_patient", table_name="identity_checks")
    op.drop_table("identity_checks")
