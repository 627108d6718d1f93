"""Operators for the Koywe Billing API and the issuance ledger.

Thin by design: each resolves its templated arguments, calls a hook or a service
(:mod:`koywe_provider.services.issuance`, ``.batches``, ``.ingestion``, ``.report``), and returns a small
XCom (ids and counts — never payloads, tokens or credentials).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.ledger import DocumentState
from koywe_provider.services.batches import DEFAULT_MIN_BATCH_SIZE, DEFAULT_TARGET_BATCHES, BatchPlanner
from koywe_provider.services.issuance import IssuancePolicy, Issuer


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
    :param issue_date: ``YYYY-MM-DD`` stamped on documents that carry no ``header.issue_date``; empty:
        today in each document's country.
    Lines longer than ``[koywe] max_line_bytes`` (default 1 MiB, read at run time) are recorded as
    invalid without being read whole.
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
        from airflow.sdk import conf

        from koywe_provider.services.ingestion import DEFAULT_MAX_LINE_BYTES, as_storage_path, read_inbox

        inbox = as_storage_path(self.inbox, base_dir=Path(self.base_dir) if self.base_dir else None)
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        max_line_bytes = conf.getint("koywe", "max_line_bytes", fallback=DEFAULT_MAX_LINE_BYTES)
        counts = ledger.ingest_many(
            read_inbox(inbox, issue_date=self.issue_date or None, max_line_bytes=max_line_bytes),
            run_id=context["run_id"],
        )
        result = counts.as_dict()
        self.log.info("Ingested %s: %s", inbox, result)
        return result


class KoywePlanBatchesOperator(BaseOperator):
    """Split the rows due for issuance into contiguous id ranges, one per mapped issue task.

    Planning is :class:`~koywe_provider.services.batches.BatchPlanner`'s (100,000 documents → at most
    500 mapped tasks).
    XCom: ``[{"index", "first_id", "last_id", "count", "window_first_id", "window_last_id"}, …]`` — ``[]``
    when ``dry_run`` or nothing is due (the window: the whole plan, for tasks that finish early).

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
        target_batches: int = DEFAULT_TARGET_BATCHES,
        min_batch_size: int = DEFAULT_MIN_BATCH_SIZE,
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

    def execute(self, context: Context) -> list[dict[str, Any]]:
        planner = BatchPlanner(
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            target_batches=self.target_batches,
            min_batch_size=self.min_batch_size,
        )
        references = _to_list(self.references)
        if references or _to_bool(self.requeue_rejected):
            return planner.selected(
                references,
                self.states,
                requeue_rejected=_to_bool(self.requeue_rejected),
                dry_run=_to_bool(self.dry_run),
            )
        if _to_bool(self.dry_run):
            self.log.info("Dry run: nothing will be sent to Koywe")
            return []
        return planner.due(self.states)


class KoyweIssueDocumentsOperator(BaseOperator):
    """Issue one batch of ledger rows through Koywe (``POST /documents``), exactly once each.

    :param batch: ``{"first_id", "last_id", …}`` from :class:`KoywePlanBatchesOperator` (usually mapped).
        With ``window_first_id``/``window_last_id`` the task goes on, once its own range is done, with
        the plan's rows no task has claimed yet, so rows never wait for a pool slot while a task could
        send them (the counts in its XCom are of the rows it handled).
    :param states: ledger states to issue (``batch["states"]`` wins when present); named
        ``batch["references"]`` are issued due or not.
    :param lease_seconds: claim lease; default ``[koywe] lease_seconds`` (900), see
        :class:`~koywe_provider.services.issuance.IssuancePolicy` for the other ``[koywe]`` settings.
    XCom: the batch's outcome counts (``issued``, ``adopted``, ``rejected``, ``retryable``, ``unknown`` …)
    and the legal archive's (``archived_documents``, ``archived_files``, ``archived_bytes``,
    ``archived_without_files``, ``archived_failed``): with ``[koywe] archive_enabled`` (default true) the
    XML and PDF of every document Koywe answers with are written under ``[koywe] archive_root`` once
    the row is recorded, off the issuing threads (:mod:`koywe_provider.services.archive`).
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
        lease_seconds: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.batch = batch
        self.states = tuple(states)
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id
        self.lease_seconds = lease_seconds

    def execute(self, context: Context) -> dict[str, int]:
        ti = context["ti"]
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}"
        states = tuple(self.batch.get("states") or self.states)
        references = self.batch.get("references") or None
        from koywe_provider.services.archive import ArchiveSettings, ArchiveWriter, DocumentArchive

        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        policy = IssuancePolicy.from_config()
        settings = ArchiveSettings.from_config()
        writer = None
        if settings.enabled:
            writer = ArchiveWriter(
                DocumentArchive(ledger, settings.root_path()),
                threads=min(4, policy.max_in_flight),
                queue_size=2 * policy.max_in_flight,
            )
        issuer = Issuer(
            KoyweHook(self.koywe_conn_id),
            ledger,
            owner=owner,
            run_id=context["run_id"],
            task=ti.task_id,
            policy=policy,
            lease_seconds=self.lease_seconds,
            on_recorded=writer.on_recorded if writer is not None else None,
        )
        try:
            outcome = issuer.issue_range(
                int(self.batch["first_id"]),
                int(self.batch["last_id"]),
                states=states,
                references=references,
                due_before=datetime(2999, 1, 1, tzinfo=UTC) if references else None,  # named: due or not
                steal_window=_steal_window(self.batch),
            )
        finally:
            archived = writer.close() if writer is not None else None
        result = {**outcome.as_dict(), **(archived.as_xcom() if archived is not None else {})}
        self.log.info("Batch %s..%s: %s", self.batch["first_id"], self.batch["last_id"], result)
        return result


def _steal_window(batch: dict[str, Any]) -> tuple[int, int] | None:
    """The plan's whole id span, when the planner gave one (older plans did not)."""
    if batch.get("window_first_id") is None or batch.get("window_last_id") is None:
        return None
    return int(batch["window_first_id"]), int(batch["window_last_id"])


