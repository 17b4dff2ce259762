"""operations page: indexes on when studies arrived and orders were placed (issue 16 §3)

The operations page and the metrics read a time window of a year of rows
(``studies.first_seen_at``, ``imaging_orders.ordered_at``) and look up each
order's radiology report (``documents.order_id``, also what the reading
worklist's "signed yet?" checks use); without these indexes each view scans
every study, order and document ever made.

Revision ID: 0015
Revises: 0010
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_studies_first_seen_at", "studies", ["first_seen_at"])
    op.create_index("ix_imaging_orders_ordered_at", "imaging_orders", ["ordered_at"])
    op.create_index("ix_documents_order_id", "documents", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_documents_order_id", table_name="documents")
    op.drop_index("ix_imaging_orders_ordered_at", table_name="imaging_orders")
    op.drop_index("ix_studies_first_seen_at", table_name="studies")
