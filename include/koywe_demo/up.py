"""``python -m koywe_demo up``: the sandbox and Airflow's four services for trying the DAGs in the UI.

What ``airflow standalone`` does, with what a newcomer's machine needs on top:

* ``api-server`` (UI, REST API, Execution API), ``scheduler``, ``dag-processor`` and ``triggerer`` run
  as this process's children, each in its own process group, their output prefixed with their name;
* Ctrl+C, SIGTERM or SIGHUP stops every process they started — LocalExecutor workers, task runners
  (their own process groups), orphans — within ``--stop-timeout`` seconds, then kills what is left
  (:mod:`koywe_demo.processes`); a second Ctrl+C kills at once;
* everything listens on 127.0.0.1 only: the API server (``--api-port``, default 8080) and the sandbox
  (``--port``, default 8099); the scheduler and triggerer do not start Airflow's log servers, which
  always listen on every interface (the API server reads the task logs from ``$AIRFLOW_HOME/logs``);
* exported ``AIRFLOW__*`` settings are kept and win over the defaults below (see
  :func:`koywe_demo.env.airflow_env`), e.g. ``AIRFLOW__KOYWE__MAX_ATTEMPTS=3 make up``;
* connection testing is on (``[core] test_connection = Enabled``): the UI's "Test" button works;
* no run starts that nobody asked for: ``[scheduler] use_job_schedule = False`` unless ``--schedules``.
  With ``catchup=False`` a cron DAG that has never run gets its latest *past* tick as next run, so the
  UI's "Unpause on trigger" (ticked by default) would first start, say, yesterday's 06:00 run of
  ``koywe_daily_issuance`` and leave the user's own run nothing to do. Triggered runs are unaffected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
import psutil

from koywe_demo.env import (
    airflow_env,
    default_ledger_url,
    ignored_user_settings,
    setup,
    user_settings,
)
from koywe_demo.processes import Services

API_HOST = "127.0.0.1"
API_PORT = 8080
SANDBOX_PORT = 8099
#: Seconds to wait for the API server, the scheduler, the triggerer and the DAG processor to be healthy.
START_TIMEOUT_S = 300.0
PID_FILE = "koywe_up.pid"
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def up_env(
    base_env: dict[str, str], *, api_port: int | None = None, schedules: bool = False
) -> dict[str, str]:
    """``base_env`` plus the settings of ``make up``; a setting already in ``base_env`` (exported by the
    user) is kept, except the API port when ``api_port`` is given."""
    env = dict(base_env)
    if api_port is not None:
        env["AIRFLOW__API__PORT"] = str(api_port)
    env.setdefault("AIRFLOW__API__HOST", API_HOST)
    env.setdefault("AIRFLOW__API__PORT", str(API_PORT))
    host = env["AIRFLOW__API__HOST"]
    reachable = API_HOST if host in ("", "0.0.0.0", "::") else host
    env.setdefault(
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        f"http://{reachable}:{env['AIRFLOW__API__PORT']}/execution/",
    )
    env.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    env.setdefault("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "True" if schedules else "False")
    if "AIRFLOW__API_AUTH__JWT_SECRET" not in env and "AIRFLOW__API_AUTH__JWT_SECRET_CMD" not in env:
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = jwt_secret(Path(env["AIRFLOW_HOME"]))
    # 32 LocalExecutor workers by default: more than a laptop wants, and than the pools let run at once.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "8")
    return env


def jwt_secret(home: Path) -> str:
    """The secret the services sign their tokens with, kept in ``<home>/koywe_jwt_secret`` (mode 0600).

    The one Airflow writes into a new ``airflow.cfg`` is 16 bytes, and PyJWT warns on every token signed
    with fewer than 64 (``InsecureKeyLengthWarning``)."""
    path = home / "koywe_jwt_secret"
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if len(secret) < 64:
        home.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(64)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
    return secret


#: The simple auth manager's user ``make up`` creates for the run notes (role ``user``: may edit runs).
NOTES_USER = "koywe_notes"


def passwords_file(env: dict[str, str]) -> Path:
    """The simple auth manager's passwords file of ``env``'s Airflow home."""
    return Path(
        env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
        or Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    )


def run_note_settings(env: dict[str, str]) -> dict[str, str]:
    """Settings that let the DAGs' ``check_run`` write the run notes through the REST API of ``env``'s API
    server: the user :data:`NOTES_USER` (role ``user``) next to ``admin`` in the simple auth manager, its
    generated password in the passwords file (mode 0600, never printed), and the connection
    ``koywe_airflow_api`` as that user. Empty when the user exported their own users, auth manager or
    ``AIRFLOW_CONN_KOYWE_AIRFLOW_API``: then theirs are used as they are (README, "Run notes")."""
    manager = env.get("AIRFLOW__CORE__AUTH_MANAGER", "")
    if (
        "AIRFLOW_CONN_KOYWE_AIRFLOW_API" in env
        or "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS" in env
        or (manager and not manager.endswith("SimpleAuthManager"))
        or env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true"
    ):
        return {}
    path = passwords_file(env)
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError):
        passwords = {}
    if not isinstance(passwords, dict):
        passwords = {}
    if not passwords.get(NOTES_USER):
        passwords[NOTES_USER] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(passwords) + "\n")
    connection = {
        "conn_type": "http",
        "host": api_url(env),
        "login": NOTES_USER,
        "password": passwords[NOTES_USER],
    }
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{NOTES_USER}:user",
        "AIRFLOW_CONN_KOYWE_AIRFLOW_API": json.dumps(connection),
    }


def up_airflow_env(
    home: Path,
    *,
    koywe_base_url: str,
    credentials: dict[str, str],
    rate_limit: float | None,
    api_port: int | None = None,
    schedules: bool = False,
) -> dict[str, str]:
    """The environment of every service of ``make up``: :func:`~koywe_demo.env.airflow_env` (the user's
    ``AIRFLOW__*`` kept, the ledger :func:`~koywe_demo.env.ledger_path`) plus :func:`up_env`."""
    base = airflow_env(
        airflow_home=home,
        koywe_base_url=koywe_base_url,
        credentials=credentials,
        requests_per_second=rate_limit or 20,
        keep_user_settings=True,
        quiet_known_warnings=True,
    )
    env = up_env(base, api_port=api_port, schedules=schedules)
    env.update(run_note_settings(env))
    return env


def api_url(env: dict[str, str]) -> str:
    host = env["AIRFLOW__API__HOST"]
    shown = API_HOST if host in ("", "0.0.0.0", "::") else host
    return f"http://{shown}:{env['AIRFLOW__API__PORT']}"


def running_up(home: Path) -> int | None:
    """The pid of a ``python -m koywe_demo up`` still running on ``home``, if any."""
    try:
        pid = int((home / PID_FILE).read_text().split()[0])
        cmdline = psutil.Process(pid).cmdline()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if pid != os.getpid() and "koywe_demo" in " ".join(cmdline) else None


@contextlib.contextmanager
def claim_home(home: Path) -> Iterator[None]:
    """Record this process in ``<home>/koywe_up.pid`` for as long as it runs."""
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / PID_FILE
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text().split()[0] == str(os.getpid()):
                pid_file.unlink()


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP: before :meth:`arm`, a ``KeyboardInterrupt`` (the set-up unwinds);
    after it, a counter the service loop polls (no traceback, and a second signal means "kill now")."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self.armed = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if not self.armed:
            raise KeyboardInterrupt

    def arm(self) -> None:
        self.armed = True

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def health(url: str) -> dict[str, str]:
    """``{component: status}`` from ``GET /api/v2/monitor/health`` (empty while the server is down)."""
    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False)
        body = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return {c: str((body.get(c) or {}).get("status")) for c in COMPONENTS}


def admin_password(env: dict[str, str]) -> str | None:
    """The generated password of the simple auth manager's ``admin`` (None if another login is set)."""
    path = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or str(
        Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    )
    try:
        return json.loads(Path(path).read_text()).get("admin")
    except (OSError, ValueError, AttributeError):
        return None


