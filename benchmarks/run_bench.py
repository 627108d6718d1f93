"""``make bench``: issuance throughput against Koywe's rate limit, ingestion memory and DAG parse cost.

A benchmark, not a test: it measures and records, it asserts nothing. It prints **one JSON line per
scenario** on stdout (logs go to stderr); ``--scenario NAME`` (repeatable) runs only the named ones.

Issuance scenarios (``koywe_daily_issuance`` under a real scheduler, metadata database and ledger on a
throwaway PostgreSQL database, against the sandbox; the sandbox's ``rate_limit`` is always the
``koywe_default`` connection's ``requests_per_second``, so any overshoot shows as 429s):

=================== ===== ========== ========= ===========================================
scenario            R     latency    documents executor
=================== ===== ========== ========= ===========================================
``r20_l200``        20/s  200 ms     2,000     LocalExecutor
``r5_l1000``        5/s   1,000 ms   500       LocalExecutor
``r5_l2000``        5/s   2,000 ms   500       LocalExecutor
``celery_r20_l200`` 20/s  200 ms     2,000     CeleryExecutor, two workers on Redis
``mixed_r5_l1000``  5/s   1,000 ms   150       LocalExecutor; four DAGs at once (below)
=================== ===== ========== ========= ===========================================

``--documents N`` scales every issuance scenario down (or up). ``docs_per_second`` counts documents
issued per second *of issuing*: from the start of the first ``POST /documents`` to the end of the last
one, as the ledger's ``koywe_attempts`` rows tell (``attempted_at`` is written when a call returns,
``duration_ms`` is its round trip), so Airflow's start-up, ingestion, authentication and the report are
not in it. ``fraction_of_rate_limit = docs_per_second / R`` (one POST per document; the one ``POST
/auth`` is left out). ``sandbox_issue_seconds`` is a cross-check from the sandbox: the harness polls
``GET /_sandbox/stats`` every 0.25 s and times ``documents_created`` going from 0 to its final value.
The counters (``rate_limited``, ``auth_calls``, ``lookups``, ``duplicate_references``,
``max_requests_in_any_second``, ``max_in_flight``) are the sandbox's own.

``mixed_r5_l1000`` runs, on one scheduler and triggerer, at the same time: ``koywe_daily_issuance`` (an
inbox of ``documents`` lines), ``koywe_retry_failed_documents`` on rows seeded through the ledger's API
before the trigger (:func:`seed_retry_rows`: ``unknown`` and ``retryable`` rows *sent before*, each also
planted at the sandbox under its Koywe reference so that the retry DAG's lookup adopts it, and
``retryable`` rows never sent, POSTed without a lookup), ``koywe_taxbureau_followup`` and the
deferrable ``KoyweDocumentStatusSensor`` (``benchmarks/dags/koywe_bench_await_taxbureau.py``, added to
the run's DAG folder: no DAG of ``dags/`` uses the sensor) on the planted Chile documents, whose
trigger polls ``GET /documents/{id}`` from the triggerer until the harness finishes their validation
(``POST /_sandbox/validate``) once the daily run is over. Its targets are the shared budget's:
``max_requests_in_any_second <= R``, no 429, one ``/auth``, no duplicate, ``lookups ==
expected_lookups``. There ``documents`` counts the ledger's ``issued`` rows of both issuing DAGs
(adopted ones included) and ``docs_per_second`` the documents Koywe created (``documents_created``)
per second of the POST window; ``references_with_several_documents`` also counts planted documents
(which ``duplicate_references`` leaves out).

Other lines: ``dag_parse`` (a fresh interpreter with ``airflow.sdk`` loaded imports every file of
``dags/``), ``ingest_memory`` (``--ingest-documents`` generated documents streamed from one JSON Lines
file into a SQLite ledger in a separate process: peak RSS), ``ingest_1m`` (the same with 1,000,000
documents, ``--ingest-1m-documents``: peak RSS against the 300 MB target, documents per second) and
``baseline_sequential`` (the loop of Koywe's docs, one ``POST /documents`` after another with one
cached token, at R = 20 and 200 ms).

Results are appended to ``benchmarks/results.md`` (``--no-record`` not). Needs PostgreSQL at
127.0.0.1:5432 (``KOYWE_TEST_PG_URL``) and, for Celery, Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.md"
ISSUANCE_MODULE = PROJECT_DIR / "plugins" / "koywe_provider" / "services" / "issuance.py"
HOOK_MODULE = PROJECT_DIR / "plugins" / "koywe_provider" / "hooks" / "koywe.py"
DAG_ID = "koywe_daily_issuance"


@dataclass(frozen=True)
class Scenario:
    name: str
    rate_limit: float
    latency_ms: float
    documents: int
    executor: str  # "local" | "celery"


ISSUANCE_SCENARIOS = {
    s.name: s
    for s in (
        Scenario("r20_l200", 20, 200, 2000, "local"),
        Scenario("r5_l1000", 5, 1000, 500, "local"),
        Scenario("r5_l2000", 5, 2000, 500, "local"),
        Scenario("celery_r20_l200", 20, 200, 2000, "celery"),
    )
}
#: The daily DAG, the retry DAG on seeded due rows, the tax-bureau follow-up and the deferrable sensor.
MIXED_SCENARIOS = {s.name: s for s in (Scenario("mixed_r5_l1000", 5, 1000, 150, "local"),)}
#: Scenarios named but not built yet: each prints a line with ``"status": "not_implemented"``.
NOT_IMPLEMENTED: dict[str, str] = {}
OTHER_SCENARIOS = ("dag_parse", "ingest_memory", "ingest_1m", "baseline_sequential")
ALL_SCENARIOS = (*OTHER_SCENARIOS, *ISSUANCE_SCENARIOS, *MIXED_SCENARIOS, *NOT_IMPLEMENTED)
RESULT_COLUMNS = (
    "date",
    "engine",
    "scenario",
    "executor",
    "documents",
    "rate_limit",
    "latency_ms",
    "issue_seconds",
    "docs_per_second",
    "fraction_of_rate_limit",
    "sandbox_issue_seconds",
    "rate_limited",
    "auth_calls",
    "lookups",
    "duplicate_references",
    "max_requests_in_any_second",
    "max_in_flight",
    "run_seconds",
    "other",
)
#: Figures of the non-issuance lines, shown in the ``other`` column of ``results.md``.
OTHER_FIGURES = (
    "rate_budget_margin_seconds",
    "client_max_posts_in_any_second",
    "load_average_5m",
    "dag_import_seconds",
    "ingest_documents",
    "ingest_seconds",
    "peak_rss_mb",
    "expected_lookups",
    "windows_over_rate",
    "status",
    "error",
)
SCENARIO_TABLE = "## Scenario runs"


def engine_label() -> str:
    """``lead-all`` once every call (not only fenced POSTs) leaves the send lead after its grant,
    ``stealing`` once issue tasks take the plan's unclaimed rows (``steal_window``), ``concurrent`` with
    the issuing engine (``[koywe] max_in_flight``) only, else ``pre-engine``."""
    try:
        text = ISSUANCE_MODULE.read_text()
        if "steal_window" in text and "acquire_at" in HOOK_MODULE.read_text():
            return "lead-all"
        if "steal_window" in text:
            return "stealing"
        return "concurrent" if "max_in_flight" in text else "pre-engine"
    except OSError:
        return "unknown"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    # No issue date given: each document is dated today in its own country (date.today() is UTC's,
    # tomorrow in the Americas for a few hours a night).
    counts = ledger.ingest_many(read_inbox(as_storage_path(inbox_file)), run_id="bench")
    seconds = time.perf_counter() - started
    ledger.dispose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "ingest_counts": counts.as_dict(),
        "ingest_seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


INGEST_1M_TARGET_MB = 300


def run_ingest_1m(args, tmp_path: Path, env: dict) -> dict:
    """``ingest_1m``: ``--ingest-1m-documents`` (1,000,000) generated documents in ONE JSON Lines file,
    ingested into a fresh SQLite ledger by a fresh interpreter (strict JSON, country rules, exact
    arithmetic, a savepoint per chunk): peak RSS of that process against the 300 MB target, and
    documents per second of the whole ingestion (reading, validating and storing)."""
    count = args.ingest_1m_documents
    path = tmp_path / "ingest_1m" / "day.jsonl"
    log(f"ingest_1m: generating {count:,} documents ...")
    generate_inbox(path, count, seed=args.seed + 2, prefix="M1")
    size_mb = round(path.stat().st_size / 2**20, 1)
    log(f"ingest_1m: ingesting {size_mb} MB ...")
    database = tmp_path / "ingest_1m.db"
    probe = run_probe("ingest", str(path), f"sqlite:///{database}", env=env)
    path.unlink()
    for stale in tmp_path.glob("ingest_1m.db*"):
        stale.unlink()
    seconds = probe["ingest_seconds"]
    return {
        "scenario": "ingest_1m",
        "documents": count,
        "ingest_documents": count,
        "inbox_mb": size_mb,
        "docs_per_second": round(count / seconds, 1) if seconds else None,
        "peak_rss_mb": probe["peak_rss_mb"],
        "target_peak_rss_mb": INGEST_1M_TARGET_MB,
        "within_target": probe["peak_rss_mb"] < INGEST_1M_TARGET_MB,
        **{k: v for k, v in probe.items() if k != "peak_rss_mb"},
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
    path.parent.mkdir(parents=True, exist_ok=True)
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


class CreationWatch:
    """Polls ``GET /_sandbox/stats`` (not rate limited, not counted) to time ``documents_created``."""

    def __init__(self, sandbox, interval: float = 0.25) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self.first: float | None = None  # monotonic time the first document was seen
        self.last: float | None = None  # monotonic time the count last grew
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                created = self.sandbox.stats()["documents_created"]
            except Exception:  # a missed poll only blurs the figure by one interval
                created = self.count
            now = time.monotonic()
            if created > self.count:
                if self.first is None:
                    self.first = now - self.interval / 2
                self.last = now - self.interval / 2
                self.count = created
            self._stop.wait(self.interval)

    def __enter__(self) -> CreationWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def seconds(self) -> float | None:
        return None if self.first is None or self.last is None else self.last - self.first


def post_window(database_url: str) -> dict:
    """First POST's start to last POST's end, from ``koywe_attempts`` (kind ``create``), and the counts."""
    from datetime import timedelta

    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT attempted_at, duration_ms FROM koywe_attempts WHERE kind = 'create'")
            ).all()
            states = dict(
                conn.execute(sa.text("SELECT state, count(*) FROM koywe_documents GROUP BY state")).all()
            )
    finally:
        engine.dispose()
    if not rows:
        return {"posts": 0, "issue_seconds": 0.0, "ledger": states}

    def aware(value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    starts = [aware(at) - timedelta(milliseconds=ms or 0) for at, ms in rows]
    ends = [aware(at) for at, _ in rows]
    # The same peak as the sandbox's, from the client's side: when the POSTs left (a sandbox short of CPU
    # reads its arrivals late and in bunches, so its figure can exceed what was sent in any second).
    sent = sorted(at.timestamp() for at in starts)
    client_peak = max(bisect.bisect_left(sent, t + 1.0) - i for i, t in enumerate(sent))
    return {
        "posts": len(rows),
        "issue_seconds": (max(ends) - min(starts)).total_seconds(),
        "client_max_posts_in_any_second": client_peak,
        "ledger": states,
    }


def bench_env(
    args, scenario: Scenario, home: Path, sandbox, database_url: str, *, dags_folder: Path | None = None
) -> dict[str, str]:
    """The Airflow environment of an issuance scenario (its executor, metadata database and ledger on
    ``database_url``, ``koywe_default`` at the sandbox with ``requests_per_second`` = the sandbox's rate
    limit), set up (migrated, pools imported). ``dags_folder`` replaces ``dags/`` as the DAG folder."""
    from koywe_demo.env import airflow_env, setup
    from koywe_demo.topology import topology_env

    extra = {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    if args.max_in_flight:
        extra["AIRFLOW__KOYWE__MAX_IN_FLIGHT"] = str(args.max_in_flight)
    if args.margin is not None:
        extra["AIRFLOW__KOYWE__RATE_BUDGET_MARGIN_SECONDS"] = str(args.margin)
    if dags_folder is not None:
        extra["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    base = airflow_env(
        airflow_home=home,
        koywe_base_url=sandbox.base_url,
        credentials=sandbox.credentials,
        ledger_url=database_url,
        requests_per_second=scenario.rate_limit,  # == the sandbox's rate limit
        extra=extra,
    )
    celery = scenario.executor == "celery"
    env = topology_env(
        base,
        database_url=database_url,
        executor="CeleryExecutor" if celery else "LocalExecutor",
        broker_url=f"redis://127.0.0.1:6379/{args.redis_db}" if celery else None,
    )
    setup(env)
    return env


def issue_through_airflow(args, scenario: Scenario, home: Path, inbox: Path, sandbox, database_url: str):
    """One run of the daily DAG on a real scheduler; the POST window from the ledger, counts from the sandbox."""
    from koywe_demo.topology import run_topology

    env = bench_env(args, scenario, home, sandbox, database_url)
    with run_topology(env, workers=2, worker_concurrency=2) as topology:
        api = topology.api()
        api.wait_for_dag(DAG_ID)
        api.unpause(DAG_ID)
        sandbox.reset()  # nothing before the run counts (no call is made before the trigger)
        with CreationWatch(sandbox) as watch:
            # No issue date: each document is dated today in its own country (the UTC date is
            # tomorrow in the Americas at night, which would make lines invalid).
            run_id = api.trigger(DAG_ID, {"inbox": str(inbox)})
            run = api.wait_for_run(DAG_ID, run_id, timeout=args.timeout)
        tis = api.task_instances(DAG_ID, run_id)
        api.close()
    issue = [ti for ti in tis if ti["task_id"] == "issue"]
    not_ok = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis if ti["state"] != "success"]
    window = post_window(database_url)
    senders = create_senders(database_url, {run_id: DAG_ID})
    return {
        "arrivals": arrival_summary(sandbox.arrivals(), scenario.rate_limit, senders),
        "run_state": run["state"],
        "failed_tasks": not_ok,
        "run_seconds": (_when(run["end_date"]) - _when(run["start_date"])).total_seconds(),
        "issue_tasks": len(issue),
        "sandbox_issue_seconds": watch.seconds,
        **window,
    }


def run_issuance(args, scenario: Scenario, tmp_path: Path) -> dict:
    from koywe_demo.databases import throwaway_database
    from koywe_sandbox.testing import run_sandbox

    documents = args.documents or scenario.documents
    home = tmp_path / f"home_{scenario.name}"
    home.mkdir()
    inbox = tmp_path / f"inbox_{scenario.name}"
    generate_inbox(inbox / "day.jsonl", documents, seed=args.seed, prefix="BENCH")
    log(
        f"{scenario.name}: {documents} documents, R={scenario.rate_limit}/s, {scenario.latency_ms} ms, "
        f"{scenario.executor} executor ..."
    )
    with run_sandbox(
        seed=args.seed, rate_limit=scenario.rate_limit, latency_ms=scenario.latency_ms
    ) as sandbox:
        with throwaway_database("koywe_bench") as database_url:
            issued = issue_through_airflow(args, scenario, home, inbox, sandbox, database_url)
        stats = sandbox.stats()
    issued_docs = issued["ledger"].get("issued", 0)
    seconds = issued["issue_seconds"]
    docs_per_second = issued_docs / seconds if seconds else 0.0
    result = {
        "scenario": scenario.name,
        "executor": scenario.executor,
        "documents": issued_docs,
        "documents_in_inbox": documents,
        "rate_limit": scenario.rate_limit,
        "latency_ms": scenario.latency_ms,
        "docs_per_second": round(docs_per_second, 2),
        "fraction_of_rate_limit": round(docs_per_second / scenario.rate_limit, 3),
        "issue_seconds": round(seconds, 1),
        "sandbox_issue_seconds": None
        if issued["sandbox_issue_seconds"] is None
        else round(issued["sandbox_issue_seconds"], 1),
        "rate_limited": stats["rate_limited"],
        "auth_calls": stats["auth_calls"],
        "lookups": stats["lookups"],
        "duplicate_references": stats["duplicate_references"],
        "max_requests_in_any_second": stats["max_requests_in_any_second"],
        "client_max_posts_in_any_second": issued.get("client_max_posts_in_any_second"),
        "windows_over_rate": issued["arrivals"]["windows_over_rate"],
        "busiest_window": issued["arrivals"]["busiest_window"],
        "max_in_flight": stats["max_in_flight"],
        "documents_created": stats["documents_created"],
        "posts": issued["posts"],
        "max_in_flight_setting": args.max_in_flight or "default",
        "rate_budget_margin_seconds": "default" if args.margin is None else args.margin,
        "engine": engine_label(),
        "run_state": issued["run_state"],
        "failed_tasks": issued["failed_tasks"],
        "run_seconds": round(issued["run_seconds"], 1),
        "issue_tasks": issued["issue_tasks"],
        "ledger_states": issued["ledger"],
    }
    return result


# ------------------------------------------------------------------------------------------ mixed
RETRY_DAG_ID = "koywe_retry_failed_documents"
FOLLOWUP_DAG_ID = "koywe_taxbureau_followup"
SENSOR_DAG_ID = "koywe_bench_await_taxbureau"
MIXED_DAG_IDS = (DAG_ID, RETRY_DAG_ID, FOLLOWUP_DAG_ID, SENSOR_DAG_ID)
#: DAG files of the benchmark only (the deferrable sensor's DAG), added to the mixed run's DAG folder.
BENCH_DAGS = Path(__file__).resolve().parent / "dags"
#: Planted Chile documents the sensor waits for: its trigger reads one ``GET /documents/{id}`` each per poll.
SENSOR_DOCUMENTS = 3
SEED_OWNER = "bench-seed"
#: Task states that do not make a run of the mixed scenario an error (``publish`` skips an empty run).
TASK_OK_STATES = ("success", "skipped")


def mixed_dags_folder(path: Path) -> Path:
    """A DAG folder holding every file of ``dags/`` and of ``benchmarks/dags/`` (symbolic links)."""
    path.mkdir(parents=True)
    for source in (*sorted((PROJECT_DIR / "dags").glob("*.py")), *sorted(BENCH_DAGS.glob("*.py"))):
        (path / source.name).symlink_to(source)
    return path


@dataclass(frozen=True)
class SeededRows:
    """What :func:`seed_retry_rows` left in the ledger and at the sandbox."""

    sent_before: list[str]  # references whose POST went out: looked up by the retry DAG, then adopted
    never_sent: list[str]  # references with no POST of their generation: POSTed without a lookup
    sensor_document_ids: list[str]  # planted Koywe documents the deferrable sensor waits for


def seed_retry_rows(database_url: str, inbox_file: Path, sandbox, *, sent_before: int) -> SeededRows:
    """Rows due for the retry DAG, set through the ledger's API (as the tests do), before any trigger.

    Every valid line of ``inbox_file`` is ingested, claimed by :data:`SEED_OWNER` and left due now. The
    first ``sent_before`` rows (Chile first: Chile validates asynchronously, so the sensor has something
    to wait for) as after a POST whose outcome is not known: ``mark_sent``, then ``mark_unknown``
    (timeout) or, every second one, ``mark_retryable`` (503); each is also planted at the sandbox
    (``POST /_sandbox/documents``: no auth, no rate budget, not in ``documents_created``) with the
    ledger's payload under the row's Koywe reference, so the retry DAG's lookup finds it and adopts it.
    The other rows ``retryable`` with no send of their generation (as when a 429 pause longer than the
    lease released them before their fenced send): the retry DAG POSTs them without a lookup.
    """
    from datetime import timedelta

    from koywe_provider.ledger import Ledger
    from koywe_provider.models.references import merge_internal_reference
    from koywe_provider.services.ingestion import as_storage_path, read_inbox
    from koywe_samples.generate import DEFAULT_ACCOUNT_IDS

    chile = str(DEFAULT_ACCOUNT_IDS["CL"])
    due = datetime.now(UTC) - timedelta(minutes=1)
    ledger = Ledger(database_url)
    sent: list[str] = []
    never: list[str] = []
    chile_documents: list[str] = []
    planted: list[str] = []
    try:
        # No issue date: each document is dated today in its own country, as the daily DAG does.
        items = [item for item in read_inbox(as_storage_path(str(inbox_file))) if not item.error]
        ledger.ingest_many(items, run_id=SEED_OWNER)
        items.sort(key=lambda item: item.account_id != chile)  # stable: Chile first
        for n, item in enumerate(items):
            pk = ledger.get_by_reference(item.account_id, item.reference)["id"]
            claimed = ledger.claim(pk, owner=SEED_OWNER)
            if claimed is None:
                raise RuntimeError(f"seeding: row {item.reference} could not be claimed")
            if n >= sent_before:
                ledger.mark_retryable(
                    pk,
                    owner=SEED_OWNER,
                    error="released before its send: rate budget paused longer than the lease",
                    error_class="rate_limited",
                    next_attempt_at=due,
                )
                never.append(item.reference)
                continue
            ledger.mark_sent(pk, owner=SEED_OWNER, lease_seconds=60)
            document = sandbox.plant_document(
                merge_internal_reference(claimed.payload, claimed.koywe_reference)
            )
            planted.append(str(document["document_id"]))
            if item.account_id == chile:
                chile_documents.append(str(document["document_id"]))
            mark, error, error_class = (
                (ledger.mark_retryable, "HTTP 503 Service Unavailable", "server_error")
                if n % 2
                else (ledger.mark_unknown, "ReadTimeout after 30 s", "timeout")
            )
            mark(pk, owner=SEED_OWNER, error=error, error_class=error_class, next_attempt_at=due)
            sent.append(item.reference)
    finally:
        ledger.dispose()
    return SeededRows(
        sent_before=sent,
        never_sent=never,
        sensor_document_ids=(chile_documents or planted)[:SENSOR_DOCUMENTS],
    )


def references_with_several_documents(documents: list[dict]) -> int:
    """Internal references (code 5, per account) held by more than one sandbox document, planted ones too."""
    from collections import Counter

    from koywe_sandbox.documents import reference_numbers

    counts = Counter(
        (str(doc["header"].get("account_id")), number)
        for doc in documents
        for number in reference_numbers(doc.get("references"))
    )
    return sum(1 for n in counts.values() if n > 1)


def call_kind(method: str, target: str) -> str:
    """The Koywe call an arrival was, by endpoint: ``auth``, ``create`` (``POST /documents``), ``lookup``
    (``GET /documents?…reference_number=…``), ``list`` (other ``GET /documents``), ``read`` (``GET
    /documents/{id}``: the status sensor and its trigger), ``status_update`` (``PUT``), else method and path."""
    path, _, query = target.partition("?")
    parts = [p for p in path.split("/") if p][1:]  # without "V1"
    if parts == ["auth"]:
        return "auth"
    if parts == ["documents"]:
        if method == "POST":
            return "create"
        return "lookup" if "reference_number=" in query else "list"
    if len(parts) == 2 and parts[0] == "documents":
        return {"GET": "read", "PUT": "status_update"}.get(method, f"{method} documents/{{id}}")
    return f"{method} {'/'.join(parts)}"


def create_senders(database_url: str, dag_of_run: dict[str, str]) -> list[tuple[str, float]]:
    """Every ``POST /documents`` the ledger recorded (``koywe_attempts`` of kind ``create``) as
    ``("<dag_id> <task>", start)``, in the order the calls started; ``start`` is ``attempted_at -
    duration_ms`` in epoch seconds (the sender's clock: when the hook began the call, after its fence)."""
    from datetime import timedelta

    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT attempted_at, duration_ms, run_id, task FROM koywe_attempts WHERE kind = 'create'"
                )
            ).all()
    finally:
        engine.dispose()

    def start(row) -> float:
        at = row.attempted_at if row.attempted_at.tzinfo else row.attempted_at.replace(tzinfo=UTC)
        return (at - timedelta(milliseconds=row.duration_ms or 0)).timestamp()

    found = sorted(
        ((f"{dag_of_run.get(r.run_id, r.run_id)} {r.task}", start(r)) for r in rows), key=lambda x: x[1]
    )
    return found


