"""open visits by department and by attending: the clinician's list and the care rule

The physician's home page lists the open visits of their department and those
they attend (``emr.patients.encounters.current_visits``), and the care scope
(``emr.access.permissions``) asks the same of every chart a physician opens.
Without these indexes both read every visit of every year.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 16:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_encounters_department_status", "encounters", ["department_id", "status"])
    op.create_index("ix_encounters_attending_status", "encounters", ["attending_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_encounters_attending_status", table_name="encounters")
    op.drop_index("ix_encounters_department_status", table_name="encounters")
