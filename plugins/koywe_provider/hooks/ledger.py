"""``KoyweLedgerHook``: opens the issuance ledger named by an Airflow connection.

The ledger's database comes from the connection ``koywe_ledger`` (any Airflow connection source:
``AIRFLOW_CONN_KOYWE_LEDGER``, the metadata database, a secrets backend). Without that connection the
ledger is the SQLite file ``$AIRFLOW_HOME/koywe_ledger.db``. Production uses PostgreSQL.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from koywe_provider.ledger import Ledger

_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def default_ledger_url() -> str:
    """``sqlite:///$AIRFLOW_HOME/koywe_ledger.db`` (``~/airflow`` when ``AIRFLOW_HOME`` is unset)."""
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return f"sqlite:///{home / 'koywe_ledger.db'}"


def sqlalchemy_url_from_connection(conn: Any) -> str:
    """The SQLAlchemy URL of an Airflow connection.

    ``extra.sqlalchemy_url`` wins; otherwise ``sqlite`` connections use ``host`` (or ``schema``) as the
    file path and ``postgres``/``postgresql`` connections become ``postgresql+psycopg2://…``.
    Raises ``ValueError`` for other connection types.
    """
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        return f"sqlite:///{path}" if path else default_ledger_url()
    if conn_type in ("postgres", "postgresql"):
        auth = ""
        if conn.login:
            auth = quote(conn.login, safe="")
            if conn.password:
                auth += ":" + quote(conn.password, safe="")
            auth += "@"
        port = f":{conn.port}" if conn.port else ""
        return f"postgresql+psycopg2://{auth}{conn.host or 'localhost'}{port}/{conn.schema or 'postgres'}"
    raise ValueError(
        f"Connection {conn.conn_id!r} of type {conn.conn_type!r} cannot host the Koywe ledger; "
        "use a sqlite or postgres connection, or set extra.sqlalchemy_url"
    )


class KoyweLedgerHook(BaseHook):
    """Gives the :class:`~koywe_provider.ledger.Ledger` of connection ``koywe_ledger_conn_id``.

    One ``Ledger`` (one SQLAlchemy engine) per database URL per process.
    """

    conn_name_attr = "koywe_ledger_conn_id"
    default_conn_name = "koywe_ledger"
    conn_type = "postgres"
    hook_name = "Koywe issuance ledger"

    def __init__(self, koywe_ledger_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def get_url(self) -> str:
        try:
            conn = self.get_connection(self.koywe_ledger_conn_id)
        except AirflowNotFoundException:
            return default_ledger_url()
        return sqlalchemy_url_from_connection(conn)

    def get_conn(self) -> Ledger:
        return self.get_ledger()

    def get_ledger(self) -> Ledger:
        url = self.get_url()
        with _ledgers_lock:
            if url not in _ledgers:
                _ledgers[url] = Ledger(url)
            return _ledgers[url]
