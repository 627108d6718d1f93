"""The newcomer's onboarding path: the set-up generates the sample companies' test certificates and
passwords, the sample form configurations onboard them through ``airflow dags test`` against the sandbox,
and the provisioning form speaks plainly (no "null" choices, no required mark on an optional field)."""

from __future__ import annotations

import base64
import importlib.util
import json
import stat
from pathlib import Path

import pytest

from koywe_demo.env import airflow_env, setup
from koywe_demo.onboarding import write_sample_secrets
from koywe_test_support import PROJECT_DIR, airflow_haystacks, dags_test, leaks

SAMPLES = PROJECT_DIR / "include" / "samples" / "onboarding"
DAG_ID = "koywe_account_provisioning"


def _sample_secret_values(secrets_dir: Path) -> list[str]:
    root = secrets_dir / "samples"
    values = [
        (root / "admin_password.txt").read_text().strip(),
        (root / "cl" / "certificate_password.txt").read_text(),
        (root / "mx" / "certificate_password.txt").read_text(),
    ]
    values += [
        base64.b64encode((root / name).read_bytes()).decode()[:40] for name in ("cl/firma.pfx", "mx/csd.key")
    ]
    return values


def test_sample_secrets_are_generated_once_private_and_usable(tmp_path, capsys):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_der_private_key, pkcs12

    created = write_sample_secrets(tmp_path)
    assert sorted(created) == [
        "file:samples/admin_password.txt",
        "file:samples/cl/certificate_password.txt",
        "file:samples/cl/firma.pfx",
        "file:samples/mx/certificate_password.txt",
        "file:samples/mx/csd.cer",
        "file:samples/mx/csd.key",
    ]
    root = tmp_path / "samples"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    key, cert, _ = pkcs12.load_key_and_certificates(
        (root / "cl" / "firma.pfx").read_bytes(), (root / "cl" / "certificate_password.txt").read_bytes()
    )
    assert key is not None and cert is not None
    mx_cert = x509.load_der_x509_certificate((root / "mx" / "csd.cer").read_bytes())
    mx_key = load_der_private_key(
        (root / "mx" / "csd.key").read_bytes(), (root / "mx" / "certificate_password.txt").read_bytes()
    )
    assert mx_cert.public_key().public_numbers() == mx_key.public_key().public_numbers()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert write_sample_secrets(tmp_path) == []  # idempotent: nothing regenerated
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = capsys.readouterr()
    assert leaks(_sample_secret_values(tmp_path), {"output": out.out + out.err}) == []
    # the samples reference these files and hold no secret themselves
    for sample in SAMPLES.glob("form-*.json"):
        conf = json.loads(sample.read_text())
        refs = [v for k, v in conf.items() if k.endswith("_ref")]
        assert refs and all(ref.startswith("file:samples/") for ref in refs)
        assert all((tmp_path / ref.removeprefix("file:")).is_file() for ref in refs)


def _provisioning_params():
    spec = importlib.util.spec_from_file_location("provisioning_dag", PROJECT_DIR / "dags" / f"{DAG_ID}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.params


def test_the_provisioning_form_speaks_plainly():
    params = _provisioning_params()
    for name in params:
        param = params.get_param(name)
        schema = param.schema
        kinds = schema.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        description = str(param.description or "")
        text = f"{schema.get('title')} {description}"
        assert "seed" not in text.lower() and "requires 1" not in text, name
        if None in (schema.get("enum") or []):  # the UI shows values_display["null"], else "null"
            assert (schema.get("values_display") or {}).get("null"), name
        if description.lower().startswith("optional") or "(optional)" in description.lower():
            # Airflow's form marks a field required when its type does not allow null
            assert "null" in kinds, name
    assert params.get_param("terms_of_use_accepted").description.startswith("Tick it once")


@pytest.mark.e2e
@pytest.mark.slow
def test_the_sample_forms_onboard_both_companies_against_the_sandbox(tmp_path, monkeypatch):
    from koywe_provider.ledger import AccountLedger, Ledger
    from koywe_sandbox.testing import run_sandbox

    monkeypatch.delenv("KOYWE_SECRETS_DIR", raising=False)
    home = tmp_path / "airflow_home"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    outputs: list[str] = []
    with run_sandbox(seed=13) as sb:
        env = airflow_env(
            airflow_home=home, koywe_base_url=sb.base_url, credentials=sb.credentials, ledger_url=ledger_url
        )
        env.pop("KOYWE_SECRETS_DIR", None)
        setup(env)  # generates the sample secrets in $AIRFLOW_HOME/secrets/koywe
        for name in ("form-chile.json", "form-mexico.json"):
            dags_test(env, DAG_ID, json.loads((SAMPLES / name).read_text()), outputs)
        assert sb.stats()["accounts_created"] == 2
    accounts = AccountLedger.of(Ledger(ledger_url))
    chile = accounts.get_by_tax_id(253, "76543210-3")
    mexico = accounts.get_by_tax_id(80, "CBA150312PQ9")
    assert chile["state"] == "confirmed" and chile["koywe_account_id"]
    assert mexico["state"] == "confirmed" and mexico["koywe_account_id"]
    secrets = _sample_secret_values(home / "secrets" / "koywe")
    assert leaks(secrets, airflow_haystacks(home, outputs)) == []
