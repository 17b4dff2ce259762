"""service prices: the price catalogue, the price snapshot on imaging orders, the encounter's benefit level

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("unit", sa.String(length=50), nullable=False),
        sa.Column("price_hospital", sa.Numeric(precision=15, scale=2), nullable=False),
        sa.Column("price_insurance", sa.Numeric(precision=15, scale=2), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("loaded_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_prices"),
        sa.UniqueConstraint("code", "valid_from", name="uq_service_prices_code_valid_from"),
    )
    op.create_index("ix_service_prices_code", "service_prices", ["code"])
    # Plain ALTER TABLE ADD/DROP COLUMN on both databases: a batch "move and copy" of these
    # tables would fail on SQLite as soon as documents or studies reference their rows.
    op.add_column("imaging_orders", sa.Column("price_id", sa.Integer(), nullable=True))
    op.add_column("imaging_orders", sa.Column("price_hospital", sa.Numeric(precision=15, scale=2), nullable=True))
    op.add_column("imaging_orders", sa.Column("price_insurance", sa.Numeric(precision=15, scale=2), nullable=True))
    op.add_column("imaging_orders", sa.Column("price_unit", sa.String(length=50), nullable=True))
    op.add_column("encounters", sa.Column("benefit_level", sa.Integer(), nullable=True))
    op.add_column("encounters", sa.Column("benefit_level_note", sa.String(length=200), nullable=True))


def downgrade() -> None:
    for column in ("benefit_level_note", "benefit_level"):
        op.drop_column("encounters", column)
    for column in ("price_unit", "price_insurance", "price_hospital", "price_id"):
        op.drop_column("imaging_orders", column)
    op.drop_index("ix_service_prices_code", table_name="service_prices")
    op.drop_table("service_prices")
