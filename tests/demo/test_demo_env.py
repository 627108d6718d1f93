"""The environment of ``make demo`` and ``make up``: one ledger, the user's settings, the defaults of up."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from koywe_demo.demo import demo_env, run_demo
from koywe_demo.env import KNOWN_WARNINGS, PROJECT_DIR, airflow_env, migrate_ledger
from koywe_demo.up import up_airflow_env
from koywe_sandbox.testing import wait_for

SANDBOX = {
    "koywe_base_url": "http://127.0.0.1:9/V1",
    "credentials": {"client_id": "c", "client_secret": "s", "username": "u", "password": "p"},
    "rate_limit": 5,
}


@pytest.fixture(autouse=True)
def no_exported_airflow_settings(monkeypatch):
    """Each test starts from a shell without ``AIRFLOW*`` variables and adds the ones it exports."""
    for name in list(os.environ):
        if name.startswith("AIRFLOW") or name == "PYTHONWARNINGS":
            monkeypatch.delenv(name)


def ledger_of(env: dict[str, str]) -> str:
    return json.loads(env["AIRFLOW_CONN_KOYWE_LEDGER"])["extra"]["sqlalchemy_url"]


def test_demo_and_up_use_one_airflow_home_and_one_ledger(tmp_path):
    demo, up = demo_env(tmp_path, **SANDBOX), up_airflow_env(tmp_path, **SANDBOX)

    assert demo["AIRFLOW_HOME"] == up["AIRFLOW_HOME"] == str(tmp_path)
    assert ledger_of(demo) == ledger_of(up) == f"sqlite:///{tmp_path / 'koywe_ledger.db'}"


def test_the_ledger_is_the_one_the_hook_finds_under_that_airflow_home(tmp_path, monkeypatch):
    """``python -m koywe_provider.cli`` without ``--ledger-url`` (no ``koywe_ledger`` connection in the
    shell) opens ``KoyweLedgerHook``'s default: it must be the ledger of demo and up."""
    from koywe_provider.hooks.ledger import default_ledger_url

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert default_ledger_url() == ledger_of(up_airflow_env(tmp_path, **SANDBOX))


def test_exported_settings_are_kept_and_win_except_this_checkouts_own(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TIMEZONE", "America/Santiago")
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Hidden")
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "True")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/elsewhere/dags")
    monkeypatch.setenv("AIRFLOW_CONN_KOYWE_DEFAULT", "koywe://real-user:secret@api-billing.koywe.com")
    monkeypatch.setenv("AIRFLOW_CONN_KOYWE_LEDGER", "postgres://elsewhere/ledger")
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", "smtp://127.0.0.1:2525")

    for env in (up_airflow_env(tmp_path, **SANDBOX), demo_env(tmp_path, **SANDBOX)):
        assert env["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "America/Santiago"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "True"
        assert env["AIRFLOW_CONN_SMTP_DEFAULT"] == "smtp://127.0.0.1:2525"
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_DIR / "dags")
        assert json.loads(env["AIRFLOW_CONN_KOYWE_DEFAULT"])["host"] == SANDBOX["koywe_base_url"]
        assert ledger_of(env) == f"sqlite:///{tmp_path / 'koywe_ledger.db'}"
    assert up_airflow_env(tmp_path, **SANDBOX)["AIRFLOW__CORE__TEST_CONNECTION"] == "Hidden"

    isolated = airflow_env(airflow_home=tmp_path)  # tests and benchmarks: nothing of the shell
    assert "AIRFLOW__CORE__DEFAULT_TIMEZONE" not in isolated
    assert "AIRFLOW_CONN_SMTP_DEFAULT" not in isolated
    assert "PYTHONWARNINGS" not in isolated


