"""Generations: one Koywe document per ledger row and generation, corrections, not-sent documents.

- ``koywe_documents.koywe_document_id``: the text ``'None'``/``''`` an old bug stored becomes NULL; then
  a UNIQUE index (one Koywe document is one ledger document) and an index on ``reference``.
- ``koywe_documents``: ``generation`` (1), ``generation_sends`` (POSTs of the current generation,
  backfilled from ``attempts``), ``counterparty_status`` (``header.document_status``),
  ``result_error_message``.
- ``koywe_attempts.generation`` (backfilled 1: every earlier attempt belonged to generation 1).
- ``koywe_document_generations``: one record per (document, generation); backfilled with generation 1 of
  every document that has a Koywe id or is rejected.
- ``koywe_payload_history``: payloads that an ingested correction replaced.

Downgrade drops all of it; ``not_sent`` rows become ``issued`` (a document exists at Koywe: revision
0002's code must never send them again).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _duplicate_koywe_ids(conn: sa.Connection) -> list[tuple[str, int]]:
    return [
        (row[0], int(row[1]))
        for row in conn.execute(
            sa.text(
                "SELECT koywe_document_id, count(*) FROM koywe_documents WHERE koywe_document_id IS NOT NULL"
                " GROUP BY koywe_document_id HAVING count(*) > 1 ORDER BY koywe_document_id"
            )
        )
    ]


def upgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text("UPDATE koywe_documents SET koywe_document_id = NULL WHERE koywe_document_id IN ('None', '')")
    )
    duplicates = _duplicate_koywe_ids(conn)
    if duplicates:
        # Several rows claim the same Koywe document: a person must decide which one it belongs to.
        listed = ", ".join(f"{koywe_id} ({n} rows)" for koywe_id, n in duplicates[:20])
        raise RuntimeError(
            "cannot add the unique index on koywe_documents.koywe_document_id: these Koywe documents are "
            f"recorded on several ledger rows: {listed}. Clear the wrong rows' koywe_document_id by hand "
            "and migrate again."
        )

    # Plain ADD COLUMN with literal defaults and CREATE INDEX: batch mode on SQLite runs them in place.
    with op.batch_alter_table("koywe_documents") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("generation_sends", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("counterparty_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("result_error_message", sa.Text(), nullable=True))
        batch.create_index("uq_koywe_documents_koywe_document_id", ["koywe_document_id"], unique=True)
        batch.create_index("ix_koywe_documents_reference", ["reference"])
    conn.execute(sa.text("UPDATE koywe_documents SET generation_sends = attempts"))

    with op.batch_alter_table("koywe_attempts") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=True))
    conn.execute(sa.text("UPDATE koywe_attempts SET generation = 1"))

    op.create_table(
        "koywe_document_generations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_pk", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("koywe_reference", sa.String(length=160), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("koywe_document_id", sa.String(length=64), nullable=True),
        sa.Column("document_number", sa.String(length=64), nullable=True),
        sa.Column("document_status", sa.Integer(), nullable=True),
        sa.Column("counterparty_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_sending_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_validation_status", sa.Integer(), nullable=True),
        sa.Column("taxbureau_validation_comments", sa.Text(), nullable=True),
        sa.Column("result_status", sa.Integer(), nullable=True),
        sa.Column("result_error_message", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["document_pk"],
            ["koywe_documents.id"],
            name="fk_koywe_document_generations_document_pk_koywe_documents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_document_generations"),
        sa.UniqueConstraint(
            "document_pk", "generation", name="uq_koywe_document_generations_document_pk_generation"
        ),
    )
    op.create_index(
        "ix_koywe_document_generations_koywe_document_id",
        "koywe_document_generations",
        ["koywe_document_id"],
    )

    op.create_table(
        "koywe_payload_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_pk", sa.Integer(), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("replaced_at", _TS, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_pk"],
            ["koywe_documents.id"],
            name="fk_koywe_payload_history_document_pk_koywe_documents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_payload_history"),
    )
    op.create_index("ix_koywe_payload_history_document_pk", "koywe_payload_history", ["document_pk"])

    conn.execute(
        sa.text(
            """
            INSERT INTO koywe_document_generations (
                document_pk, generation, koywe_reference, payload_hash, koywe_document_id, document_number,
                document_status, taxbureau_sending_status, taxbureau_validation_status,
                taxbureau_validation_comments, result_status, outcome, started_at, ended_at
            )
            SELECT
                id, 1, reference, payload_hash, koywe_document_id, document_number,
                document_status, taxbureau_sending_status, taxbureau_validation_status,
                taxbureau_validation_comments, result_status,
                CASE
                    WHEN state = 'issued' THEN 'issued'
                    WHEN state = 'draft' THEN 'draft'
                    WHEN state = 'rejected' AND last_error_class = 'taxbureau_rejected'
                        THEN 'taxbureau_rejected'
                    WHEN state = 'rejected' THEN 'rejected'
                    ELSE NULL
                END,
                created_at,
                CASE WHEN state = 'rejected' THEN updated_at ELSE NULL END
            FROM koywe_documents
            WHERE koywe_document_id IS NOT NULL OR state = 'rejected'
            ORDER BY id
            """
        )
    )


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE koywe_documents SET state = 'issued' WHERE state = 'not_sent'"))

    op.drop_index("ix_koywe_payload_history_document_pk", table_name="koywe_payload_history")
    op.drop_table("koywe_payload_history")
    op.drop_index("ix_koywe_document_generations_koywe_document_id", table_name="koywe_document_generations")
    op.drop_table("koywe_document_generations")

    # ALTER TABLE ... DROP COLUMN in place (SQLite >= 3.35): rebuilding koywe_documents would have to
    # drop the table that koywe_attempts references, which foreign_keys=ON refuses inside the transaction.
    with op.batch_alter_table("koywe_attempts", recreate="never") as batch:
        batch.drop_column("generation")

    with op.batch_alter_table("koywe_documents", recreate="never") as batch:
        batch.drop_index("ix_koywe_documents_reference")
        batch.drop_index("uq_koywe_documents_koywe_document_id")
        batch.drop_column("result_error_message")
        batch.drop_column("counterparty_status")
        batch.drop_column("generation_sends")
        batch.drop_column("generation")
