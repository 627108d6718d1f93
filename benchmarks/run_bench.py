"""``make bench``: issuance throughput against Koywe's rate limit, ingestion memory and DAG parse cost.

A benchmark, not a test: it measures and records, it asserts nothing. Steps:

1. **DAG parse cost**: a fresh interpreter (with ``airflow.sdk`` already imported, as in the
   dag-processor) imports every file of ``dags/``; ``dag_import_seconds`` is the total.
2. **Ingestion memory**: ``--ingest-documents`` (100,000) generated documents (``koywe_samples``) are
   read from one JSON Lines file (``ObjectStoragePath``, streamed) into a SQLite ledger in a separate
   process; ``peak_rss_mb`` is that process's peak resident memory (``getrusage``).
3. **Issuance**: ``--documents`` (2,000) generated documents go through ``koywe_daily_issuance`` under a
   real scheduler (``--executor local``: LocalExecutor; ``celery``: two Celery workers on Redis) with the
   metadata database and the ledger on a throwaway PostgreSQL database, against the sandbox at
   ``--rate-limit`` requests/s and ``--latency-ms`` per call; the ``koywe_default`` connection's
   ``requests_per_second`` is the same rate. ``issue_seconds`` runs from the first ``issue`` task's
   start to the last one's end; ``docs_per_second = documents / issue_seconds``.
4. **Baseline** on the same documents and sandbox: the loop Koywe's docs describe, one ``POST
   /documents`` after another with one cached token (``--baseline-documents`` of them: its rate is
   bounded by one request's round trip, so a sample measures it).

Prints one JSON line and appends a row to ``benchmarks/results.md``. Needs PostgreSQL at
127.0.0.1:5432 (``KOYWE_TEST_PG_URL``) and, for ``--executor celery``, Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from datetime import UTC, date, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.md"
DAG_ID = "koywe_daily_issuance"
RESULT_COLUMNS = (
    "date",
    "executor",
    "documents",
    "rate_limit",
    "latency_ms",
    "issue_seconds",
    "docs_per_second",
    "fraction_of_rate_limit",
    "baseline_docs_per_second",
    "auth_calls",
    "lookups",
    "rate_limited",
    "max_in_flight",
    "ingest_documents",
    "ingest_seconds",
    "peak_rss_mb",
    "dag_import_seconds",
)


# ------------------------------------------------------------------------------------------ probes
def probe_dag_imports() -> dict:
    """Run in a fresh interpreter: seconds to import every DAG file once ``airflow.sdk`` is loaded."""
    import importlib.util

    import airflow.sdk  # noqa: F401 - loaded before the clock starts, as in the dag-processor

    files = sorted((PROJECT_DIR / "dags").glob("*.py"))
    started = time.perf_counter()
    for path in files:
        spec = importlib.util.spec_from_file_location(f"bench_dag_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return {"dag_files": len(files), "dag_import_seconds": round(time.perf_counter() - started, 3)}


def probe_ingest(inbox_file: str, ledger_url: str) -> dict:
    """Run in a fresh interpreter: ingest ``inbox_file`` into a new ledger; seconds and peak RSS (MB)."""
    from koywe_provider.ledger import Ledger
    from koywe_provider.services.ingestion import as_storage_path, read_inbox

    ledger = Ledger(ledger_url)
    ledger.migrate()
    started = time.perf_counter()
    counts = ledger.ingest_many(
        read_inbox(as_storage_path(inbox_file), issue_date=date.today()), run_id="bench"
    )
    seconds = time.perf_counter() - started
    ledger.dispose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "ingest_counts": counts.as_dict(),
        "ingest_seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def run_probe(*args: str, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--probe", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ pieces
def generate_inbox(path: Path, count: int, *, seed: int, prefix: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "koywe_samples",
            "--count",
            str(count),
            "--seed",
            str(seed),
            "--prefix",
            prefix,
            "--out",
            str(path),
        ],
        check=True,
    )


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def issue_through_airflow(args, home: Path, inbox: Path, sandbox, database_url: str) -> dict:
    """One run of the DAG on a real scheduler; timings from the task instances, counts from the ledger."""
    from koywe_demo.env import airflow_env, setup
    from koywe_demo.topology import run_topology, topology_env
    from koywe_provider.ledger import Ledger

    base = airflow_env(
        airflow_home=home,
        koywe_base_url=sandbox.base_url,
        credentials=sandbox.credentials,
        ledger_url=database_url,
        requests_per_second=args.rate_limit,
        extra={"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"},
    )
    celery = args.executor == "celery"
    env = topology_env(
        base,
        database_url=database_url,
        executor="CeleryExecutor" if celery else "LocalExecutor",
        broker_url=f"redis://127.0.0.1:6379/{args.redis_db}" if celery else None,
    )
    setup(env)
    with run_topology(env, workers=2, worker_concurrency=2) as topology:
        api = topology.api()
        api.wait_for_dag(DAG_ID)
        api.unpause(DAG_ID)
        run_id = api.trigger(DAG_ID, {"inbox": str(inbox), "issue_date": date.today().isoformat()})
        run = api.wait_for_run(DAG_ID, run_id, timeout=args.timeout)
        tis = api.task_instances(DAG_ID, run_id)
        api.close()
    issue = [ti for ti in tis if ti["task_id"] == "issue" and ti["start_date"] and ti["end_date"]]
    if run["state"] != "success" or not issue:
        failed = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis if ti["state"] != "success"]
        raise SystemExit(f"run {run_id} ended {run['state']}: {failed}; logs in {home}")
    first = min(_when(ti["start_date"]) for ti in issue)
    last = max(_when(ti["end_date"]) for ti in issue)
    ledger = Ledger(database_url)
    counts = ledger.counts_by_state()
    ledger.dispose()
    return {
        "issue_seconds": (last - first).total_seconds(),
        "run_seconds": (_when(run["end_date"]) - _when(run["start_date"])).total_seconds(),
        "issue_tasks": len(issue),
        "ledger": counts,
    }


def baseline(args, inbox: Path, sandbox) -> dict:
    """The sequential loop of Koywe's docs: one hook, one cached token, one POST after another."""
    from itertools import islice

    from koywe_provider.hooks.koywe import KoyweHook
    from koywe_provider.hooks.token_store import MemoryTokenStore
    from koywe_provider.services.ingestion import as_storage_path, read_inbox

    os.environ["AIRFLOW_CONN_KOYWE_BENCH_BASELINE"] = json.dumps(
        {
            "conn_type": "koywe",
            "host": sandbox.base_url,
            "login": sandbox.credentials["username"],
            "password": sandbox.credentials["password"],
            "extra": {
                "client_id": sandbox.credentials["client_id"],
                "client_secret": sandbox.credentials["client_secret"],
                "requests_per_second": args.rate_limit,
            },
        }
    )
    items = [
        item
        for item in islice(
            read_inbox(as_storage_path(str(inbox)), issue_date=date.today()), args.baseline_documents
        )
        if not item.error
    ]
    hook = KoyweHook("koywe_bench_baseline", token_store=MemoryTokenStore())
    hook.get_token()
    started = time.perf_counter()
    for item in items:
        hook.create_document(item.payload, reference=item.reference)
    seconds = time.perf_counter() - started
    return {"baseline_documents": len(items), "baseline_seconds": round(seconds, 1)}


