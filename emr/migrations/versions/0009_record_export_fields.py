"""record export fields: the patient's religion, health ID, father, mother and guardian (HoSoBenhAn, XML7/XML8)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("religion_code", 3),  # VN Core patient-religion; religion catalogue code
    ("health_id", 10),  # mã định danh y tế (social-insurance number), XML7 MA_YTE
    ("father_name", 255),  # XML7/XML8 HO_TEN_CHA
    ("mother_name", 255),  # XML7/XML8 HO_TEN_ME
    ("guardian_name", 255),  # XML8 NGUOI_GIAM_HO
)


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): no batch copy of a table other rows reference.
    for name, length in _COLUMNS:
        op.add_column("patients", sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    for name, _length in reversed(_COLUMNS):
        op.drop_column("patients", name)
