"""break_glass_access.reviewed_at / reviewed_by / review_note: the admin marks an emergency access reviewed

Every break-the-glass access is listed for the admin (/admin/break-glass);
until 0022 the list had no way to tell the accesses already looked at from
the new ones. A review records who marked it, when, and an optional note;
the mark itself is audited (``break_glass.reviewed``). Existing accesses
start unreviewed.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("break_glass_access") as batch_op:
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("review_note", sa.Text(), nullable=True))
        batch_op.create_foreign_key("fk_break_glass_access_reviewed_by_users", "users", ["reviewed_by"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("break_glass_access") as batch_op:
        batch_op.drop_constraint("fk_break_glass_access_reviewed_by_users", type_="foreignkey")
        batch_op.drop_column("review_note")
        batch_op.drop_column("reviewed_by")
        batch_op.drop_column("reviewed_at")
