"""hl7_messages.raw_purged_at: when a message's bytes were emptied after FILMLESS_HL7_KEEP_DAYS

A message's exact bytes (and its ACK) serve troubleshooting with the HIS; the
log row (type, control ID, sender, status, patient, order) is the trail and
stays. Emptied rows say when.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 17:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_messages") as batch_op:
        batch_op.add_column(sa.Column("raw_purged_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages") as batch_op:
        batch_op.drop_column("raw_purged_at")