def test_up_listens_on_loopback_tests_connections_and_starts_no_scheduled_run(tmp_path, monkeypatch):
    env = up_airflow_env(tmp_path, **SANDBOX)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "8080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"
    assert env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64  # PyJWT warns on shorter HMAC keys
    assert (
        up_airflow_env(tmp_path, **SANDBOX)["AIRFLOW__API_AUTH__JWT_SECRET"]
        == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    )

    env = up_airflow_env(tmp_path, **SANDBOX, api_port=18080, schedules=True)
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "True"

    monkeypatch.setenv("AIRFLOW__API__PORT", "9090")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "True")
    env = up_airflow_env(tmp_path, **SANDBOX)
    assert env["AIRFLOW__API__PORT"] == "9090"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9090/execution/"
    assert env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "True"
    assert up_airflow_env(tmp_path, **SANDBOX, api_port=18081)["AIRFLOW__API__PORT"] == "18081"


def test_known_third_party_warnings_are_hidden_and_others_are_not(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "always::RuntimeWarning")
    env = demo_env(tmp_path, **SANDBOX)
    assert env["PYTHONWARNINGS"].split(",") == [*KNOWN_WARNINGS, "always::RuntimeWarning"]
    script = "\n".join(
        [
            "import warnings",
            "warnings.warn(\"GitWildMatchPattern ('gitwildmatch') is deprecated. Use 'gitignore'\", DeprecationWarning)",
            "warnings.warn('Could not import graphviz. Rendering graph', UserWarning)",
            "warnings.warn('Using `httpx` with `starlette.testclient` is deprecated; install `httpx2`', UserWarning)",
            "warnings.warn('a warning of our own', UserWarning)",
            "warnings.warn('a runtime warning', RuntimeWarning)",
        ]
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    assert "a warning of our own" in run.stderr
    assert "a runtime warning" in run.stderr
    for hidden in ("GitWildMatchPattern", "graphviz", "starlette", "Invalid -W option"):
        assert hidden not in run.stderr


def test_demo_refuses_to_reset_the_ledger_while_up_runs_on_the_same_home(tmp_path, capsys):
    ledger = tmp_path / "koywe_ledger.db"
    ledger.write_bytes(b"the ledger of a running make up")
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "koywe_demo", "up"])
    try:
        # Until the child has exec'd, /proc shows pytest's command line: wait for the stand-in's own.
        wait_for(lambda: "koywe_demo" in " ".join(psutil.Process(stand_in.pid).cmdline()), timeout=60)
        (tmp_path / "koywe_up.pid").write_text(f"{stand_in.pid}\n")
        args = argparse.Namespace(airflow_home=str(tmp_path), port=None, rate_limit=5, inbox=str(tmp_path))

        assert run_demo(args) == 1
    finally:
        stand_in.kill()
        stand_in.wait()
    assert f"pid {stand_in.pid}" in capsys.readouterr().err
    assert ledger.read_bytes() == b"the ledger of a running make up"


@pytest.mark.slow
def test_the_cli_finds_the_ledger_with_the_exports_of_koywe_demo_env(tmp_path):
    """``eval "$(python -m koywe_demo env)"`` then ``python -m koywe_provider.cli show`` reads the ledger of
    demo and up, and creates nothing in the user's ``~/airflow``."""
    home, user_home = tmp_path / "airflow_home", tmp_path / "user"
    user_home.mkdir()
    home.mkdir()
    migrate_ledger(ledger_of(up_airflow_env(home, **SANDBOX)))
    exports = subprocess.run(
        [sys.executable, "-m", "koywe_demo", "env", "--airflow-home", str(home)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    script = f'{exports}\nexec "{sys.executable}" -m koywe_provider.cli show --reference NOT-THERE'
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"HOME": str(user_home)}

    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)

    assert "no such table" not in run.stderr, run.stderr[-3000:]
    assert run.returncode in (0, 1), run.stderr[-3000:]
    assert json.loads(run.stdout) == []
    assert not (user_home / "airflow").exists()
    assert Path(home / "koywe_ledger.db").is_file()
