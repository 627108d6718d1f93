"""The provider registers the ``koywe`` connection type and its form with Airflow's providers manager."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    hooks = pm.hooks
    widgets = pm.connection_form_widgets
    behaviours = pm.field_behaviours
    koywe_widgets = {k: {"sensitive": v.is_sensitive, "field": v.field_name} for k, v in widgets.items() if "koywe" in k}
    hook = hooks.get("koywe")
    print("RESULT" + json.dumps({
        "providers": sorted(pm.providers),
        "hook_class": hook.hook_class_name if hook else None,
        "conn_id_attr": hook.connection_id_attribute_name if hook else None,
        "widgets": koywe_widgets,
        "behaviour": behaviours.get("koywe"),
    }))
    """
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from koywe_demo.env import airflow_env

    env = airflow_env(airflow_home=tmp_path_factory.mktemp("home"))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_provider_and_hook_registered(registry):
    assert "airflow-provider-koywe" in registry["providers"]
    assert registry["hook_class"] == "koywe_provider.hooks.koywe.KoyweHook"
    assert registry["conn_id_attr"] == "koywe_conn_id"


def test_connection_form_fields(registry):
    widgets = registry["widgets"]
    assert widgets["extra__koywe__client_secret"]["sensitive"] is True
    assert widgets["extra__koywe__client_id"]["sensitive"] is False
    assert "extra__koywe__requests_per_second" in widgets
    behaviour = registry["behaviour"]
    assert behaviour["relabeling"]["host"] == "Base URL"
    assert behaviour["relabeling"]["login"] == "API username"
    assert "port" in behaviour["hidden_fields"]


def test_provider_info_defaults():
    from koywe_provider import KOYWE_DEFAULT_BASE_URL, get_provider_info

    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "koywe"
    assert conn["conn-fields"]["requests_per_second"]["schema"]["default"] == 5
    assert conn["ui-field-behaviour"]["placeholders"]["host"] == KOYWE_DEFAULT_BASE_URL


def test_hook_test_connection_against_the_sandbox(koywe_conn, clean_sandbox):
    from koywe_provider.hooks.koywe import KoyweHook
    from koywe_provider.hooks.token_store import MemoryTokenStore

    ok, message = KoyweHook(koywe_conn(), token_store=MemoryTokenStore()).test_connection()
    assert ok, message
    bad = koywe_conn("koywe_bad", credentials={**clean_sandbox.credentials, "password": "nope-nope"})
    ok, message = KoyweHook(bad, token_store=MemoryTokenStore()).test_connection()
    assert not ok
    assert "nope-nope" not in message
