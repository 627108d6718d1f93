"""Operators for the Koywe Billing API and the issuance ledger.

Thin by design: each resolves its templated arguments, calls a hook or a function of
:mod:`koywe_provider.issuance` / :mod:`koywe_provider.ingest` / :mod:`koywe_provider.report`, and returns
a small XCom (ids and counts — never payloads, tokens or credentials).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.issuance import IssuancePolicy, Issuer
from koywe_provider.ledger import DocumentState

DEFAULT_PARALLEL_CLIENTS = 4  # slots of the koywe_api pool (include/pools.json)
MAX_MAPPED_BATCHES = 500  # well under Airflow's 1,024 mapped task instances


def _to_list(value: Any) -> list[str]:
    """References from a list param, a JSON list, or comma/whitespace separated text (``[]`` when empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except ValueError:
                value = text.strip("[]").replace("'", "").replace('"', "").split(",")
        else:
            value = text.replace(",", " ").split()
    return [str(v).strip() for v in value if str(v).strip()]


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class KoyweAuthOperator(BaseOperator):
    """Make sure the connection's shared token has at least ``min_seconds_left`` of life.

    Run it once before tasks that call Koywe in parallel (in the 1-slot ``koywe_auth`` pool), so that
    they all reuse one token instead of logging in at once. Calls ``POST /auth`` only when the cached
    token is missing or about to expire. XCom: ``{"expires_at": ISO-8601}`` — never the token.

    :param min_seconds_left: seconds of validity the token must still have (default 900 = 15 min).
    :param dry_run: when true, do nothing (a dry run sends nothing to Koywe).
    """

    template_fields: Sequence[str] = ("koywe_conn_id", "dry_run")
    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        min_seconds_left: float = 900,
        dry_run: bool | str = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.koywe_conn_id = koywe_conn_id
        self.min_seconds_left = min_seconds_left
        self.dry_run = dry_run

    def execute(self, context: Context) -> dict[str, str]:
        if _to_bool(self.dry_run):
            self.log.info("Dry run: not authenticating with Koywe")
            return {}
        hook = KoyweHook(self.koywe_conn_id)
        token = hook.token_info(min_seconds_left=self.min_seconds_left)
        self.log.info("Koywe token of %s valid until %s", self.koywe_conn_id, token.expires_at.isoformat())
        return {"expires_at": token.expires_at.isoformat()}


class KoyweIngestInboxOperator(BaseOperator):
    """Read every JSON Lines file of ``inbox`` into the ledger (idempotent; bad lines become ``invalid`` rows).

    :param inbox: folder or file, as an ``ObjectStoragePath`` URL (``file://``, ``s3://`` …) or a local path
        (relative paths are relative to ``base_dir``).
    :param issue_date: ``YYYY-MM-DD`` stamped on documents that carry no ``header.issue_date``.
    XCom: the ledger's ingest counts ``{added, unchanged, replaced, conflicts, invalid, invalid_ignored}``.
    """

    template_fields: Sequence[str] = ("inbox", "issue_date", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        inbox: str,
        issue_date: str | None = None,
        base_dir: str | None = None,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.inbox = inbox
        self.issue_date = issue_date
        self.base_dir = base_dir
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, int]:
        from koywe_provider.ingest import as_storage_path, read_inbox

        inbox = as_storage_path(self.inbox, base_dir=Path(self.base_dir) if self.base_dir else None)
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        counts = ledger.ingest_many(
            read_inbox(inbox, issue_date=self.issue_date or None), run_id=context["run_id"]
        )
        result = counts.as_dict()
        self.log.info("Ingested %s: %s", inbox, result)
        return result


class KoywePlanBatchesOperator(BaseOperator):
    """Split the rows due for issuance into contiguous id ranges, one per mapped issue task.

    Batch size = ``max(min_batch_size, ceil(rows / target_batches))`` and never more than
    ``MAX_MAPPED_BATCHES`` batches (100,000 documents → at most 500 mapped tasks).
    XCom: ``[{"index", "first_id", "last_id", "count"}, …]`` — ``[]`` when ``dry_run`` or nothing is due.

    :param states: ledger states to pick (default ``pending``; the retry DAG adds ``retryable``, ``unknown``
        and expired ``in_flight``).
    :param references: only these internal references (list, or comma/space separated text), due or not
        (a person asked for them now). Each batch then carries ``states`` and ``references`` for the
        issue task.
    :param requeue_rejected: first put ``rejected`` and ``dead`` rows (of ``references`` when given) back
        to ``pending`` (their payload was fixed) and pick ``pending`` rows too.
    """

    template_fields: Sequence[str] = ("dry_run", "koywe_ledger_conn_id", "references", "requeue_rejected")

    def __init__(
        self,
        *,
        states: Sequence[str] = (DocumentState.PENDING,),
        target_batches: int = 2 * DEFAULT_PARALLEL_CLIENTS,
        min_batch_size: int = 10,
        dry_run: bool | str = False,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        references: Sequence[str] | str | None = None,
        requeue_rejected: bool | str = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.states = tuple(states)
        self.references = references
        self.requeue_rejected = requeue_rejected
        self.target_batches = target_batches
        self.min_batch_size = min_batch_size
        self.dry_run = dry_run
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> list[dict[str, int]]:
        references = _to_list(self.references)
        if references or _to_bool(self.requeue_rejected):
            return self._plan_selected(references)
        if _to_bool(self.dry_run):
            self.log.info("Dry run: nothing will be sent to Koywe")
            return []
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        due = ledger.plan_batches(batch_size=10**9, states=self.states, due_before=datetime.now(UTC))
        total = sum(b.count for b in due)
        if not total:
            return []
        size = max(
            self.min_batch_size, math.ceil(total / self.target_batches), math.ceil(total / MAX_MAPPED_BATCHES)
        )
        batches = [
            b.as_dict()
            for b in ledger.plan_batches(batch_size=size, states=self.states, due_before=datetime.now(UTC))
        ]
        self.log.info("%d document(s) due in %d batch(es) of up to %d", total, len(batches), size)
        return batches

    def _plan_selected(self, references: list[str]) -> list[dict[str, Any]]:
        """Manual retry: optional re-queue, then the named references (or every due row) in batches."""
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        dry_run = _to_bool(self.dry_run)
        states = list(dict.fromkeys(DocumentState(s).value for s in self.states))
        if _to_bool(self.requeue_rejected):
            requeue_states = (DocumentState.REJECTED, DocumentState.DEAD)
            if dry_run:
                found = ledger.ids_for_references(references, states=requeue_states) if references else []
                self.log.info(
                    "Dry run: would re-queue %s rejected/dead row(s)", len(found) if references else "all"
                )
            else:
                count = ledger.requeue(references or None, states=requeue_states)
                self.log.info("Re-queued %d rejected/dead row(s) as pending", count)
            states.append(DocumentState.PENDING.value)
        if references:
            ids = ledger.ids_for_references(references, states=states)
            size = max(self.min_batch_size, math.ceil(len(ids) / self.target_batches))
            batches = [
                {"index": i, "first_id": chunk[0], "last_id": chunk[-1], "count": len(chunk)}
                for i, chunk in enumerate(ids[n : n + size] for n in range(0, len(ids), size))
            ]
        else:
            now = datetime.now(UTC)
            total = sum(b.count for b in ledger.plan_batches(batch_size=10**9, states=states, due_before=now))
            size = max(self.min_batch_size, math.ceil(total / self.target_batches))
            batches = [
                b.as_dict() for b in ledger.plan_batches(batch_size=size, states=states, due_before=now)
            ]
        self.log.info(
            "%d document(s) selected (states %s, %d reference(s) named) in %d batch(es)",
            sum(b["count"] for b in batches),
            states,
            len(references),
            len(batches),
        )
        if dry_run:
            self.log.info("Dry run: nothing will be sent to Koywe")
            return []
        return [{**b, "states": states, "references": references or None} for b in batches]


class KoyweIssueDocumentsOperator(BaseOperator):
    """Issue one batch of ledger rows through Koywe (``POST /documents``), exactly once each.

    :param batch: ``{"first_id", "last_id", …}`` from :class:`KoywePlanBatchesOperator` (usually mapped).
    :param parallel_clients: how many issue tasks run at once (the ``koywe_api`` pool's slots); this task
        keeps ``requests_per_second / parallel_clients`` of the connection's rate.
    :param states: ledger states to issue (``batch["states"]`` wins when present); named
        ``batch["references"]`` are issued due or not.
    :param lease_seconds: claim lease; default ``[koywe] lease_seconds`` (900), see
        :class:`~koywe_provider.issuance.IssuancePolicy` for the other ``[koywe]`` settings.
    XCom: the batch's outcome counts (``issued``, ``adopted``, ``rejected``, ``retryable``, ``unknown`` …).
    Raises :class:`~koywe_provider.exceptions.KoyweAuthError` when Koywe refuses the credentials.
    """

    template_fields: Sequence[str] = ("batch", "koywe_conn_id", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        batch: dict[str, int],
        states: Sequence[str] = (DocumentState.PENDING,),
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        parallel_clients: int = DEFAULT_PARALLEL_CLIENTS,
        lease_seconds: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.batch = batch
        self.states = tuple(states)
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id
        self.parallel_clients = parallel_clients
        self.lease_seconds = lease_seconds

    def execute(self, context: Context) -> dict[str, int]:
        ti = context["ti"]
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}"
        states = tuple(self.batch.get("states") or self.states)
        references = self.batch.get("references") or None
        issuer = Issuer(
            KoyweHook(self.koywe_conn_id, parallel_clients=self.parallel_clients),
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            owner=owner,
            run_id=context["run_id"],
            task=ti.task_id,
            policy=IssuancePolicy.from_config(),
            lease_seconds=self.lease_seconds,
        )
        outcome = issuer.issue_range(
            int(self.batch["first_id"]),
            int(self.batch["last_id"]),
            states=states,
            references=references,
            due_before=datetime(2999, 1, 1, tzinfo=UTC) if references else None,  # named: due or not
        )
        result = outcome.as_dict()
        self.log.info("Batch %s..%s: %s", self.batch["first_id"], self.batch["last_id"], result)
        return result


class KoyweIssuanceReportOperator(BaseOperator):
    """Write and log the run's report; emit the issued-documents Asset event with the counts.

    :param report_dir: folder (``ObjectStoragePath`` URL or local path) for ``<dag_id>/<run_id>.json|.md``;
        default ``$AIRFLOW_HOME/koywe_reports``.
    :param outcomes: the mapped issue tasks' XComs. :param ingest: the ingest task's XCom.
    XCom: ``{"states": {...}, "failures": n, "report": path}``.
    """

    template_fields: Sequence[str] = ("report_dir", "outcomes", "ingest", "dry_run", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        report_dir: str | None = None,
        outcomes: Any = (),
        ingest: Any = None,
        dry_run: bool | str = False,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.report_dir = report_dir
        self.outcomes = outcomes
        self.ingest = ingest
        self.dry_run = dry_run
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        import os

        from koywe_provider.ingest import as_storage_path
        from koywe_provider.report import build_report, render_markdown, write_report

        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        report = build_report(
            ledger,
            dag_id=context["ti"].dag_id,
            run_id=context["run_id"],
            ingest=self.ingest if isinstance(self.ingest, dict) else None,
            outcomes=list(self.outcomes or []),
            dry_run=_to_bool(self.dry_run),
        )
        folder = self.report_dir or str(
            Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "koywe_reports"
        )
        json_path, _ = write_report(report, as_storage_path(folder))
        self.log.info("Koywe issuance report (%s):\n%s", json_path, render_markdown(report))
        summary = {"states": report["states"], "failures": len(report["failures"]), "report": str(json_path)}
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {
                "run_id": context["run_id"],
                "issued": report["states"].get("issued", 0),
                "report": str(json_path),
            }
        return summary


class KoyweReferenceLookupOperator(BaseOperator):
    """Find the Koywe document(s) carrying an internal reference (``GET /documents?reference_code=5&…``).

    XCom: ``{"reference", "matches": n, "documents": [{"document_id", "document_number", "document_status"}]}``.
    More than one match is a duplicate: logged as an alarm, never acted on.
    """

    template_fields: Sequence[str] = ("reference", "account_id", "koywe_conn_id")

    def __init__(
        self,
        *,
        reference: str,
        account_id: str | int | None = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reference = reference
        self.account_id = account_id
        self.koywe_conn_id = koywe_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        found = KoyweHook(self.koywe_conn_id).find_documents_by_reference(
            self.reference, account_id=self.account_id
        )
        docs = []
        for doc in found:
            header = doc.get("header") if isinstance(doc.get("header"), dict) else {}
            docs.append(
                {
                    "document_id": doc.get("document_id"),
                    "document_number": header.get("document_number", doc.get("document_number")),
                    "document_status": header.get("document_status", doc.get("document_status")),
                }
            )
        if len(docs) > 1:
            self.log.error(
                "Duplicate alarm: %d Koywe documents carry reference %s", len(docs), self.reference
            )
        return {"reference": self.reference, "matches": len(docs), "documents": docs}