def run_up(args: argparse.Namespace) -> int:
    from koywe_sandbox.testing import run_sandbox

    home = Path(args.airflow_home).resolve()
    if pid := running_up(home):
        print(f"make up is already running on {home} (pid {pid}); stop it first.", file=sys.stderr)
        return 1
    stop = StopRequest()
    try:
        with (
            claim_home(home),
            run_sandbox(port=args.port or SANDBOX_PORT, rate_limit=args.rate_limit) as sandbox,
        ):
            env = up_airflow_env(
                home,
                koywe_base_url=sandbox.base_url,
                credentials=sandbox.credentials,
                rate_limit=args.rate_limit,
                api_port=args.api_port,
                schedules=args.schedules,
            )
            _print_settings()
            print(
                f"Sandbox at {sandbox.url} (stats: {sandbox.url}/_sandbox/stats); setting up Airflow in {home} ..."
            )
            setup(env)
            return _serve(env, sandbox, stop, grace=args.stop_timeout)
    except KeyboardInterrupt:
        print("Interrupted during the set-up; nothing was left running.", file=sys.stderr)
        return 130
    finally:
        stop.restore()


def _print_settings() -> None:
    kept = sorted(user_settings())
    if kept:
        print(f"Keeping your exported {', '.join(kept)}")
    ignored = ignored_user_settings()
    if ignored:
        print(f"Not using your exported {', '.join(ignored)}: make up runs this checkout and its sandbox")


