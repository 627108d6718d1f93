"""Notes and cancellations: a credit or debit note row names its original; Mexico cancellations followed.

- ``koywe_documents.original_pk`` (indexed; the ledger id of the document a note modifies) and
  ``note_kind`` (``credit_note`` | ``debit_note``);
- ``koywe_documents.cancellation_status`` (``requested`` | ``pending_acceptance`` | ``cancelled`` |
  ``refused``) and ``cancellation_requested_at``;
- new row states ``deleted`` (a Chile draft deleted at Koywe) and ``external`` (an original issued
  elsewhere, referenced by folio) need no schema change (``state`` is text).

Downgrade drops the columns; ``deleted`` and ``external`` rows, which revision 0004's code does not know,
become ``dead`` with a message (never sent automatically; a person decides).

Revision ID: 0005_notes
Revises: 0004_archive
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_notes"
down_revision = "0004_archive"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # ADD COLUMN (no constraint) and CREATE INDEX run in place on SQLite and PostgreSQL alike.
    op.add_column("koywe_documents", sa.Column("original_pk", sa.Integer(), nullable=True))
    op.add_column("koywe_documents", sa.Column("note_kind", sa.String(length=16), nullable=True))
    op.add_column("koywe_documents", sa.Column("cancellation_status", sa.String(length=24), nullable=True))
    op.add_column("koywe_documents", sa.Column("cancellation_requested_at", _TS, nullable=True))
    op.create_index("ix_koywe_documents_original_pk", "koywe_documents", ["original_pk"])


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE koywe_documents SET state = 'dead', last_error_class = 'downgraded', last_error = "
            "CASE WHEN state = 'deleted' THEN 'draft deleted at Koywe (recorded by revision 0005)' "
            "ELSE 'issued elsewhere, recorded for notes (revision 0005): never send it' END "
            "WHERE state IN ('deleted', 'external')"
        )
    )
    # ALTER TABLE ... DROP COLUMN in place (as revision 0003's downgrade does): no table rebuild.
    with op.batch_alter_table("koywe_documents", recreate="never") as batch:
        batch.drop_index("ix_koywe_documents_original_pk")
        batch.drop_column("cancellation_requested_at")
        batch.drop_column("cancellation_status")
        batch.drop_column("note_kind")
        batch.drop_column("original_pk")
