"""A real Airflow API server for the Koywe page's tests: Airflow's metadata database migrated in a fresh
``AIRFLOW_HOME``, this checkout's DAGs serialized, the simple auth manager with four users (one per
role, one without a role), a ledger seeded with a day in every state and the daily run's report, and
``airflow api-server`` running on a free 127.0.0.1 port. One per test session (it takes a minute)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from koywe_ui_support import Seeded, seed_ledger

#: user → role of the simple auth manager ("" = signed in, no role: no permission at all).
USERS = {"admin": "admin", "operator": "user", "viewer": "viewer", "nobody": ""}
START_TIMEOUT_S = 300.0


@dataclass
class AirflowUi:
    url: str
    env: dict[str, str]
    home: Path
    passwords: dict[str, str]
    seeded: Seeded
    log: Path

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=60,
            trust_env=False,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def client(self, user: str | None = None, *, cookie: bool = True) -> httpx.Client:
        """A client of the API server signed in as ``user`` (the UI's ``_token`` cookie, or a bearer
        token with ``cookie=False``); anonymous without a user."""
        client = httpx.Client(base_url=self.url, timeout=60, trust_env=False, follow_redirects=False)
        if user is not None:
            token = self.token(user)
            if cookie:
                client.cookies.set("_token", token)
            else:
                client.headers["Authorization"] = f"Bearer {token}"
        return client

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _healthy(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("metadatabase", {}).get("status") == "healthy"


@pytest.fixture(scope="session")
def airflow_ui(tmp_path_factory) -> Iterator[AirflowUi]:
    from koywe_demo.env import airflow, airflow_env, setup
    from koywe_demo.topology import free_port
    from koywe_provider.ledger import Ledger

    home = tmp_path_factory.mktemp("koywe-ui-airflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps(passwords))
    ledger_url = f"sqlite:///{home / 'koywe_ledger.db'}"
    env = airflow_env(
        airflow_home=home,
        ledger_url=ledger_url,
        quiet_known_warnings=True,
        extra={
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__KOYWE__REPORTS_DIR": str(home / "reports"),
        },
    )
    setup(env)  # airflow db migrate, the pools, the ledger's migrations
    # The DAGs in the metadata database (what the REST API's details and trigger endpoints read), without
    # running a dag-processor.
    airflow(env, "dags", "reserialize", capture=True)
    ledger = Ledger(ledger_url)
    try:
        seeded = seed_ledger(ledger, reports_dir=home / "reports")
    finally:
        ledger.dispose()

    log = home / "api-server.log"
    command = [
        str(Path(sys.executable).parent / "airflow"),
        "api-server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = AirflowUi(url=url, env=env, home=home, passwords=passwords, seeded=seeded, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"airflow api-server exited with {process.returncode}:\n{ui.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server not healthy after {START_TIMEOUT_S:.0f} s:\n{ui.tail()}")
            time.sleep(0.5)
        yield ui
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