def arrival_summary(
    arrivals: list[dict], rate: float, senders: list[tuple[str, float]] | None = None
) -> dict:
    """Which calls reached the sandbox, and which made the busiest one-second windows.

    ``calls``: arrivals per :func:`call_kind`. ``windows_over_rate``: arrivals ``i`` whose window ``[t_i,
    t_i + 1 s)`` holds more than ``rate`` arrivals (the sandbox's own ``max_requests_in_any_second`` rule);
    ``busiest_window``: the first window with the most arrivals, its start (seconds since the reset) and
    its arrivals per kind; ``offsets_ms`` lists them as ``[kind, ms after the window's first arrival]``.
    With ``senders`` (:func:`create_senders`), the n-th ``create`` arrival is paired with the n-th
    sender (by order only: the sandbox's clock and the ledger's are not the same), named in its kind,
    and a third item gives when that sender started the call, in ms after the window's first paired
    start: arrivals closer together than their starts were bunched between the sender and the sandbox.
    """
    from collections import Counter

    times = [a["at"] for a in arrivals]
    kinds = [call_kind(a["method"], a["target"]) for a in arrivals]
    started: list[float | None] = [None] * len(arrivals)
    if senders is not None:
        creates = iter(senders)
        for i, kind in enumerate(kinds):
            if kind == "create":
                name, started[i] = next(creates, ("?", None))
                kinds[i] = f"create by {name}"
    over, best, best_start = 0, 0, 0
    end = 0
    for start, at in enumerate(times):
        end = max(end, start)
        while end < len(times) and times[end] < at + 1.0:
            end += 1
        count = end - start
        over += count > rate
        if count > best:
            best, best_start = count, start
    window = range(best_start, best_start + best)
    first_start = next((started[i] for i in window if started[i] is not None), None)
    offsets = []
    for i in window:
        entry = [kinds[i], round((times[i] - times[best_start]) * 1000)]
        if started[i] is not None and first_start is not None:
            entry.append(round((started[i] - first_start) * 1000))
        offsets.append(entry)
    return {
        "calls": dict(Counter(kind.split(" by ")[0] for kind in kinds)),
        "windows_over_rate": over,
        "busiest_window": {
            "start_s": round(times[best_start], 3) if times else None,
            "calls": dict(Counter(kinds[i].split(" by ")[0] for i in window)),
            "offsets_ms": offsets,
        },
    }


