"""Legal archive and reconciliation: archived files, callback and polling stamps.

- ``koywe_archive_files``: one row per file of the legal archive (the XML and PDF Koywe returns in
  ``electronic_document``): the document row and generation, Koywe's id, the kind (``xml``, ``pdf``,
  ``stamp``, ``transfer_copy_pdf``), the file's full ``ObjectStoragePath`` URL, its SHA-256 and size,
  where it came from (``create``, ``lookup``, ``fetch``) and when. Unique on (Koywe id, kind).
- ``koywe_documents.last_callback_at`` (last ``DOCUMENT.STATUSUPDATE`` callback about the document),
  ``last_polled_news_at`` (last time polling brought status news a callback should have brought) and
  ``archive_fetched_at`` (when the archive fetched the document's files from Koywe: once).

Downgrade drops all of it (the files themselves stay where they are).

Revision ID: 0004_archive
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_archive"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_DOCUMENT_COLUMNS = ("last_callback_at", "last_polled_news_at", "archive_fetched_at")


def upgrade() -> None:
    # Plain ADD COLUMN: batch mode on SQLite runs it in place.
    with op.batch_alter_table("koywe_documents") as batch:
        for name in _DOCUMENT_COLUMNS:
            batch.add_column(sa.Column(name, _TS, nullable=True))

    op.create_table(
        "koywe_archive_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_pk", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("koywe_document_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("archived_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["document_pk"],
            ["koywe_documents.id"],
            name="fk_koywe_archive_files_document_pk_koywe_documents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_koywe_archive_files"),
        sa.UniqueConstraint(
            "koywe_document_id", "kind", name="uq_koywe_archive_files_koywe_document_id_kind"
        ),
    )
    op.create_index("ix_koywe_archive_files_document_pk", "koywe_archive_files", ["document_pk"])


def downgrade() -> None:
    op.drop_index("ix_koywe_archive_files_document_pk", table_name="koywe_archive_files")
    op.drop_table("koywe_archive_files")
    # ALTER TABLE ... DROP COLUMN in place (SQLite >= 3.35), as revision 0003's downgrade does.
    with op.batch_alter_table("koywe_documents", recreate="never") as batch:
        for name in reversed(_DOCUMENT_COLUMNS):
            batch.drop_column(name)
