"""docker-compose.yaml, Dockerfile and .env.example: parsed and checked (no Docker engine needed)."""

from __future__ import annotations

import re

import pytest
import yaml

from koywe_test_support import PROJECT_DIR

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``; ``$${NAME}`` is a literal for the container shell.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_DIR / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = {}
    for line in (PROJECT_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def test_the_official_airflow_3_topology_plus_the_sandbox(compose):
    services = compose["services"]
    assert set(services) == {*AIRFLOW_SERVICES, "postgres", "redis", "airflow-init", "koywe-sandbox"}
    for name, command in AIRFLOW_SERVICES.items():
        service = services[name]
        assert service["command"] == command
        assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"]
        assert service["build"] == "."  # the project's image, not a bare apache/airflow


def test_every_airflow_service_shares_database_broker_secrets_and_execution_api(compose):
    services = compose["services"]
    envs = [services[name]["environment"] for name in [*AIRFLOW_SERVICES, "airflow-init"]]
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW_CONN_KOYWE_DEFAULT",
        "AIRFLOW_CONN_KOYWE_LEDGER",
    ):
        assert len({env[key] for env in envs}) == 1, key
    env = envs[0]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW_CONN_KOYWE_LEDGER"].endswith("@postgres:5432/koywe_ledger")
    # Secrets come from .env, never from the file itself.
    assert env["AIRFLOW__CORE__FERNET_KEY"].startswith("${")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")
    assert "POSTGRES_PASSWORD" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_init_migrates_imports_pools_and_migrates_the_ledger(compose):
    init = compose["services"]["airflow-init"]
    script = "\n".join(init["command"])
    for step in (
        "CREATE DATABASE koywe_ledger",
        "airflow db migrate",
        "airflow pools import /opt/airflow/include/pools.json",
        "migrate_ledger(",
    ):
        assert step in script
    assert init["restart"] == "no"


def test_include_is_mounted_and_importable_and_the_sandbox_stays_internal(compose):
    services = compose["services"]
    for name in [*AIRFLOW_SERVICES, "airflow-init", "koywe-sandbox"]:
        service = services[name]
        assert "./include:/opt/airflow/include:ro" in service["volumes"], name
        assert "./dags:/opt/airflow/dags:ro" in service["volumes"], name
        assert service["environment"]["PYTHONPATH"] == "/opt/airflow/include"
    sandbox = services["koywe-sandbox"]
    assert "ports" not in sandbox  # only the compose network reaches it
    assert "koywe_sandbox" in sandbox["command"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"airflow-apiserver"}


def test_named_volumes_are_declared_and_used(compose):
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert "postgres-db-volume:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_every_variable_is_documented_in_env_example(compose, env_example):
    used = set(VARIABLE.findall((PROJECT_DIR / "docker-compose.yaml").read_text()))
    assert used, "the compose file takes its settings from .env"
    assert used <= set(env_example), f"undocumented: {sorted(used - set(env_example))}"
    for secret in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "POSTGRES_PASSWORD"):
        assert env_example[secret] == "", f"{secret} must be left for the user to generate"


def test_dockerfile_builds_from_airflow_3_3_2_with_the_lock():
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM apache/airflow:3.3.2")
    assert "RUN pip install --no-cache-dir -r requirements.lock" in instructions
    assert "RUN pip install --no-cache-dir --no-deps ." in instructions
    assert "ENV PYTHONPATH=/opt/airflow/include" in instructions
    for path in (
        PROJECT_DIR / "docker-compose.yaml",
        PROJECT_DIR / "Dockerfile",
        PROJECT_DIR / ".env.example",
    ):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text()
    assert "apache-airflow==3.3.2" in (PROJECT_DIR / "requirements.lock").read_text()
    ignored = (PROJECT_DIR / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)