def run_mixed(args, scenario: Scenario, tmp_path: Path) -> dict:
    """``mixed_r5_l1000``: the daily DAG, the retry DAG on seeded due rows, the tax-bureau follow-up and
    the deferrable sensor, triggered together on one scheduler and triggerer (see the module docstring)."""
    from koywe_demo.databases import throwaway_database
    from koywe_demo.topology import run_topology
    from koywe_sandbox.testing import run_sandbox

    documents = args.documents or scenario.documents
    retry_rows = max(4, documents // 10)
    sent_before = retry_rows // 2
    home = tmp_path / f"home_{scenario.name}"
    home.mkdir()
    inbox = tmp_path / f"inbox_{scenario.name}"
    generate_inbox(inbox / "day.jsonl", documents, seed=args.seed, prefix="BENCH")
    retry_inbox = tmp_path / f"retry_{scenario.name}" / "due.jsonl"
    generate_inbox(retry_inbox, retry_rows, seed=args.seed + 3, prefix="RETRY")
    dags = mixed_dags_folder(tmp_path / f"dags_{scenario.name}")
    log(
        f"{scenario.name}: {documents} documents + {retry_rows} due rows ({sent_before} sent before), "
        f"R={scenario.rate_limit}/s, {scenario.latency_ms} ms, {scenario.executor} executor, "
        f"{len(MIXED_DAG_IDS)} DAGs at once ..."
    )
    with run_sandbox(
        seed=args.seed, rate_limit=scenario.rate_limit, latency_ms=scenario.latency_ms
    ) as sandbox:
        with throwaway_database("koywe_bench") as database_url:
            env = bench_env(args, scenario, home, sandbox, database_url, dags_folder=dags)
            with run_topology(env, workers=2, worker_concurrency=2) as topology:
                api = topology.api()
                for dag_id in MIXED_DAG_IDS:
                    api.wait_for_dag(dag_id)
                    api.unpause(dag_id)
                sandbox.reset()  # nothing before the runs counts; planting is not counted either
                seeded = seed_retry_rows(database_url, retry_inbox, sandbox, sent_before=sent_before)
                log(
                    f"{scenario.name}: seeded {len(seeded.sent_before)} rows sent before (planted), "
                    f"{len(seeded.never_sent)} never sent; the sensor waits for {seeded.sensor_document_ids}"
                )
                with CreationWatch(sandbox) as watch:
                    runs = {
                        DAG_ID: api.trigger(DAG_ID, {"inbox": str(inbox)}),
                        RETRY_DAG_ID: api.trigger(RETRY_DAG_ID, {}),
                        FOLLOWUP_DAG_ID: api.trigger(FOLLOWUP_DAG_ID, {}),
                        SENSOR_DAG_ID: api.trigger(
                            SENSOR_DAG_ID, {"document_ids": seeded.sensor_document_ids}
                        ),
                    }
                    finished = {DAG_ID: api.wait_for_run(DAG_ID, runs[DAG_ID], timeout=args.timeout)}
                    # The tax bureau answers only now: the sensor's trigger polled during the whole issuance.
                    reads_while_issuing = sandbox.stats()["document_reads"]
                    if seeded.sensor_document_ids:
                        sandbox.validate(document_ids=[int(i) for i in seeded.sensor_document_ids], outcome=3)
                    for dag_id in MIXED_DAG_IDS[1:]:
                        finished[dag_id] = api.wait_for_run(dag_id, runs[dag_id], timeout=args.timeout)
                tis = {dag_id: api.task_instances(dag_id, run_id) for dag_id, run_id in runs.items()}
                api.close()
            window = post_window(database_url)
            senders = create_senders(database_url, {run_id: dag_id for dag_id, run_id in runs.items()})
        stats = sandbox.stats()
        several = references_with_several_documents(sandbox.documents())
        arrivals = arrival_summary(sandbox.arrivals(), scenario.rate_limit, senders)
    states = {dag_id: run["state"] for dag_id, run in finished.items()}
    not_ok = {
        dag_id: [
            (ti["task_id"], ti["map_index"], ti["state"]) for ti in found if ti["state"] not in TASK_OK_STATES
        ]
        for dag_id, found in tis.items()
    }
    run_seconds = {
        dag_id: round((_when(run["end_date"]) - _when(run["start_date"])).total_seconds(), 1)
        for dag_id, run in finished.items()
    }
    seconds = window["issue_seconds"]
    created = stats["documents_created"]
    docs_per_second = created / seconds if seconds else 0.0
    ok = all(state == "success" for state in states.values()) and not any(not_ok.values())
    return {
        "scenario": scenario.name,
        "executor": scenario.executor,
        "documents": window["ledger"].get("issued", 0),
        "documents_in_inbox": documents,
        "retry_rows": retry_rows,
        "rate_limit": scenario.rate_limit,
        "latency_ms": scenario.latency_ms,
        "docs_per_second": round(docs_per_second, 2),
        "fraction_of_rate_limit": round(docs_per_second / scenario.rate_limit, 3),
        "issue_seconds": round(seconds, 1),
        "sandbox_issue_seconds": None if watch.seconds is None else round(watch.seconds, 1),
        "rate_limited": stats["rate_limited"],
        "auth_calls": stats["auth_calls"],
        "lookups": stats["lookups"],
        "expected_lookups": len(seeded.sent_before),
        "duplicate_references": stats["duplicate_references"],
        "references_with_several_documents": several,
        "max_requests_in_any_second": stats["max_requests_in_any_second"],
        "windows_over_rate": arrivals["windows_over_rate"],
        "busiest_window": arrivals["busiest_window"],
        "calls": arrivals["calls"],
        "max_in_flight": stats["max_in_flight"],
        "requests_total": stats["requests_total"],
        "list_calls": stats["list_calls"],
        "document_reads": stats["document_reads"],
        "document_reads_while_issuing": reads_while_issuing,
        "documents_created": created,
        "expected_documents_created": documents + len(seeded.never_sent),
        "documents_planted": stats["documents_planted"],
        "posts": window["posts"],
        "sensor_document_ids": seeded.sensor_document_ids,
        "max_in_flight_setting": args.max_in_flight or "default",
        "rate_budget_margin_seconds": "default" if args.margin is None else args.margin,
        "engine": engine_label(),
        "run_states": states,
        "failed_tasks": not_ok,
        "run_seconds": max(run_seconds.values()),
        "dag_run_seconds": run_seconds,
        "ledger_states": window["ledger"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "status": "ok" if ok else "error",
    }


def run_baseline(args, tmp_path: Path) -> dict:
    """The sequential loop of Koywe's docs: one hook, one cached token, one POST after another."""
    from koywe_provider.hooks.koywe import KoyweHook
    from koywe_provider.hooks.token_store import MemoryTokenStore
    from koywe_provider.services.ingestion import as_storage_path, read_inbox
    from koywe_sandbox.testing import run_sandbox

    rate, latency = 20, 200
    inbox = tmp_path / "baseline" / "day.jsonl"
    generate_inbox(inbox, args.baseline_documents, seed=args.seed, prefix="BASE")
    with run_sandbox(seed=args.seed, rate_limit=rate, latency_ms=latency) as sandbox:
        os.environ["AIRFLOW_CONN_KOYWE_BENCH_BASELINE"] = json.dumps(
            {
                "conn_type": "koywe",
                "host": sandbox.base_url,
                "login": sandbox.credentials["username"],
                "password": sandbox.credentials["password"],
                "extra": {
                    "client_id": sandbox.credentials["client_id"],
                    "client_secret": sandbox.credentials["client_secret"],
                    "requests_per_second": rate,
                },
            }
        )
        # No issue date: each document is dated today in its own country.
        items = [item for item in read_inbox(as_storage_path(str(inbox))) if not item.error]
        hook = KoyweHook(
            "koywe_bench_baseline",
            token_store=MemoryTokenStore(),
            shared_state_url=f"sqlite:///{tmp_path / 'baseline_state.db'}",
            send_lead_seconds=0,  # Koywe's loop sends at once: there is no shared budget to line up with
        )
        hook.get_token()
        started = time.perf_counter()
        for item in items:
            hook.create_document(item.payload, reference=item.reference)
        seconds = time.perf_counter() - started
        stats = sandbox.stats()
    dps = len(items) / seconds if seconds else 0.0
    return {
        "scenario": "baseline_sequential",
        "executor": "none (one process, one loop)",
        "documents": len(items),
        "rate_limit": rate,
        "latency_ms": latency,
        "docs_per_second": round(dps, 2),
        "fraction_of_rate_limit": round(dps / rate, 3),
        "issue_seconds": round(seconds, 1),
        "rate_limited": stats["rate_limited"],
        "auth_calls": stats["auth_calls"],
        "lookups": stats["lookups"],
        "duplicate_references": stats["duplicate_references"],
        "max_requests_in_any_second": stats["max_requests_in_any_second"],
        "max_in_flight": stats["max_in_flight"],
    }


def append_results(rows: list[dict], path: Path = RESULTS) -> None:
    """Append rows to the scenario table (the last section of ``results.md``; created when missing)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if SCENARIO_TABLE not in text:
        text = text.rstrip("\n") + (
            f"\n\n{SCENARIO_TABLE}\n\nOne row per scenario of each `make bench` (appended by "
            "`benchmarks/run_bench.py`).\n\n"
            f"| {' | '.join(RESULT_COLUMNS)} |\n|{'---|' * len(RESULT_COLUMNS)}\n"
        )
    for row in rows:
        other = ", ".join(f"{k}={row[k]}" for k in OTHER_FIGURES if row.get(k) is not None)
        row = {**row, "other": other.replace("|", "/") or None}
        text += "| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in RESULT_COLUMNS) + " |\n"
    path.write_text(text)


# ------------------------------------------------------------------------------------------ main
def bench(args, emit) -> list[dict]:
    wanted = args.scenario or list(ALL_SCENARIOS)
    stamp = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU",
    }
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="koywe_bench_") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "airflow_home"
        home.mkdir()
        os.environ["AIRFLOW_HOME"] = str(home)  # this process's own Airflow imports (baseline hook)
        env = {**os.environ, "AIRFLOW_HOME": str(home)}
        for name in wanted:
            if name == "dag_parse":
                log("dag_parse: importing every DAG file ...")
                row = {"scenario": name, **run_probe("dag-imports", env=env)}
            elif name == "ingest_memory":
                if not args.ingest_documents:
                    continue
                log(f"ingest_memory: ingesting {args.ingest_documents} documents ...")
                big = tmp_path / "ingest" / "day.jsonl"
                generate_inbox(big, args.ingest_documents, seed=args.seed + 1, prefix="ING")
                probe = run_probe("ingest", str(big), f"sqlite:///{tmp_path / 'ingest.db'}", env=env)
                big.unlink()
                row = {"scenario": name, "ingest_documents": args.ingest_documents, **probe}
            elif name == "ingest_1m":
                if not args.ingest_1m_documents:
                    continue
                row = run_ingest_1m(args, tmp_path, env)
            elif name == "baseline_sequential":
                if not args.baseline_documents:
                    continue
                log(f"baseline_sequential: {args.baseline_documents} documents ...")
                row = run_baseline(args, tmp_path)
            elif name in NOT_IMPLEMENTED:
                log(f"{name}: {NOT_IMPLEMENTED[name]}")
                row = {"scenario": name, "status": "not_implemented", "message": NOT_IMPLEMENTED[name]}
            elif name in MIXED_SCENARIOS:
                try:
                    row = run_mixed(args, MIXED_SCENARIOS[name], tmp_path)
                except Exception as exc:  # one broken scenario must not hide the others' figures
                    log(f"{name}: failed: {exc!r}")
                    row = {"scenario": name, "status": "error", "error": repr(exc)[:2000]}
            else:
                try:
                    row = run_issuance(args, ISSUANCE_SCENARIOS[name], tmp_path)
                except Exception as exc:  # one broken scenario must not hide the others' figures
                    log(f"{name}: failed: {exc!r}")
                    row = {"scenario": name, "status": "error", "error": repr(exc)[:2000]}
            # The machine's load over the last 5 minutes: these figures move with it (2 shared CPUs).
            row = {**row, **stamp, "load_average_5m": round(os.getloadavg()[1], 2)}
            rows.append(row)
            emit(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", action="append", choices=ALL_SCENARIOS, help="run only this one (repeatable)"
    )
    parser.add_argument(
        "--documents", type=int, default=0, help="documents per issuance scenario (its default)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="AIRFLOW__KOYWE__MAX_IN_FLIGHT (0: the provider's default)",
    )
    parser.add_argument("--baseline-documents", type=int, default=50, help="documents of the sequential loop")
    parser.add_argument("--ingest-documents", type=int, default=100_000, help="documents of ingest_memory")
    parser.add_argument(
        "--ingest-1m-documents", type=int, default=1_000_000, help="documents of ingest_1m (one file)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="[koywe] rate_budget_margin_seconds (default: the project's)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis-db", type=int, default=7, help="Redis database of the Celery broker")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each DAG run")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.md")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        kind, *rest = args.probe
        result = probe_dag_imports() if kind == "dag-imports" else probe_ingest(*rest)
        print(json.dumps(result))
        return 0
    stdout = sys.stdout

    def emit(row: dict) -> None:
        stdout.write(json.dumps(row) + "\n")
        stdout.flush()

    with redirect_stdout(sys.stderr):  # Airflow's and the hook's logs; stdout is the JSON lines only
        rows = bench(args, emit)
    if not args.no_record:
        append_results([r for r in rows if r.get("status") != "not_implemented"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
