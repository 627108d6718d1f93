"""``python -m koywe_demo {demo,up,setup}``: the project's main job on the embedded default.

``demo``  starts the local sandbox, sets up Airflow (SQLite) and runs ``airflow dags test
          koywe_daily_issuance`` on the sample inbox; its last output line is one JSON object with the
          ledger's counts and the sandbox's.
``up``    the sandbox on port 8099 plus ``airflow standalone`` (UI on http://localhost:8080).
``setup`` the idempotent set-up alone (metadata database, pools, ledger migrations).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from koywe_demo.env import DEFAULT_AIRFLOW_HOME, PROJECT_DIR, airflow, airflow_env, setup
from koywe_sandbox.testing import run_sandbox

DAG_ID = "koywe_daily_issuance"


def demo(args: argparse.Namespace) -> int:
    home = Path(args.airflow_home)
    home.mkdir(parents=True, exist_ok=True)
    ledger_path = home / "demo_ledger.db"
    for stale in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
        stale.unlink(missing_ok=True)  # a demo starts from an empty ledger, like its fresh sandbox
    ledger_url = f"sqlite:///{ledger_path}"
    with run_sandbox(port=args.port, rate_limit=args.rate_limit) as sandbox:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sandbox.base_url,
            credentials=sandbox.credentials,
            ledger_url=ledger_url,
            requests_per_second=args.rate_limit or 20,
        )
        print(f"Sandbox at {sandbox.url}; setting up Airflow in {home} ...", flush=True)
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

    ledger = Ledger(ledger_url)
    counts = ledger.counts_by_state()
    for failure in ledger.failures():
        print(f"  {failure['state']:>9}  {failure['reference']}: {failure.get('last_error')}")
    ledger.dispose()
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
    }
    print(json.dumps(summary))
    return 0


def up(args: argparse.Namespace) -> int:
    home = Path(args.airflow_home)
    with run_sandbox(port=args.port or 8099, rate_limit=args.rate_limit) as sandbox:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sandbox.base_url,
            credentials=sandbox.credentials,
            requests_per_second=args.rate_limit or 20,
        )
        setup(env)
        print(f"Sandbox at {sandbox.url} (stats: {sandbox.url}/_sandbox/stats). Starting airflow standalone;")
        print(
            f"the admin password is printed below and kept in {home}/simple_auth_manager_passwords.json.generated"
        )
        try:
            return airflow(env, "standalone", check=False).returncode
        except KeyboardInterrupt:
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m koywe_demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("demo", "up", "setup"))
    parser.add_argument("--airflow-home", default=str(DEFAULT_AIRFLOW_HOME))
    parser.add_argument("--inbox", default=str(PROJECT_DIR / "include" / "samples" / "inbox"))
    parser.add_argument("--port", type=int, default=None, help="sandbox port (default: a free one; up: 8099)")
    parser.add_argument("--rate-limit", type=float, default=20, help="sandbox and connection requests/s")
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup(airflow_env(airflow_home=Path(args.airflow_home)), quiet=False)
        return 0
    return demo(args) if args.command == "demo" else up(args)


if __name__ == "__main__":
    sys.exit(main())
