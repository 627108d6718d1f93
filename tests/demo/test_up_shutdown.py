"""``python -m koywe_demo up`` for real: loopback only, the user's settings, nothing left after Ctrl+C.

One ``up`` on a throwaway Airflow home and free ports, started in a session of its own as a terminal
would start ``make up``; Ctrl+C is SIGINT to that process group. Every wait is on a condition with a
generous deadline (a busy two-core machine only makes the waits longer).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from koywe_sandbox.testing import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process tree checks use Linux /proc"),
]

START_TIMEOUT_S = 420.0
STOP_TIMEOUT_S = 20.0  # the --stop-timeout given to up
EXIT_DEADLINE_S = STOP_TIMEOUT_S + 120.0
RUN_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def running_up(tmp_path_factory):
    """An ``up`` that answered healthy: its Popen, ports, Airflow home, output file and process tree."""
    home = tmp_path_factory.mktemp("airflow_home")
    output = home.parent / "up-output.log"
    api_port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            # exported by "the user": must reach every service, and win over up's own default "Enabled"
            "AIRFLOW__CORE__TEST_CONNECTION": "Hidden",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/Santiago",
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [sys.executable, "-m", "koywe_demo", "up", "--airflow-home", str(home)]
    command += [
        "--port",
        str(sandbox_port),
        "--api-port",
        str(api_port),
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
    ]
    with output.open("wb") as out:
        up = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state = {"up": up, "home": home, "output": output, "api_port": api_port, "sandbox_port": sandbox_port}
    try:
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            assert up.poll() is None, f"up exited with {up.returncode}:\n{_tail(output)}"
            assert time.monotonic() < deadline, f"not healthy within {START_TIMEOUT_S}s:\n{_tail(output)}"
            time.sleep(1)
        state["tree"] = _tree(up.pid)
        yield state
    finally:
        if up.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                for proc in [psutil.Process(up.pid), *state.get("tree", [])]:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()


def test_every_listening_socket_is_on_loopback(running_up):
    listening = []
    for proc in running_up["tree"]:
        with contextlib.suppress(psutil.Error):
            listening += [
                c.laddr for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
            ]
    ports = {addr.port for addr in listening}
    assert {running_up["api_port"], running_up["sandbox_port"]} <= ports
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening


def test_exported_airflow_settings_reach_every_service(running_up):
    services = {
        _service(p): p
        for p in running_up["tree"]
        if p.ppid() == running_up["up"].pid and "airflow" in _cmd(p)
    }
    assert set(services) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    for name in ("scheduler", "dag-processor", "triggerer"):
        environ = services[name].environ()
        assert environ.get("AIRFLOW__CORE__DEFAULT_TIMEZONE") == "America/Santiago", name
        assert environ.get("AIRFLOW__CORE__TEST_CONNECTION") == "Hidden", name

    # The API server's process title overwrites its /proc/<pid>/environ: ask the server itself.
    with _api(running_up) as api:
        config = api.get("/ui/config")
        config.raise_for_status()
        assert config.json()["test_connection"] == "Hidden"


def test_a_triggered_run_gets_its_note_through_the_scheduler(running_up):
    """The scheduler's LocalExecutor runs ``check_run``, which writes the counts into the run's note as
    the ``koywe_notes`` user that ``up`` created (``koywe_demo.up.run_note_settings``)."""
    inbox = Path(__file__).resolve().parents[2] / "include" / "samples" / "inbox"
    with _api(running_up) as api:
        api.patch("/api/v2/dags/koywe_daily_issuance", json={"is_paused": False}).raise_for_status()
        created = api.post(
            "/api/v2/dags/koywe_daily_issuance/dagRuns",
            json={"logical_date": None, "conf": {"inbox": str(inbox), "dry_run": True}},
        )
        created.raise_for_status()
        run_id = created.json()["dag_run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = api.get(f"/api/v2/dags/koywe_daily_issuance/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                break
            assert time.monotonic() < deadline, f"run still {run['state']}\n{_tail(running_up['output'])}"
            time.sleep(2)
    assert run["state"] == "success", _tail(running_up["output"])
    assert run["note"].startswith("**Koywe: done, with 6 invalid document(s)**"), run["note"]
    assert "documents 54 · issued 0 · invalid 6" in run["note"], run["note"]


def test_ctrl_c_stops_every_process_it_started(running_up):
    """Runs last (pytest keeps file order): SIGINT to the group, as a terminal's Ctrl+C."""
    up, tree = running_up["up"], running_up["tree"]
    groups = {os.getpgid(p.pid) for p in tree if _alive(p)} | {up.pid}
    assert len(tree) >= 5  # sandbox, api-server, scheduler (+ its workers), dag-processor, triggerer

    os.killpg(up.pid, signal.SIGINT)
    up.wait(timeout=EXIT_DEADLINE_S)

    deadline = time.monotonic() + 30
    while (left := _left(tree, groups)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left running: {left}\n{_tail(running_up['output'])}"
    assert up.returncode == 0, _tail(running_up["output"])
    text = running_up["output"].read_text(errors="replace")
    assert "Stopping Airflow" in text
    assert "Traceback" not in text
    for port in (running_up["api_port"], running_up["sandbox_port"]):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5, trust_env=False)
    assert not (Path(running_up["home"]) / "koywe_up.pid").exists()


def _healthy(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    body = response.json()
    components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((body.get(c) or {}).get("status") == "healthy" for c in components)


@contextlib.contextmanager
def _api(running_up):
    home = Path(running_up["home"])
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{running_up['api_port']}", timeout=30, trust_env=False
    ) as client:
        token = client.post("/auth/token", json={"username": "admin", "password": password})
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def _tree(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if _alive(p)]


def _left(tree: list[psutil.Process], groups: set[int]) -> list[str]:
    """Processes of ``tree`` still alive, and any live process in one of its process groups."""
    left = {p.pid: p for p in tree if _alive(p)}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) in groups and _alive(proc):
                left[proc.pid] = proc
    return [f"{pid}: {_cmd(p)}" for pid, p in left.items()]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmd(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "?"


def _service(proc: psutil.Process) -> str:
    cmd = _cmd(proc)
    if "api_server" in cmd or "api-server" in cmd:
        return "api-server"
    return next(s for s in ("scheduler", "dag-processor", "triggerer") if s in cmd)


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