def append_result(row: dict, path: Path = RESULTS) -> None:
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nOne row per `make bench` (see benchmarks/run_bench.py and the README).\n\n"
            f"| {' | '.join(RESULT_COLUMNS)} |\n|{'---|' * len(RESULT_COLUMNS)}\n"
        )
    with path.open("a") as handle:
        handle.write(
            "| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in RESULT_COLUMNS) + " |\n"
        )


# ------------------------------------------------------------------------------------------ main
def bench(args) -> dict:
    from koywe_demo.databases import throwaway_database
    from koywe_sandbox.testing import run_sandbox

    with tempfile.TemporaryDirectory(prefix="koywe_bench_") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "airflow_home"
        home.mkdir()
        os.environ["AIRFLOW_HOME"] = str(home)  # this process's own Airflow imports (baseline hook)
        env = {**os.environ, "AIRFLOW_HOME": str(home)}

        print("measuring DAG import time ...", file=sys.stderr, flush=True)
        parse = run_probe("dag-imports", env=env)

        ingest: dict = {}
        if args.ingest_documents:
            print(f"ingesting {args.ingest_documents} documents ...", file=sys.stderr, flush=True)
            big = tmp_path / "ingest" / "day.jsonl"
            big.parent.mkdir()
            generate_inbox(big, args.ingest_documents, seed=args.seed + 1, prefix="ING")
            ingest = run_probe("ingest", str(big), f"sqlite:///{tmp_path / 'ingest.db'}", env=env)
            big.unlink()

        inbox = tmp_path / "inbox"
        inbox.mkdir()
        generate_inbox(inbox / "day.jsonl", args.documents, seed=args.seed, prefix="BENCH")
        with run_sandbox(seed=args.seed, rate_limit=args.rate_limit, latency_ms=args.latency_ms) as sandbox:
            with throwaway_database("koywe_bench") as database_url:
                print(
                    f"issuing {args.documents} documents ({args.executor} executor) ...",
                    file=sys.stderr,
                    flush=True,
                )
                issued = issue_through_airflow(args, home, inbox, sandbox, database_url)
            stats = sandbox.stats()
            sandbox.reset()
            print(f"baseline on {args.baseline_documents} documents ...", file=sys.stderr, flush=True)
            base = baseline(args, inbox, sandbox)

    documents = issued["ledger"].get("issued", 0)
    docs_per_second = documents / issued["issue_seconds"] if issued["issue_seconds"] else 0.0
    return {
        "documents": documents,
        "rate_limit": args.rate_limit,
        "latency_ms": args.latency_ms,
        "issue_seconds": round(issued["issue_seconds"], 1),
        "docs_per_second": round(docs_per_second, 2),
        "fraction_of_rate_limit": round(docs_per_second / args.rate_limit, 3),
        "baseline_docs_per_second": round(base["baseline_documents"] / base["baseline_seconds"], 2),
        "auth_calls": stats["auth_calls"],
        "lookups": stats["lookups"],
        "rate_limited": stats["rate_limited"],
        "peak_rss_mb": ingest.get("peak_rss_mb"),
        "executor": args.executor,
        "max_in_flight": stats["max_in_flight"],
        "duplicate_references": stats["duplicate_references"],
        "ledger_states": issued["ledger"],
        "issue_tasks": issued["issue_tasks"],
        "run_seconds": round(issued["run_seconds"], 1),
        "baseline_documents": base["baseline_documents"],
        "ingest_documents": args.ingest_documents,
        "ingest_seconds": ingest.get("ingest_seconds"),
        **parse,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000, help="documents issued through the DAG")
    parser.add_argument("--rate-limit", type=float, default=20, help="sandbox and connection requests/s")
    parser.add_argument("--latency-ms", type=float, default=200, help="sandbox latency per call, ms")
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument(
        "--baseline-documents", type=int, default=200, help="documents of the sequential loop"
    )
    parser.add_argument("--ingest-documents", type=int, default=100_000, help="0 skips the memory probe")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis-db", type=int, default=7, help="Redis database of the Celery broker")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the DAG run")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.md")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        kind, *rest = args.probe
        result = probe_dag_imports() if kind == "dag-imports" else probe_ingest(*rest)
        print(json.dumps(result))
        return 0
    with redirect_stdout(sys.stderr):  # Airflow's and the hook's logs; stdout is the JSON line only
        result = bench(args)
    print(json.dumps(result))
    if not args.no_record:
        append_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
