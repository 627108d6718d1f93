"""Accounts ledger: koywe_accounts, unique on (country_id, registration_tax_id_code).

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "koywe_accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("country_id", sa.Integer(), nullable=False),
        sa.Column("registration_tax_id_code", sa.String(length=64), nullable=False),
        sa.Column("registration_tax_id_type", sa.String(length=16), nullable=True),
        sa.Column("registration_legal_name_company", sa.String(length=300), nullable=True),
        sa.Column("request_id", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", _JSON, nullable=True),
        sa.Column("errors", _JSON, nullable=True),
        sa.Column("koywe_account_id", sa.String(length=64), nullable=True),
        sa.Column("certification_status", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("claimed_by", sa.String(length=250), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=True),
        sa.Column("confirmed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_accounts"),
        sa.UniqueConstraint(
            "country_id",
            "registration_tax_id_code",
            name="uq_koywe_accounts_country_id_registration_tax_id_code",
        ),
    )
    op.create_index("ix_koywe_accounts_state", "koywe_accounts", ["state"])
    op.create_index("ix_koywe_accounts_run_id", "koywe_accounts", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_koywe_accounts_run_id", table_name="koywe_accounts")
    op.drop_index("ix_koywe_accounts_state", table_name="koywe_accounts")
    op.drop_table("koywe_accounts")