class KoyweIssuanceReportOperator(BaseOperator):
    """Write and log the run's report (run it with ``trigger_rule="all_done"``: it reports failures too).

    :param report_dir: folder (``ObjectStoragePath`` URL or local path) for ``<dag_id>/<run_id>.json|.md``;
        default ``[koywe] reports_dir``, else ``$AIRFLOW_HOME/koywe_reports`` (where the Koywe page reads).
    :param outcomes: the mapped issue tasks' XComs. :param ingest: the ingest task's XCom.
    XCom: ``{"states": {...}, "failures": n, "counts": {...}, "report": path}`` (``counts`` is
    :func:`~koywe_provider.services.report.run_counts`), read by :class:`KoyweIssuedEventOperator` and
    :class:`KoyweRunCheckOperator`.
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
        from airflow.sdk import conf

        from koywe_provider.services.ingestion import as_storage_path
        from koywe_provider.services.report import (
            DEFAULT_STUCK_AFTER_SECONDS,
            build_report,
            render_markdown,
            reports_dir,
            run_counts,
            write_report,
        )

        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        report = build_report(
            ledger,
            dag_id=context["ti"].dag_id,
            run_id=context["run_id"],
            ingest=self.ingest if isinstance(self.ingest, dict) else None,
            # One read of the mapped XComs (iterating the lazy list would read them one by one until a miss).
            outcomes=list(self.outcomes[:]) if self.outcomes else [],
            dry_run=_to_bool(self.dry_run),
            stuck_after_seconds=conf.getfloat(
                "koywe", "stuck_after_seconds", fallback=DEFAULT_STUCK_AFTER_SECONDS
            ),
        )
        json_path, _ = write_report(report, as_storage_path(self.report_dir or reports_dir()))
        self.log.info("Koywe issuance report (%s):\n%s", json_path, render_markdown(report))
        return {
            "states": report["states"],
            "failures": len(report["failures"]),
            "counts": run_counts(report),
            "report": str(json_path),
        }


class KoyweIssuedEventOperator(BaseOperator):
    """Emit the Asset event of its ``outlets`` only when the run issued something (``issued + adopted > 0``).

    Skipped otherwise: Airflow 3.3 registers an outlet's event whenever its task succeeds, so skipping is
    how a task withholds it. The event's ``extra``: ``run_id``, the report's ``counts`` and its path.

    :param summary: the report task's XCom.
    """

    template_fields: Sequence[str] = ("summary",)

    def __init__(self, *, summary: Any = None, **kwargs):
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        summary = self.summary if isinstance(self.summary, dict) else {}
        counts = summary.get("counts") or {}
        if counts.get("issued", 0) + counts.get("adopted", 0) <= 0:
            raise AirflowSkipException("Nothing issued in this run: no Asset event")
        extra = {"run_id": context["run_id"], **counts, "report": summary.get("report")}
        for asset in self.outlets:
            context["outlet_events"][asset].extra = extra
        self.log.info("Asset event with %s", extra)
        return extra


class KoyweRunCheckOperator(BaseOperator):
    """The run's last task (``trigger_rule="all_done"``): fail the run when its work failed, and put the
    counts in the run's note.

    Fails (once, no retries, one line naming what failed and the report) when another task of the run
    failed, when no report was written, when the run has ``dead`` rows or duplicate alarms, when more
    than ``max_invalid_fraction`` of its documents are invalid (``[koywe] max_invalid_fraction``, default
    1.0: invalid lines are recorded rejections listed in the report and do not fail the run), and with
    ``fail_on_stuck`` when ledger rows are stuck (unchanged past ``[koywe] stuck_after_seconds``).

    The run's note (the UI's run header) gets the verdict and the counts
    (:func:`~koywe_provider.services.report.run_note`) through Airflow's public REST API as the
    connection ``airflow_api_conn_id`` (:class:`~koywe_provider.hooks.airflow_api.AirflowApiHook`): the
    Task SDK has no call that sets a run's note (``docs/DESIGN.md``, "Run notes"). Without that
    connection, or when the API server refuses, the task logs one line and goes on: the note never
    decides the run's state. The counts are also in the log and XCom (key ``run_check``, and the return
    value when the run is OK): ``{"ok", "problems", "counts", "report", "note"}``.

    :param summary: the report task's XCom.
    """

    template_fields: Sequence[str] = ("summary", "airflow_api_conn_id")

    def __init__(
        self,
        *,
        summary: Any = None,
        max_invalid_fraction: float | None = None,
        fail_on_stuck: bool = False,
        airflow_api_conn_id: str = "koywe_airflow_api",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.summary = summary
        self.max_invalid_fraction = max_invalid_fraction
        self.fail_on_stuck = fail_on_stuck
        self.airflow_api_conn_id = airflow_api_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import conf
        from airflow.sdk.exceptions import AirflowFailException

        from koywe_provider.services.report import DEFAULT_MAX_INVALID_FRACTION, run_note, run_problems

        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        states = {task: state for task, state in states.items() if task != ti.task_id}
        threshold = self.max_invalid_fraction
        if threshold is None:
            threshold = conf.getfloat("koywe", "max_invalid_fraction", fallback=DEFAULT_MAX_INVALID_FRACTION)
        summary = self.summary if isinstance(self.summary, dict) else None
        counts = summary.get("counts") if summary else None
        problems = run_problems(
            states, counts, max_invalid_fraction=threshold, fail_on_stuck=self.fail_on_stuck
        )
        report = (summary or {}).get("report") or "none written"
        result = {"ok": not problems, "problems": problems, "counts": counts or {}, "report": report}
        self.log.info("Koywe run counts: %s", counts)
        result["note"] = self._set_note(ti.dag_id, ti.run_id, run_note(problems, counts, report))
        ti.xcom_push(key="run_check", value=result)  # kept when the check fails, too
        if problems:
            message = f"Koywe run failed: {'; '.join(problems)} (report: {report})"
            self.log.error(message)
            raise AirflowFailException(message)
        self.log.info("Koywe run OK (report: %s)", report)
        return result

    def _set_note(self, dag_id: str, run_id: str, note: str) -> bool:
        """Set the run's note; ``True`` when done. Never raises: the note is not the run's verdict."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from koywe_provider.hooks.airflow_api import AirflowApiError, AirflowApiHook

        try:
            AirflowApiHook(self.airflow_api_conn_id).set_dag_run_note(dag_id, run_id, note)
        except AirflowNotFoundException:
            self.log.info(
                'Run note not set: no connection %r to Airflow\'s REST API (README, "Run notes")',
                self.airflow_api_conn_id,
            )
            return False
        except (AirflowApiError, OSError) as err:  # requests' errors are OSErrors
            self.log.warning("Run note not set: %s", err)
            return False
        self.log.info("Run note set: %s", note.splitlines()[0])
        return True


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
        docs = [
            {
                "document_id": doc.document_id,
                "document_number": doc.document_number,
                "document_status": None if doc.document_status is None else int(doc.document_status),
            }
            for doc in found
        ]
        if len(docs) > 1:
            self.log.error(
                "Duplicate alarm: %d Koywe documents carry reference %s", len(docs), self.reference
            )
        return {"reference": self.reference, "matches": len(docs), "documents": docs}
