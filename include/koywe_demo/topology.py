"""Airflow's distributed topology run natively, without Docker: the services of ``docker-compose.yaml``.

``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and (for ``CeleryExecutor``) Celery workers
start as subprocesses of this machine, each in its own process group with its log in
``<AIRFLOW_HOME>/topology/<service>.log``; PostgreSQL holds the metadata (and the ledger) and Redis is
the Celery broker. Used by ``tests/topology/test_celery_topology.py`` and ``benchmarks/run_bench.py``.

Example::

    env = topology_env(airflow_env(...), database_url=pg_url, broker_url="redis://127.0.0.1:6379/5")
    setup(env)
    with run_topology(env, workers=2) as topo:
        api = topo.api()
        api.wait_for_dag("koywe_daily_issuance")
        run_id = api.trigger("koywe_daily_issuance", {"inbox": "/data/inbox"})
        api.wait_for_run("koywe_daily_issuance", run_id, timeout=600)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ADMIN_USER = "admin"
#: Seconds to wait for the api-server, a healthy scheduler and every Celery worker.
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
FINISHED_RUN_STATES = ("success", "failed")


class TopologyError(RuntimeError):
    """A service died or did not become ready; the message holds the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the native workers: ``KOYWE_WORKER_NAME`` (they share one machine).

    Task instances then record which Celery worker ran them; without the variable, the machine's FQDN.
    """
    from airflow.utils.net import getfqdn

    return os.environ.get("KOYWE_WORKER_NAME") or getfqdn()


def topology_env(
    base_env: dict[str, str],
    *,
    database_url: str,
    executor: str = "CeleryExecutor",
    broker_url: str | None = None,
    queue: str | None = None,
    api_port: int | None = None,
) -> dict[str, str]:
    """``base_env`` (from :func:`koywe_demo.env.airflow_env`) plus the settings of a distributed Airflow.

    :param database_url: SQLAlchemy URL of the metadata database (PostgreSQL: SQLite cannot serve
        several schedulers' and workers' connections).
    :param broker_url: the Celery broker (``redis://host:port/db``); required for ``CeleryExecutor``.
        The result backend is the metadata database (``db+<database_url>``).
    :param queue: the Celery queue of every task (default a fresh name, so that runs sharing one Redis
        database never take each other's tasks).
    :param api_port: the api-server's port (default a free one); tasks reach the Execution API at
        ``http://127.0.0.1:<port>/execution/``.
    Secrets (Fernet key, JWT secret, the admin's password) are generated here, fresh for each call.
    """
    if executor == "CeleryExecutor" and not broker_url:
        raise ValueError("CeleryExecutor needs broker_url (redis://host:port/db)")
    home = Path(base_env["AIRFLOW_HOME"])
    port = api_port or free_port()
    from cryptography.fernet import Fernet

    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(16)}))
    passwords.chmod(0o600)
    env = dict(base_env)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "koywe_demo.topology.worker_hostname",
            # Runs come from the REST API only: unpausing must not add a scheduled run of the cron.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue or f"koywe_{secrets.token_hex(4)}",
        }
    )
    if importlib.util.find_spec("asyncpg") is None:
        # Airflow derives an asyncpg URL for its async engine (only the dag-run ``wait`` endpoint,
        # multi-team and the task state store use it); without asyncpg in the lock it stays off.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = ""
    if broker_url:
        result_backend = "db+" + database_url  # keep the driver: SQLAlchemy 2.1 defaults to psycopg 3
        env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = result_backend
    return env


@dataclass
class Service:
    """One running Airflow command (its own process group) and its log file."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Topology:
    """The running services; :meth:`api` is a REST client logged in as the admin."""

    env: dict[str, str]
    services: list[Service] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def api(self) -> AirflowApi:
        passwords = json.loads(
            Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()
        )
        return AirflowApi(self.api_url, ADMIN_USER, passwords[ADMIN_USER], check=self.check_alive)

    def check_alive(self) -> None:
        """Raise :class:`TopologyError` when a service has exited."""
        for service in self.services:
            if service.process.poll() is not None:
                raise TopologyError(
                    f"{service.name} exited with {service.process.returncode}; log {service.log}:\n"
                    f"{service.tail()}"
                )

    def logs(self) -> str:
        return "\n".join(f"==> {s.name} <==\n{s.tail()}" for s in self.services)


def _start(topology: Topology, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
    log_dir = Path(topology.env["AIRFLOW_HOME"]) / "topology"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            env={**topology.env, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it forked
        )
    topology.services.append(Service(name, process, log))


def _stop(services: list[Service]) -> None:
    for service in services:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for service in services:
        # Forked children (task runners, uvicorn and Celery pool processes) die with their group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=5)


def _wait(topology: Topology, what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topology.check_alive()
        if ready():
            return
        time.sleep(0.5)
    raise TopologyError(f"{what} not ready within {timeout:.0f}s\n{topology.logs()}")


def _healthy(url: str, components: tuple[str, ...]) -> bool:
    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    health = response.json()
    return all((health.get(c) or {}).get("status") == "healthy" for c in components)


def _celery_workers_answer(broker_url: str, names: list[str]) -> bool:
    """True when every named worker answers a Celery control ``ping`` through the broker."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(destination=names, timeout=1.0)
    except Exception:  # broker not reachable yet: not ready
        return False
    finally:
        app.close()
    answered = {name for reply in replies for name in reply}
    return set(names) <= answered


@contextlib.contextmanager
def run_topology(
    env: dict[str, str],
    *,
    workers: int = 2,
    worker_concurrency: int = 2,
    start_timeout: float = START_TIMEOUT_S,
) -> Iterator[Topology]:
    """Start the services of ``env`` (see :func:`topology_env`); stop every one of them on exit.

    Waits until the api-server answers with a healthy metadata database, scheduler and triggerer and,
    for ``CeleryExecutor``, every worker (``worker1`` … ``worker<N>``, ``worker_concurrency`` task slots
    each) answers a Celery ``ping``. Raises :class:`TopologyError` with the logs' tails when a service
    dies or is not ready within ``start_timeout`` seconds. The metadata database must be migrated
    already.
    """
    topology = Topology(env=env)
    port = env["AIRFLOW__API__PORT"]
    celery = env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"
    try:
        _start(
            topology, "api-server", ["api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"]
        )
        _start(topology, "scheduler", ["scheduler"])
        _start(topology, "dag-processor", ["dag-processor"])
        _start(topology, "triggerer", ["triggerer"])
        if celery:
            queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
            for n in range(1, workers + 1):
                name = f"worker{n}"
                args = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", queue]
                args += ["--concurrency", str(worker_concurrency), "--without-gossip", "--without-mingle"]
                _start(
                    topology,
                    name,
                    args,
                    {
                        "KOYWE_WORKER_NAME": name,
                        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                    },
                )
        _wait(
            topology,
            "api-server, scheduler and triggerer",
            lambda: _healthy(topology.api_url, ("metadatabase", "scheduler", "triggerer")),
            start_timeout,
        )
        if celery:
            names = [
                f"{s.name}@{socket.gethostname()}" for s in topology.services if s.name.startswith("worker")
            ]
            _wait(
                topology,
                "Celery workers",
                lambda: _celery_workers_answer(env["AIRFLOW__CELERY__BROKER_URL"], names),
                start_timeout,
            )
        yield topology
    finally:
        _stop(topology.services)


class AirflowApi:
    """A small client of Airflow's REST API (``/api/v2``) with a JWT from ``POST /auth/token``."""

    def __init__(self, url: str, username: str, password: str, *, check=None) -> None:
        self.url = url.rstrip("/")
        self._check = check or (lambda: None)
        self._client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        response = self._client.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        self._client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, f"/api/v2{path}", **kwargs)

    def wait_for_dag(self, dag_id: str, *, timeout: float = 120) -> dict:
        """``GET /dags/{dag_id}`` until the dag-processor has stored it; its DAG model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check()
            response = self.request("GET", f"/dags/{dag_id}")
            if response.status_code == 200:
                return response.json()
            time.sleep(1)
        raise TopologyError(f"DAG {dag_id} not parsed within {timeout:.0f}s")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """``POST /dags/{dag_id}/dagRuns`` (logical date: now); the new run's id."""
        body = {"logical_date": datetime.now(UTC).isoformat(), "conf": conf}
        response = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        response = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float) -> dict:
        """Poll the run until ``success`` or ``failed`` (every 2 s, at most ``timeout`` s); the run."""
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            run = self.dag_run(dag_id, run_id)
            if run["state"] in FINISHED_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise TopologyError(f"run {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run, mapped ones one per map index."""
        found: list[dict] = []
        while True:
            response = self.request(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found)},
            )
            response.raise_for_status()
            page = response.json()
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def close(self) -> None:
        self._client.close()
