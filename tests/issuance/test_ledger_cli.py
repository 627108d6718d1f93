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
