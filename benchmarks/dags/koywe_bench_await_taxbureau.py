"""Benchmark-only DAG: the deferrable tax-bureau status sensor on given Koywe documents.

No DAG of ``dags/`` runs :class:`KoyweDocumentStatusSensor`; ``benchmarks/run_bench.py`` adds this file to
the DAG folder of ``mixed_r5_l1000`` so that the sensor's trigger polls Koywe from the triggerer while
the other DAGs issue. Not deployed: it lives outside ``dags/``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from koywe_provider.sensors.taxbureau import KoyweDocumentStatusSensor

with DAG(
    dag_id="koywe_bench_await_taxbureau",
    description="Benchmark: wait in the triggerer until given Koywe documents are validated",
    doc_md="""
### Benchmark: deferrable tax-bureau sensor
Trigger with `document_ids` (Koywe ids). The sensor pokes once on a worker, then defers to
`KoyweDocumentStatusTrigger`, which reads `GET /documents/{id}` for each document still waiting every
`poke_interval` seconds in the triggerer, through the same rate budget as every other Koywe call.
""",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["koywe", "benchmark"],
    # No retries: a failure must show in the benchmark's line, not minutes later.
    default_args={"owner": "benchmark", "retries": 0},
):
    KoyweDocumentStatusSensor(
        task_id="await_taxbureau",
        pool="koywe_api",  # include_deferred: the deferred wait holds a slot of the API's pool
        document_ids="{{ dag_run.conf['document_ids'] }}",
        poke_interval=5,
        timeout=1800,
    )
