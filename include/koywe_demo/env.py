"""The Airflow environment of this checkout: home, folders, connections, pools and migrations.

Shared by ``make demo``, ``make up``, the end-to-end tests and the benchmark, so that all of them run
Airflow the same way. Connections come from ``AIRFLOW_CONN_*`` variables: the sandbox's credentials are
its public defaults, not secrets.

The ledger is the SQLite file :func:`ledger_path` (``$AIRFLOW_HOME/koywe_ledger.db``) unless a caller
names another database: the file ``KoyweLedgerHook`` falls back to when the connection ``koywe_ledger``
is not defined, so ``make demo``, ``make up`` and ``airflow koywe`` run with the same
``AIRFLOW_HOME`` (see :func:`shell_exports`) all find one ledger.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_AIRFLOW_HOME = PROJECT_DIR / "airflow_home"
LEDGER_FILE = "koywe_ledger.db"
#: Settings that make Airflow run *this checkout*; an exported value of these is not kept.
CHECKOUT_SETTINGS = ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER")
#: Connections the demo defines itself (the sandbox, the ledger); an exported value of these is not kept.
OWN_CONNECTIONS = ("AIRFLOW_CONN_KOYWE_DEFAULT", "AIRFLOW_CONN_KOYWE_LEDGER")
#: ``PYTHONWARNINGS`` filters for warnings of third-party code that a user of ``make demo``/``make up``
#: can do nothing about (each names the one message it hides; none comes from this project's code):
#: Airflow's CLI without the optional ``graphviz``, Airflow 3.3.2's DAG-file discovery on pathspec >= 1.0
#: and ``airflow dags test``'s in-process Execution API on Starlette's test client with httpx.
KNOWN_WARNINGS = (
    "ignore:Could not import graphviz:UserWarning",
    "ignore:GitWildMatchPattern ('gitwildmatch') is deprecated:DeprecationWarning",
    "ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning",
)


def ledger_path(airflow_home: Path = DEFAULT_AIRFLOW_HOME) -> Path:
    """The ledger of ``make demo`` and ``make up``: ``<airflow_home>/koywe_ledger.db``."""
    return Path(airflow_home) / LEDGER_FILE


def default_ledger_url(airflow_home: Path = DEFAULT_AIRFLOW_HOME) -> str:
    """``sqlite:///`` URL of :func:`ledger_path`."""
    return f"sqlite:///{ledger_path(airflow_home)}"


def user_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``AIRFLOW__*`` and ``AIRFLOW_CONN_*`` variables of ``environ`` that :func:`airflow_env` keeps."""
    environ = os.environ if environ is None else environ
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k not in CHECKOUT_SETTINGS + OWN_CONNECTIONS
    }


def ignored_user_settings(environ: dict[str, str] | None = None) -> list[str]:
    """Names of exported variables that :func:`airflow_env` replaces even with ``keep_user_settings``."""
    environ = os.environ if environ is None else environ
    return sorted(k for k in CHECKOUT_SETTINGS + OWN_CONNECTIONS if k in environ)


def airflow_env(
    *,
    airflow_home: Path = DEFAULT_AIRFLOW_HOME,
    koywe_base_url: str | None = None,
    credentials: dict[str, str] | None = None,
    requests_per_second: float = 20,
    ledger_url: str | None = None,
    extra: dict[str, str] | None = None,
    keep_user_settings: bool = False,
    quiet_known_warnings: bool = False,
) -> dict[str, str]:
    """Environment variables for Airflow commands run on this checkout.

    :param koywe_base_url: base URL of the ``koywe_default`` connection (e.g. the sandbox's ``…/V1``).
    :param credentials: ``client_id``, ``client_secret``, ``username``, ``password`` of that connection.
    :param ledger_url: SQLAlchemy URL of the ledger; default :func:`ledger_path` of ``airflow_home``.
    :param keep_user_settings: keep this process's ``AIRFLOW__*`` and ``AIRFLOW_CONN_*`` variables; they
        win over the defaults set here, except :data:`CHECKOUT_SETTINGS` and :data:`OWN_CONNECTIONS`.
        Without it (tests, benchmarks) every such variable is dropped, so that runs are reproducible.
    :param quiet_known_warnings: add :data:`KNOWN_WARNINGS` to ``PYTHONWARNINGS`` (after this process's
        own filters, which therefore win).
    ``extra`` is applied last and wins over everything.
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
    if keep_user_settings:
        env.update(user_settings())
    if quiet_known_warnings:
        own = os.environ.get("PYTHONWARNINGS", "")
        env["PYTHONWARNINGS"] = ",".join([*KNOWN_WARNINGS, *([own] if own else [])])
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
    url = ledger_url or default_ledger_url(airflow_home)
    env["AIRFLOW_CONN_KOYWE_LEDGER"] = json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": url}})
    env.update(extra or {})
    return env


def shell_exports(airflow_home: Path = DEFAULT_AIRFLOW_HOME) -> str:
    """``export`` lines that make a shell's ``airflow …`` and ``airflow koywe …`` use the
    Airflow home, DAGs and ledger of ``make demo``/``make up`` (``eval "$(python -m koywe_demo env)"``)."""
    values = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    lines = [f"# the ledger of make demo / make up: {ledger_path(airflow_home)}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    return "\n".join(lines)


def airflow(
    env: dict[str, str], *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess:
    """Run ``airflow <args>`` with ``env`` (the ``airflow`` of this virtual environment)."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(command, env=env, check=check, text=True, capture_output=capture)


def setup(env: dict[str, str], *, quiet: bool = True) -> None:
    """Idempotent set-up: Airflow's metadata database, the pools of ``include/pools.json``, the ledger, and
    the sample onboarding secrets (:func:`koywe_demo.onboarding.write_sample_secrets`)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate", capture=quiet)
    airflow(env, "pools", "import", str(PROJECT_DIR / "include" / "pools.json"), capture=quiet)
    migrate_ledger(json.loads(env["AIRFLOW_CONN_KOYWE_LEDGER"])["extra"]["sqlalchemy_url"])
    from koywe_demo.onboarding import secrets_dir, write_sample_secrets

    write_sample_secrets(Path(env.get("KOYWE_SECRETS_DIR") or secrets_dir(Path(env["AIRFLOW_HOME"]))))


def migrate_ledger(url: str) -> None:
    from koywe_provider.ledger import Ledger

    ledger = Ledger(url)
    try:
        ledger.migrate()
    finally:
        ledger.dispose()
