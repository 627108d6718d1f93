"""``python -m koywe_demo demo``: issue the sample inbox through ``airflow dags test`` against a fresh sandbox.

Prints the ledger's failures, the report's path and, as its last line, one JSON object with the ledger's
counts, the sandbox's, and ``archived``: the documents and files of the legal archive and how many files
read back with their recorded SHA-256. Starts from an empty ledger, like its fresh sandbox: the ledger of the Airflow
home, ``<airflow home>/koywe_ledger.db``, the one ``make up`` uses afterwards (never while ``make up``
runs on the same home).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from koywe_demo.env import airflow, airflow_env, default_ledger_url, ledger_path, setup

DAG_ID = "koywe_daily_issuance"


def demo_env(
    home: Path, *, koywe_base_url: str, credentials: dict[str, str], rate_limit: float | None
) -> dict[str, str]:
    """The environment of the demo's Airflow commands (see :func:`koywe_demo.env.airflow_env`)."""
    return airflow_env(
        airflow_home=home,
        koywe_base_url=koywe_base_url,
        credentials=credentials,
        ledger_url=default_ledger_url(home),
        requests_per_second=rate_limit or 20,
        keep_user_settings=True,
        quiet_known_warnings=True,
    )


def archive_check(ledger) -> dict[str, int]:
    """The legal archive the run wrote: ``documents`` and ``files`` recorded in the ledger, and how many
    files read back with the SHA-256 the ledger recorded (``checksums_ok``; local ``file://`` files)."""
    import hashlib
    from urllib.parse import unquote, urlparse

    from koywe_provider.ledger.archive import archive_files

    records = archive_files(ledger)
    ok = 0
    for record in records:
        url = urlparse(record["path"])
        path = Path(unquote(url.path)) if url.scheme in ("file", "") else None
        if path is not None and path.is_file():
            ok += hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    documents = len({r["koywe_document_id"] for r in records})
    return {"documents": documents, "files": len(records), "checksums_ok": ok}


def run_demo(args: argparse.Namespace) -> int:
    from koywe_demo.up import running_up
    from koywe_sandbox.testing import run_sandbox

    home = Path(args.airflow_home).resolve()
    if pid := running_up(home):
        print(
            f"make up is running on {home} (pid {pid}) and shares its ledger; stop it first.", file=sys.stderr
        )
        return 1
    home.mkdir(parents=True, exist_ok=True)
    ledger = ledger_path(home)
    for stale in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
        stale.unlink(missing_ok=True)  # a demo starts from an empty ledger, like its fresh sandbox
    ledger_url = default_ledger_url(home)
    with run_sandbox(port=args.port, rate_limit=args.rate_limit) as sandbox:
        env = demo_env(
            home, koywe_base_url=sandbox.base_url, credentials=sandbox.credentials, rate_limit=args.rate_limit
        )
        print(f"Sandbox at {sandbox.url}; setting up Airflow in {home} (ledger {ledger}) ...", flush=True)
        setup(env)
        airflow(env, "variables", "delete", "koywe_token__koywe_default", check=False, capture=True)
        conf = {"inbox": str(Path(args.inbox).resolve())}
        print(f"Running airflow dags test {DAG_ID} on {conf['inbox']} ...", flush=True)
        log_path = home / "demo_dags_test.log"
        run = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf), check=False, capture=True)
        log_path.write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-6000:], file=sys.stderr)
            print(f"airflow dags test failed (exit {run.returncode}); full log: {log_path}", file=sys.stderr)
            return run.returncode
        stats = sandbox.stats()

    from koywe_provider.ledger import Ledger

    ledger_db = Ledger(ledger_url)
    counts = ledger_db.counts_by_state()
    for failure in ledger_db.failures():
        print(f"  {failure['state']:>9}  {failure['reference']}: {failure.get('last_error')}")
    archived = archive_check(ledger_db)
    ledger_db.dispose()
    reports = sorted((home / "koywe_reports" / DAG_ID).glob("*.md"), key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"Report: {reports[-1]}")
    print(f"Airflow log of the run: {log_path}")
    summary = {
        "issued": counts.get("issued", 0),
        "rejected": counts.get("rejected", 0),
        "invalid": counts.get("invalid", 0),
        "retryable": counts.get("retryable", 0),
        "unknown": counts.get("unknown", 0),
        "sandbox_auth_calls": stats["auth_calls"],
        "sandbox_documents_created": stats["documents_created"],
        "sandbox_duplicate_references": stats["duplicate_references"],
        "archived": archived,
    }
    print(json.dumps(summary))
    return 0
