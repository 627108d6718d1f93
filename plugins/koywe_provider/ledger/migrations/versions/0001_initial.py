"""Initial ledger schema: koywe_documents, koywe_attempts, koywe_ingest_conflicts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "koywe_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", _JSON, nullable=True),
        sa.Column("raw_line", sa.Text(), nullable=True),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("koywe_document_id", sa.String(length=64), nullable=True),
        sa.Column("document_number", sa.String(length=64), nullable=True),
        sa.Column("document_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_sending_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_validation_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_validation_comments", sa.Text(), nullable=True),
        sa.Column("result_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_class", sa.String(length=64), nullable=True),
        sa.Column("error_field", sa.String(length=256), nullable=True),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("lease_owner", sa.String(length=250), nullable=True),
        sa.Column("claimed_from", sa.String(length=16), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("issued_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_documents"),
        sa.UniqueConstraint("account_id", "reference", name="uq_koywe_documents_account_id_reference"),
    )
    op.create_index("ix_koywe_documents_state", "koywe_documents", ["state"])
    op.create_index("ix_koywe_documents_next_attempt_at", "koywe_documents", ["next_attempt_at"])
    op.create_index("ix_koywe_documents_run_id", "koywe_documents", ["run_id"])
    op.create_index(
        "ix_koywe_documents_state_next_attempt_at", "koywe_documents", ["state", "next_attempt_at"]
    )

    op.create_table(
        "koywe_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_pk", sa.Integer(), nullable=False),
        sa.Column("attempted_at", _TS, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("task", sa.String(length=250), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_pk"], ["koywe_documents.id"], name="fk_koywe_attempts_document_pk_koywe_documents"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_attempts"),
    )
    op.create_index("ix_koywe_attempts_document_pk", "koywe_attempts", ["document_pk"])

    op.create_table(
        "koywe_ingest_conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("existing_payload_hash", sa.String(length=64), nullable=True),
        sa.Column("detected_at", _TS, nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_ingest_conflicts"),
        sa.UniqueConstraint(
            "account_id",
            "reference",
            "payload_hash",
            name="uq_koywe_ingest_conflicts_account_id_reference_payload_hash",
        ),
    )


def downgrade() -> None:
    op.drop_table("koywe_ingest_conflicts")
    op.drop_index("ix_koywe_attempts_document_pk", table_name="koywe_attempts")
    op.drop_table("koywe_attempts")
    op.drop_index("ix_koywe_documents_state_next_attempt_at", table_name="koywe_documents")
    op.drop_index("ix_koywe_documents_run_id", table_name="koywe_documents")
    op.drop_index("ix_koywe_documents_next_attempt_at", table_name="koywe_documents")
    op.drop_index("ix_koywe_documents_state", table_name="koywe_documents")
    op.drop_table("koywe_documents")
