"""patient_name_keys: find a patient by any word of their name ("Nhung", "Hồng Nhung")

Vietnamese patients are called by the last word of their name, but search
matched only from the family name or the second word. One row per later
word keeps every search an index range scan with LIMIT. Existing patients'
keys are filled in from their folded names.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_name_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_patient_name_keys_patient_id_patients")),
        sa.PrimaryKeyConstraint("key", "patient_id", name=op.f("pk_patient_name_keys")),
    )
    op.create_index("ix_patient_name_keys_patient_id", "patient_name_keys", ["patient_id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # As patients.search_name (0001): plain folded text, one b-tree for prefix ranges and ORDER BY.
        op.execute('ALTER TABLE patient_name_keys ALTER COLUMN key TYPE varchar(200) COLLATE "C"')
    keys = sa.table("patient_name_keys", sa.column("key", sa.String), sa.column("patient_id", sa.Integer))
    page = sa.text("SELECT id, search_name FROM patients WHERE id > :after ORDER BY id LIMIT 5000")
    after = 0
    while rows := bind.execute(page, {"after": after}).all():
        batch: list[dict[str, object]] = []
        for patient_id, search_name in rows:
            words = (search_name or "").split(" ")
            batch.extend({"key": " ".join(words[i:]), "patient_id": patient_id} for i in range(2, len(words)))
        if batch:
            op.bulk_insert(keys, batch)
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_patient_name_keys_patient_id", table_name="patient_name_keys")
    op.drop_table("patient_name_keys")
