"""audit page indexes (user, action) and the visible end of each share link's code

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The audit page filters by user name and by action and pages newest first by id:
    # (column, id) lets both walk an index instead of the whole log (a million rows a year).
    op.create_index("ix_audit_log_username", "audit_log", ["username", "id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    # Only hashes of a share code are stored; the last characters tell printed slips apart.
    op.add_column("share_links", sa.Column("code_hint", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("share_links", "code_hint")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_index("ix_audit_log_username", table_name="audit_log")
