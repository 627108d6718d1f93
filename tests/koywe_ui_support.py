"""A ledger with a day of documents in every state, written through the ledger's own API (claims, sends,
Koywe's answers, a tax-bureau rejection and its re-issue, retries that gave up), and the run report the
daily DAG would write for it. Shared by the Koywe page's tests (in-process, API server, browser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from koywe_provider.ledger import (
    AttemptKind,
    AttemptRecord,
    DocumentFacts,
    IngestItem,
    Ledger,
    apply_status_reports,
    payload_hash_of,
)
from koywe_provider.services.report import build_report, write_report
from koywe_test_support import chile_factura

OWNER = "seed"
DAILY_DAG = "koywe_daily_issuance"
RETRY_DAG = "koywe_retry_failed_documents"


def peru_factura(issue_date: str, *, net: float = 190.10) -> dict[str, Any]:
    """A small Peru factura (document_type_id 96, IGV 18 %, PEN) written for these tests."""
    tax = round(net * 0.18, 2)
    return {
        "header": {
            "account_id": 20100,
            "document_type_id": 96,
            "document_sequence_code": "F001",
            "issue_date": issue_date,
            "issuer_tax_id_type": "PE-RUC",
            "issuer_tax_id_code": "20100070970",
            "issuer_legal_name": "Inversiones del Pacifico S.A.C.",
            "issuer_country_id": 83,
            "receiver_tax_id_type": "PE-RUC",
            "receiver_tax_id_code": "20601030013",
            "receiver_legal_name": "Textiles Arequipa S.A.",
            "receiver_email": "compras@example.pe",
            "currency_id": 7,
        },
        "details": [{"quantity": 1, "line_description": "Consultoria", "unit_price": net}],
        "totals": {"net_amount": net, "taxes_amount": tax, "total_amount": round(net + tax, 2)},
    }


def mexico_factura(issue_date: str) -> dict[str, Any]:
    return {
        "header": {
            "account_id": 11857,
            "document_type_id": 76,
            "issue_date": issue_date,
            "issuer_tax_id_type": "MX-RFC",
            "issuer_tax_id_code": "CBA150312PQ9",
            "issuer_legal_name": "Comercializadora del Bajio S.A. de C.V.",
            "issuer_country_id": 80,
            "receiver_tax_id_type": "MX-RFC",
            "receiver_tax_id_code": "CSM140127XL4",
            "receiver_legal_name": "COMERCIAL SAN MARTIN",
            "currency_id": 31,
        },
        "details": [{"quantity": 2, "line_description": "Mouse inalambrico", "unit_price": 350.0}],
        "totals": {"net_amount": 700.0, "taxes_amount": 112.0, "total_amount": 812.0},
    }


@dataclass
class Seeded:
    """What :func:`seed_ledger` wrote: document ids by reference, the run ids, the days used."""

    ids: dict[str, int] = field(default_factory=dict)
    daily_run: str = ""
    retry_run: str = ""
    today: str = ""
    yesterday: str = ""
    report_md: Path | None = None


def _item(reference: str, account: str, payload: dict, line: int) -> IngestItem:
    return IngestItem(
        reference, account, payload, payload_hash_of(payload), "file:///data/inbox/day.jsonl", line
    )


def _send(ledger: Ledger, pk: int) -> None:
    claimed = ledger.claim(pk, owner=OWNER, lease_seconds=900)
    assert claimed is not None, pk
    ledger.mark_sent(pk, owner=OWNER, lease_seconds=900)


def _attempt(outcome: str, http: int | None, run_id: str, *, kind=AttemptKind.CREATE, error=None, ms=180):
    return AttemptRecord(
        kind=kind, outcome=outcome, http_status=http, duration_ms=ms, error=error, run_id=run_id, task="issue"
    )


def seed_ledger(ledger: Ledger, *, today: date | None = None, reports_dir: Path | None = None) -> Seeded:
    """Fill a migrated, empty ``ledger`` (see the module docstring); write the daily run's report under
    ``reports_dir`` when given. Documents are dated ``today`` (UTC) and the day before."""
    today = today or datetime.now(UTC).date()
    day, before = today.isoformat(), (today - timedelta(days=1)).isoformat()
    seeded = Seeded(
        daily_run=f"manual__{day}T06:00:00+00:00",
        retry_run=f"scheduled__{day}T06:30:00+00:00",
        today=day,
        yesterday=before,
    )
    daily, retry = seeded.daily_run, seeded.retry_run
    cl = lambda d, net: chile_factura(d, account_id=4201, net=net)  # noqa: E731
    items = [
        _item("CL-0001", "4201", cl(before, 10_000), 1),
        _item("CL-0002", "4201", cl(day, 20_000), 2),
        _item("CL-0003", "4201", cl(day, 30_000), 3),
        _item("CL-0004", "4201", cl(day, 40_000), 4),
        _item("PE-0001", "20100", peru_factura(day), 5),
        _item("PE-0002", "20100", peru_factura(day, net=80.0), 6),
        _item("MX-0001", "11857", mexico_factura(day), 7),
        IngestItem(
            "INV-BAD-1",
            "4201",
            None,
            None,
            "file:///data/inbox/day.jsonl",
            8,
            error="header.receiver_tax_id_code: '1-9' is not a valid RUT",
            error_field="header.receiver_tax_id_code",
            raw_line='{"reference": "INV-BAD-1", "document": {"header": {"receiver_tax_id_code": "1-9"}}}',
        ),
    ]
    ledger.ingest_many(items, run_id=daily)
    ids = {ref: ledger.find_by_reference(ref)["id"] for ref in [i.reference for i in items]}
    seeded.ids = ids

    folio = iter(range(101, 200))
    koywe_id = iter(range(5001, 6000))

    def issue(ref: str, run_id: str, **facts: Any) -> None:
        pk = ids[ref]
        _send(ledger, pk)
        ledger.mark_issued(
            pk,
            owner=OWNER,
            facts=DocumentFacts(
                koywe_document_id=str(next(koywe_id)),
                document_number=str(next(folio)),
                document_status=1,
                taxbureau_sending_status=facts.get("sending", 1),
                taxbureau_validation_status=facts.get("validation", 3),
                result_status=0,
            ),
            attempt=_attempt("issued", 201, run_id),
        )

    issue("CL-0001", daily)
    issue("CL-0002", daily)
    issue("PE-0001", daily)

    # CL-0003: issued, then rejected by the tax bureau (a callback), re-queued and issued again (gen. 2).
    issue("CL-0003", daily, validation=1, sending=0)
    row = ledger.get(ids["CL-0003"])
    apply_status_reports(
        ledger,
        [
            DocumentFacts(
                koywe_document_id=row["koywe_document_id"],
                taxbureau_sending_status=1,
                taxbureau_validation_status=5,
                taxbureau_validation_comments="Rechazado: RUT receptor 96790240-3 no autorizado",
            )
        ],
    )
    ledger.requeue(["CL-0003"], states=["rejected"])
    issue("CL-0003", retry)

    # CL-0004: 503 three times, then given up (dead).
    pk = ids["CL-0004"]
    for n in range(3):
        _send(ledger, pk)
        run = daily if n == 0 else retry
        ledger.mark_retryable(
            pk,
            owner=OWNER,
            error="HTTP 503 Service Unavailable",
            error_class="server_error",
            next_attempt_at=datetime.now(UTC),
            attempt=_attempt("retryable", 503, run, error="HTTP 503 Service Unavailable"),
        )
    _send(ledger, pk)
    ledger.mark_dead(
        pk,
        owner=OWNER,
        error="gave up after 4 POSTs: HTTP 503 Service Unavailable",
        error_class="server_error",
        attempt=_attempt("retryable", 503, retry, error="HTTP 503 Service Unavailable"),
    )

    # PE-0002: Koywe refused it (400) naming a field.
    pk = ids["PE-0002"]
    _send(ledger, pk)
    ledger.mark_rejected(
        pk,
        owner=OWNER,
        error="HTTP 400: details[0].unit_measure is required",
        error_class="koywe_rejected",
        error_field="details[0].unit_measure",
        attempt=_attempt("rejected", 400, daily, error="details[0].unit_measure is required"),
    )

    # MX-0001: the POST timed out: unknown until it is looked up.
    pk = ids["MX-0001"]
    _send(ledger, pk)
    ledger.mark_unknown(
        pk,
        owner=OWNER,
        error="ReadTimeout after 30 s",
        error_class="timeout",
        next_attempt_at=datetime.now(UTC),
        attempt=_attempt("unknown", None, daily, error="ReadTimeout after 30 s", ms=30_000),
    )

    if reports_dir is not None:
        from airflow.sdk import ObjectStoragePath

        report = build_report(
            ledger,
            dag_id=DAILY_DAG,
            run_id=daily,
            ingest={"files": 1, "lines": 8, "added": 7, "invalid": 1},
            outcomes=[{"issued": 4, "rejected": 1, "unknown": 1, "retryable": 1}],
        )
        _json, md = write_report(report, ObjectStoragePath(Path(reports_dir).resolve().as_uri()))
        seeded.report_md = Path(str(md.path))
    return seeded
