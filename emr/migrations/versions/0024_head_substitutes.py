"""head_substitutes, document_signatures.capacity: someone signs in place of the head of department

A discharge paper's second signature is the head of the visit's department's. A department with no head
(vacancy) or a head on leave left every paper unsigned for good. The hospital now names, by a decision with
a first and a last day, who signs in the head's place — a deputy head ("KT. Trưởng khoa") or a person given
the head's authority ("Q. Trưởng khoa"); ``document_signatures.capacity`` records in which capacity the
head's slot was signed (head | deputy | acting). Signatures made before this revision were all the head's
own: the column stays NULL for them (and for the other slots).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "head_substitutes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("department_id", sa.Integer(), sa.ForeignKey("departments.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("capacity", sa.String(10), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
    )
    op.create_index("ix_head_substitutes_department_id", "head_substitutes", ["department_id"])
    op.create_index("ix_head_substitutes_user_id", "head_substitutes", ["user_id"])
    with op.batch_alter_table("document_signatures") as batch_op:
        batch_op.add_column(sa.Column("capacity", sa.String(10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document_signatures") as batch_op:
        batch_op.drop_column("capacity")
    op.drop_index("ix_head_substitutes_user_id", table_name="head_substitutes")
    op.drop_index("ix_head_substitutes_department_id", table_name="head_substitutes")
    op.drop_table("head_substitutes")
