"""End to end: ``airflow dags test koywe_account_provisioning`` against the sandbox, form run then batch run.

Secrets come from a secrets folder, an Airflow Variable and a connection; afterwards the task logs, the
``dags test`` output, and the metadata tables ``xcom``, ``rendered_task_instance_fields`` and ``dag_run``
are searched for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koywe_account_support import (
    ADMIN_PASSWORD,
    PFX_PASSWORD,
    SAT_PASSWORD,
    b64,
    cer_der,
    key_der,
    pfx,
    provisioning_request,
    secret_values,
)
from koywe_demo.env import airflow_env, setup
from koywe_provider.ledger import AccountLedger, Ledger
from koywe_test_support import airflow_haystacks, dags_test, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAG_ID = "koywe_account_provisioning"


class Env:
    def __init__(self, tmp: Path):
        from koywe_sandbox.testing import run_sandbox

        self.home = tmp / "airflow_home"
        self.secrets = tmp / "secrets"
        self.inbox = tmp / "inbox"
        self.inbox.mkdir(parents=True)
        self.ledger_url = f"sqlite:///{tmp / 'ledger.db'}"
        self._cm = run_sandbox(seed=11)
        self.sandbox = self._cm.__enter__()
        mx_dir = self.secrets / "mx-conn"
        mx_dir.mkdir(parents=True)
        (mx_dir / "csd.key").write_bytes(key_der())
        self.env = airflow_env(
            airflow_home=self.home,
            koywe_base_url=self.sandbox.base_url,
            credentials=self.sandbox.credentials,
            ledger_url=self.ledger_url,
            requests_per_second=50,
            extra={
                "KOYWE_SECRETS_DIR": str(self.secrets),
                "AIRFLOW_VAR_KOYWE_CL_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "AIRFLOW_CONN_KOYWE_ONBOARDING_MX": json.dumps(
                    {
                        "conn_type": "generic",
                        "password": ADMIN_PASSWORD,
                        "extra": {
                            "certificate_password": SAT_PASSWORD,
                            "certificate_cer": b64(cer_der()),
                            "certificate_key_path": "mx-conn/csd.key",
                        },
                    }
                ),
            },
        )
        setup(self.env)
        self.outputs: list[str] = []

    def dags_test(self, conf: dict) -> str:
        return dags_test(self.env, DAG_ID, conf, self.outputs)

    def accounts(self) -> AccountLedger:
        return AccountLedger.of(Ledger(self.ledger_url))

    def reports(self) -> list[dict]:
        folder = self.home / "koywe_reports" / DAG_ID
        return [
            json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        ]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("accounts_e2e"))
    try:
        yield e
    finally:
        e._cm.__exit__(None, None, None)


FORM = {
    "mode": "form",
    "request_id": "onboard-andes",
    "country_id": 253,
    "registration_legal_name_company": "Comercial Andes SpA",
    "registration_tax_id_type": "CL-RUT",
    "registration_tax_id_code": "76.086.428-5",
    "registration_company_size": "2",
    "contact_name": "Ana Rojas",
    "contact_phone": "+56 9 8410 5522",
    "admin_email": "ana@andes.example.com",
    "terms_of_use_accepted": True,
    "admin_password_ref": "var:koywe_cl_admin_password",
    "certificate_file_ref": "file:cl/firma.pfx",
    "certificate_password_ref": "file:cl/pfx_password.txt",
    "account_config": {"time_zone": "UTC-3", "rounding_format": 0},
}


@pytest.fixture(scope="module")
def form_run(env):
    (env.secrets / "cl").mkdir(parents=True, exist_ok=True)
    (env.secrets / "cl" / "firma.pfx").write_bytes(pfx())
    (env.secrets / "cl" / "pfx_password.txt").write_text(PFX_PASSWORD + "\n")
    env.dags_test(FORM)
    return env


def test_form_run_creates_and_confirms_one_account(form_run):
    env = form_run
    assert env.sandbox.stats()["accounts_created"] == 1
    row = env.accounts().get_by_tax_id(253, "76086428-5")
    assert row["state"] == "confirmed" and row["koywe_account_id"]
    assert row["certification_status"] == "pending"
    assert "admin_password" not in json.dumps(row["request"]) or ADMIN_PASSWORD not in json.dumps(
        row["request"]
    )
    report = env.reports()[-1]
    assert report["states"] == {"confirmed": 1}
    assert report["accounts"][0]["request"] == "onboard-andes"


@pytest.fixture(scope="module")
def batch_run(form_run):
    env = form_run
    good = [provisioning_request(country, env.secrets) for country in (66, 83, 89, 88)]
    mexico = provisioning_request(80, env.secrets, request_id="onboard-mx-conn")
    mexico["secrets"] = {}
    mexico["secrets_conn_id"] = "koywe_onboarding_mx"
    bad_peru = provisioning_request(
        83,
        env.secrets,
        request_id="bad-peru",
        registration_tax_id_code="12345678901",
        contact_phone="+56984105522",
        registration_company_size="7",
    )
    clear_secret = provisioning_request(
        89, env.secrets, request_id="clear-secret", registration_tax_id_code="98-7654321"
    )
    clear_secret["account"]["admin_password"] = "Written-In-Clear-1"
    again = provisioning_request(253, env.secrets, request_id="andes-again")  # created by the form run
    (env.inbox / "batch.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [*good, bad_peru, clear_secret]) + "\n"
    )
    (env.inbox / "single.json").write_text(json.dumps([mexico, again]))
    (env.inbox / "ignored.txt").write_text("not a request")
    env.before = env.sandbox.stats()["accounts_created"]
    env.dags_test({"mode": "batch", "inbox": str(env.inbox)})
    return env


def test_batch_run_creates_valid_companies_once(batch_run):
    env = batch_run
    assert env.sandbox.stats()["accounts_created"] - env.before == 5  # CO, PE, US, AR + MX (connection)
    accounts = env.accounts()
    states = {(r["country_id"], r["registration_tax_id_code"]): r["state"] for r in accounts.by_state()}
    assert states[(66, "900123456-8")] == "confirmed"
    assert states[(80, "EKU9003199C1")] == "confirmed"
    assert states[(253, "76086428-5")] == "confirmed"  # untouched by the second request


def test_invalid_requests_stop_before_the_api_with_every_error(batch_run):
    report = batch_run.reports()[-1]
    by_request = {e["request"]: e for e in report["accounts"]}
    bad = by_request["bad-peru"]
    assert bad["state"] == "invalid"
    assert {f for f, _ in bad["errors"]} == {
        "registration_tax_id_code",
        "contact_phone",
        "registration_company_size",
    }
    clear = by_request["clear-secret"]
    assert clear["state"] == "invalid"
    assert [f for f, _ in clear["errors"]] == ["admin_password"]
    again = by_request["andes-again"]
    assert again["state"] == "confirmed" and "not sent again" in again["note"]
    assert report["states"]["confirmed"] == 6


def test_rerun_sends_nothing(batch_run):
    env = batch_run
    created = env.sandbox.stats()["accounts_created"]
    env.dags_test({"mode": "batch", "inbox": str(env.inbox)})
    assert env.sandbox.stats()["accounts_created"] == created


def test_secrets_never_reach_logs_xcoms_rendered_fields_or_conf(batch_run):
    env = batch_run
    secrets = [*secret_values(), "Written-In-Clear-1", b64(cer_der())[:40]]
    haystacks = airflow_haystacks(env.home, env.outputs)
    # `dags test` runs the tasks in-process: their logs are in its output (and any log files).
    assert "Request bad-peru is invalid" in haystacks["dags test output"], (
        "task logs missing: the search is vacuous"
    )
    # the search sees real data in every table
    assert "onboard-andes" in haystacks["dag_run"] and "bad-peru" in haystacks["xcom"]
    assert "koywe_ledger" in haystacks["rendered_task_instance_fields"]
    assert leaks(secrets, haystacks) == []
    assert "Written-In-Clear-1" not in json.dumps([r["request"] for r in env.accounts().by_state()])