def _serve(env: dict[str, str], sandbox, stop: StopRequest, *, grace: float) -> int:
    airflow = str(Path(sys.executable).parent / "airflow")
    services = Services(env, keep={sandbox.process.pid})
    stop.arm()
    say = lambda line: services.echo("up", line)  # noqa: E731
    host, port = env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]
    commands = {
        "api-server": ["api-server", "--host", host, "--port", port],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }
    code = 0
    try:
        for name, command in commands.items():
            if stop.count:
                break
            services.start(name, [airflow, *command])
        url = api_url(env)
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = False
        while not stop.count:
            if dead := services.exited():
                say(f"{dead.name} exited with code {dead.process.returncode}; stopping the others")
                code = 1
                break
            if not ready and time.monotonic() > deadline:
                say(f"not healthy after {START_TIMEOUT_S:.0f} s: {health(url) or 'API server not answering'}")
                deadline = float("inf")
            if not ready and (status := health(url)) and set(status.values()) == {"healthy"}:
                ready = True
                _banner(say, env, url, sandbox)
            services.reap_orphans()
            time.sleep(1 if ready else 0.5)
    finally:
        say(
            f"Stopping Airflow: up to {grace:.0f} s for a clean exit, then what is left is killed "
            "(Ctrl+C again: kill now) ..."
        )
        running, killed = services.stop(grace, last=("api-server",), abort=lambda: stop.count > 1, say=say)
        say(f"Stopped {running} process(es)" + (f", {killed} of them killed." if killed else "."))
    return code


def _banner(say, env: dict[str, str], url: str, sandbox) -> None:
    password = admin_password(env)
    login = f"user admin, password {password}" if password else "log in with your configured users"
    say("")
    say(f"Airflow is ready: {url} ({login})")
    say(f"Sandbox: {sandbox.url} (stats: {sandbox.url}/_sandbox/stats)")
    say(f"The ledger in Airflow's UI: {url}/plugin/koywe")
    say(f"Ledger: {default_ledger_url(Path(env['AIRFLOW_HOME']))} — from a shell:")
    say('  eval "$(.venv/bin/python -m koywe_demo env)"; .venv/bin/airflow koywe list --state dead')
    say(
        "Onboard a sample company: trigger koywe_account_provisioning with "
        "include/samples/onboarding/form-chile.json (test certificates are in place)."
    )
    if env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"].lower() in ("false", "0"):
        say("Cron schedules are off: runs start only when you trigger them (--schedules turns them on).")
    say("Ctrl+C stops everything.")
    say("")
