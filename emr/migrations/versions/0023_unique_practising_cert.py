"""users.practising_cert_no: one practising-certificate number (CCHN) per person, unique in the database

Signatures and insurance exports (MA_BAC_SI, NGUOI_THUC_HIEN, MA_BS_DOC_KQ)
name the signer by the CCHN, yet two accounts could be given the same number.
A unique index on the number trimmed and in lower case now refuses a second
holder (emr.access.users checks first and names the account that holds it).

Blank numbers become NULL (no number; the application never stores a blank).

A database that already has accounts sharing a number does not fail here:
signed records and claims already name those accounts by it, so the migration
changes no number. The first account (lowest id) of each shared number stays
in the index, so no new account can take that number; the later ones are left
out of it (the index is partial: ``id NOT IN (...)``) and are listed in a
warning in the upgrade log. The admin corrects them on each account's page
(the application refuses a number already held; an unchanged one can still be
kept while other fields are edited). The exception is visible in the schema.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08 04:00:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_INDEX = "uq_users_practising_cert"
log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text(
        "UPDATE users SET practising_cert_no = NULL "
        "WHERE practising_cert_no IS NOT NULL AND trim(practising_cert_no) = ''"
    ))
    # Compared by the database's own lower() and trim(), as the index will compare them.
    rows = bind.execute(sa.text(
        "SELECT id, username, practising_cert_no, lower(trim(practising_cert_no)) FROM users "
        "WHERE practising_cert_no IS NOT NULL ORDER BY id"
    )).all()
    holders: dict[str, list[tuple[int, str, str]]] = {}
    for user_id, username, cert, key in rows:
        holders.setdefault(key, []).append((user_id, username, cert))
    shared = {key: accounts for key, accounts in holders.items() if len(accounts) > 1}
    left_out = sorted(user_id for accounts in shared.values() for user_id, _, _ in accounts[1:])
    where = sa.text(f"id NOT IN ({', '.join(str(i) for i in left_out)})") if left_out else None
    for accounts in shared.values():
        first, *others = accounts
        log.warning(
            "0023: practising-certificate number %r is shared by accounts %s; %s keeps it in the unique index, "
            "%s left out of it until corrected on /admin/users",
            first[2], ", ".join(f"{u} (id {i})" for i, u, _ in accounts), first[1], ", ".join(u for _, u, _ in others),
        )
    op.create_index(
        _INDEX,
        "users",
        [sa.text("lower(trim(practising_cert_no))")],
        unique=True,
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="users")
