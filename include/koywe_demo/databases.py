"""Throwaway PostgreSQL databases for the tests and the benchmark (never for a user's data)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

#: The PostgreSQL server of the CI machine and the developers' (trust auth, user postgres).
PG_ADMIN_URL = os.environ.get("KOYWE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def throwaway_database(prefix: str = "koywe_test", *, admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """Create database ``<prefix>_<random>`` on ``admin_url``'s server; yield its SQLAlchemy URL; drop it."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
