"""``python -m koywe_provider.cli``: show a row with its attempts, re-queue a rejected row."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "koywe_provider.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_show_and_requeue(ledger, ingest, make_issuer, clean_sandbox, factura):
    bad = factura()
    bad["details"] = []
    pk = ingest(ledger, {"R-CLI": bad})["R-CLI"]
    make_issuer(ledger).issue_range(pk, pk)
    url = ledger.engine.url.render_as_string(hide_password=False)

    shown = cli("--ledger-url", url, "show", "--reference", "R-CLI")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["state"] == "rejected" and "payload" not in row
    assert [(a["kind"], a["outcome"]) for a in row["attempt_log"]] == [("create", "rejected")]

    done = cli("--ledger-url", url, "requeue", "--reference", "R-CLI")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requeued"] == 1
    assert ledger.get(pk)["state"] == "pending" and ledger.get(pk)["attempts"] == 1
    assert cli("--ledger-url", url, "requeue", "--reference", "R-CLI").returncode == 1  # nothing left


def test_a_missing_ledger_is_one_clear_line_and_is_not_created(tmp_path, capsys):
    from koywe_provider.cli import main

    path = tmp_path / "nowhere" / "koywe_ledger.db"
    assert main(["--ledger-url", f"sqlite:///{path}", "show", "--reference", "X"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("koywe: no ledger at ") and str(path) in err and "Traceback" not in err
    assert not path.exists()
    empty = tmp_path / "empty.db"
    empty.touch()  # a database that was never migrated
    assert main(["--ledger-url", f"sqlite:///{empty}", "show", "--reference", "X"]) == 2
    assert "holds no Koywe ledger" in capsys.readouterr().err


def _seeded(ledger, ingest):
    ids = ingest(ledger, {f"R-{n}": {"n": n} for n in range(5)})
    ledger.mark_dead(ids["R-1"], error="gave up", error_class="KoyweTransientError")
    ledger.mark_dead(ids["R-3"], error="2 documents", error_class="DuplicateAlarm")
    return ids


def test_list_prints_the_rows_of_a_state_as_a_table_or_json(ledger, ingest, capsys):
    from koywe_provider.cli import main

    _seeded(ledger, ingest)
    url = ledger.engine.url.render_as_string(hide_password=False)
    assert main(["--ledger-url", url, "list", "--state", "dead"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "id",
        "reference",
        "account_id",
        "state",
        "attempts",
        "last_error_class",
        "document_number",
        "updated_at",
    ]
    assert [line.split()[1] for line in lines[1:]] == ["R-1", "R-3"]
    assert "DuplicateAlarm" in lines[2]
    assert main(["--ledger-url", url, "list", "--state", "pending", "--limit", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reference"] for r in rows] == ["R-0", "R-2"]
    assert "payload" not in rows[0] and rows[0]["updated_at"].endswith("+00:00")


def test_export_writes_every_matching_row_as_csv_without_payloads(
    ledger, ingest, tmp_path, capsys, monkeypatch
):
    import csv

    from koywe_provider import cli as cli_module

    monkeypatch.setattr(cli_module, "PAGE", 2)  # several pages
    _seeded(ledger, ingest)
    url = ledger.engine.url.render_as_string(hide_password=False)
    out = tmp_path / "ledger.csv"
    assert cli_module.main(["--ledger-url", url, "export", "--csv", str(out)]) == 0
    assert "koywe: exported 5 row(s) to " in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [r["reference"] for r in rows] == [f"R-{n}" for n in range(5)]
    assert "payload" not in rows[0] and "raw_line" not in rows[0]
    assert rows[1]["state"] == "dead" and rows[1]["last_error_class"] == "KoyweTransientError"
    assert cli_module.main(["--ledger-url", url, "export", "--csv", "-", "--state", "issued"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("id,account_id,reference,state")


def test_airflow_koywe_reads_the_koywe_ledger_connection_of_the_airflow_home(ledger, ingest, tmp_path):
    """``airflow koywe …`` (a provider CLI command) finds the ledger the DAGs find: the connection
    ``koywe_ledger`` stored in the metadata database of this AIRFLOW_HOME."""
    from koywe_demo.env import airflow, airflow_env

    _seeded(ledger, ingest)
    env = airflow_env(airflow_home=tmp_path / "home")
    env.pop("AIRFLOW_CONN_KOYWE_LEDGER")
    airflow(env, "db", "migrate", capture=True)
    url = ledger.engine.url.render_as_string(hide_password=False)
    airflow(
        env,
        "connections",
        "add",
        "koywe_ledger",
        "--conn-type",
        "sqlite",
        "--conn-extra",
        json.dumps({"sqlalchemy_url": url}),
        capture=True,
    )
    listed = airflow(env, "koywe", "list", "--state", "dead", "--json", check=False, capture=True)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert [json.loads(line)["reference"] for line in listed.stdout.splitlines()] == ["R-1", "R-3"]
    shown = airflow(env, "koywe", "show", "--reference", "R-3", check=False, capture=True)
    assert json.loads(shown.stdout)[0]["last_error_class"] == "DuplicateAlarm"
    env["AIRFLOW_CONN_KOYWE_LEDGER"] = json.dumps(
        {"conn_type": "sqlite", "extra": {"sqlalchemy_url": f"sqlite:///{tmp_path / 'none.db'}"}}
    )
    missing = airflow(env, "koywe", "list", check=False, capture=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("koywe: no ledger at ")
    assert "Traceback" not in missing.stderr
