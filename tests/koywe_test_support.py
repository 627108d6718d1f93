"""Helpers shared by the test modules (importable: ``tests/`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from koywe_demo.databases import PG_ADMIN_URL

PROJECT_DIR = Path(__file__).resolve().parents[1]
SHARED_KOYWE = PROJECT_DIR.parent / "shared" / "koywe"


def postgres_or_skip() -> str:
    """The admin URL of the test PostgreSQL server; skip (or fail under CI=true) when it does not answer."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at {PG_ADMIN_URL} is unreachable: {err}")
        pytest.skip(
            f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({type(err).__name__}); set CI=true to fail"
        )
    return PG_ADMIN_URL


def koywe_connection_json(base_url: str, credentials: dict[str, str], **extra) -> str:
    """An ``AIRFLOW_CONN_*`` value for a ``koywe`` connection."""
    return json.dumps(
        {
            "conn_type": "koywe",
            "host": base_url,
            "login": credentials["username"],
            "password": credentials["password"],
            "extra": {
                "client_id": credentials["client_id"],
                "client_secret": credentials["client_secret"],
                **extra,
            },
        }
    )


def shared_koywe_or_skip() -> Path:
    if not SHARED_KOYWE.is_dir():
        pytest.skip(f"Koywe reference material not found at {SHARED_KOYWE} (only CI and developers have it)")
    return SHARED_KOYWE


def chile_factura(issue_date: str = "2026-11-20", *, account_id: int = 4201, net: int = 10_000) -> dict:
    """A small valid Chile factura (document_type_id 2, IVA 19 %, CLP) written for these tests."""
    tax = round(net * 0.19)
    return {
        "header": {
            "account_id": account_id,
            "document_type_id": 2,
            "received_issued_flag": 1,
            "issue_date": issue_date,
            "issuer_tax_id_code": "76086428-5",
            "issuer_tax_id_type": "CL-RUT",
            "issuer_legal_name": "Comercial Andes SpA",
            "issuer_address": "Av. Providencia 1234",
            "issuer_district": "Providencia",
            "issuer_city": "Santiago",
            "issuer_country_id": 253,
            "issuer_phone": "+56223456789",
            "issuer_activity": "Venta al por mayor",
            "receiver_tax_id_code": "96790240-3",
            "receiver_tax_id_type": "CL-RUT",
            "receiver_legal_name": "Distribuidora Pacifico Ltda",
            "receiver_address": "Calle Prat 55",
            "receiver_district": "Centro",
            "receiver_city": "Valparaiso",
            "receiver_country_id": 253,
            "receiver_phone": "+56322123456",
            "receiver_activity": "Comercio",
            "payment_conditions": "0",
            "currency_id": 39,
        },
        "details": [
            {
                "quantity": 1,
                "line_description": "Servicio de mantencion",
                "unit_measure": "UN",
                "unit_price": net,
                "modifier_amount": 0,
                "modifier_percentage": 0,
                "total_taxes": tax,
                "total_amount_line": net + tax,
                "taxes": [{"tax_type_id": 387, "tax_percentage": 19, "tax_amount": tax}],
            }
        ],
        "totals": {"net_amount": net, "taxes_amount": tax, "total_amount": net + tax},
    }


def sample_document(
    country: str, *, document_type_id: int | None = None, issue_date: str | None = None, seed: int = 0
) -> dict:
    """A valid generated document of ``country`` (``CL``, ``PE``, ``CO``, ``MX``), of ``document_type_id``
    when given, dated ``issue_date`` (default today *in that country*: Peru boletas must carry today's date,
    and the UTC date is already tomorrow in the Americas for a few hours each night)."""
    from koywe_provider import catalogue, country_rules
    from koywe_samples.generate import generate_lines

    for line in generate_lines(200, seed=seed, countries=(country,)):
        document = line["document"]
        type_id = document["header"]["document_type_id"]
        if document_type_id is None or type_id == document_type_id:
            country_id = catalogue.document_type(type_id).country_id
            document["header"]["issue_date"] = issue_date or country_rules.local_today(country_id).isoformat()
            return document
    raise LookupError(f"the generator made no {country} document of type {document_type_id}")


def mexico_ingreso(**kwargs) -> dict:
    """A valid Mexico CFDI de ingreso (Koywe document type 76)."""
    return sample_document("MX", document_type_id=76, **kwargs)


def peru_factura(**kwargs) -> dict:
    """A valid Peru factura (Koywe document type 96)."""
    return sample_document("PE", document_type_id=96, **kwargs)


def dags_test(env: dict, dag_id: str, conf: dict, outputs: list[str]) -> str:
    """``airflow dags test <dag_id> -c <conf>`` with ``env``; appends the output to ``outputs``; asserts success."""
    from koywe_demo.env import airflow

    proc = airflow(env, "dags", "test", dag_id, "-c", json.dumps(conf), check=False, capture=True)
    output = proc.stdout + proc.stderr
    outputs.append(output)
    assert proc.returncode == 0, output[-5000:]
    return output


def airflow_haystacks(home: Path, outputs: list[str]) -> dict[str, str]:
    """Everywhere a secret could leak after ``dags test`` runs in ``home``: their output (task logs),
    log files, and the ``xcom``, ``rendered_task_instance_fields`` and ``dag_run`` (conf) tables."""
    import sqlite3

    haystacks = {"dags test output": "\n".join(outputs)}
    for path in (home / "logs").rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_text(errors="replace")
    with sqlite3.connect(home / "airflow.db") as db:
        for table, column in (
            ("xcom", "value"),
            ("rendered_task_instance_fields", "rendered_fields"),
            ("dag_run", "conf"),
        ):
            haystacks[table] = "\n".join(str(row[0]) for row in db.execute(f"SELECT {column} FROM {table}"))
    return haystacks


def leaks(secrets: list[str], haystacks: dict[str, str]) -> list[tuple[str, str]]:
    """``(secret prefix, where)`` for every secret found in a haystack (the prefix never shows it whole)."""
    return [
        (secret[:6] + "…", where) for secret in secrets for where, text in haystacks.items() if secret in text
    ]
