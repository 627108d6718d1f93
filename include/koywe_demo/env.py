"""The Airflow environment of this checkout: home, folders, connections, pools and migrations.

Shared by ``make demo``, ``make up``, the end-to-end tests and the benchmark, so that all of them run
Airflow the same way. Connections come from ``AIRFLOW_CONN_*`` variables: the sandbox's credentials are
its public defaults, not secrets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_AIRFLOW_HOME = PROJECT_DIR / "airflow_home"


def airflow_env(
    *,
    airflow_home: Path = DEFAULT_AIRFLOW_HOME,
    koywe_base_url: str | None = None,
    credentials: dict[str, str] | None = None,
    requests_per_second: float = 20,
    ledger_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables for Airflow commands run on this checkout.

    :param koywe_base_url: base URL of the ``koywe_default`` connection (e.g. the sandbox's ``…/V1``).
    :param credentials: ``client_id``, ``client_secret``, ``username``, ``password`` of that connection.
    :param ledger_url: SQLAlchemy URL of the ledger; default the SQLite file in ``airflow_home``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if koywe_base_url:
        creds = credentials or {}
        env["AIRFLOW_CONN_KOYWE_DEFAULT"] = json.dumps(
            {
                "conn_type": "koywe",
                "host": koywe_base_url,
                "login": creds.get("username"),
                "password": creds.get("password"),
                "extra": {
                    "client_id": creds.get("client_id"),
                    "client_secret": creds.get("client_secret"),
                    "requests_per_second": requests_per_second,
                },
            }
        )
    ledger_url = ledger_url or f"sqlite:///{airflow_home / 'koywe_ledger.db'}"
    env["AIRFLOW_CONN_KOYWE_LEDGER"] = json.dumps(
        {"conn_type": "sqlite", "extra": {"sqlalchemy_url": ledger_url}}
    )
    env.update(extra or {})
    return env


def airflow(
    env: dict[str, str], *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess:
    """Run ``airflow <args>`` with ``env`` (the ``airflow`` of this virtual environment)."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(command, env=env, check=check, text=True, capture_output=capture)


def setup(env: dict[str, str], *, quiet: bool = True) -> None:
    """Idempotent set-up: Airflow's metadata database, the pools of ``include/pools.json``, the ledger."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate", capture=quiet)
    airflow(env, "pools", "import", str(PROJECT_DIR / "include" / "pools.json"), capture=quiet)
    migrate_ledger(json.loads(env["AIRFLOW_CONN_KOYWE_LEDGER"])["extra"]["sqlalchemy_url"])


def migrate_ledger(url: str) -> None:
    from koywe_provider.ledger import Ledger

    ledger = Ledger(url)
    try:
        ledger.migrate()
    finally:
        ledger.dispose()
