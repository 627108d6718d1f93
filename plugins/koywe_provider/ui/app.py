"""The Koywe page: server-rendered HTML (Jinja2) over the issuance ledger, mounted in Airflow's API server.

Routes (under the mount prefix, ``/koywe-ledger``), each behind :func:`~koywe_provider.ui.access.reader`
(Airflow login + read access to the runs of ``koywe_daily_issuance``; 401/403 otherwise):

=================================  ===========================================================================
``GET /``                          counts by state per account, country and day (filters: account, country,
                                   days); the search box
``GET /search?q=``                 documents by reference (or Koywe reference ``R~n``), folio or Koywe id;
                                   one hit opens it
``GET /documents/{id}``            one document: payload summary, every generation, every attempt, the
                                   tax bureau's answers, corrections, and the buttons that trigger the DAGs
``GET /runs``                      the runs that wrote to the ledger
``GET /runs/{run_id}``             a run's failures with their reasons and its report's Markdown rendered
``GET /trigger/{dag_id}?<param>=`` a DAG's Params form, prefilled from the query (``references=R``); its
                                   submit calls Airflow's REST API from the browser with the user's session
``GET /static/{name}``             the page's stylesheet, script and icon (no CDN, nothing fetched at run time)
=================================  ===========================================================================

The ledger is read through :mod:`koywe_provider.ledger.browse` on the ``koywe_ledger`` connection
(:class:`~koywe_provider.hooks.ledger.KoyweLedgerHook`); the reports from ``[koywe] reports_dir``
(:func:`~koywe_provider.services.report.reports_dir`). Both are resolved per request, never at import.
Payloads are never shown whole: :func:`~koywe_provider.ledger.browse.payload_summary` picks what a person
needs (no contact data, no credentials — the ledger holds none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError

from koywe_provider.ledger import Ledger, browse
from koywe_provider.ui import render
from koywe_provider.ui.access import AirflowPermissions, Permissions, ReaderDep

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_FILES = {
    "koywe.css": "text/css",
    "koywe.js": "text/javascript",
    "koywe.svg": "image/svg+xml",
}
#: Days the overview shows by default.
DEFAULT_DAYS = 14
RETRY_DAG_ID = "koywe_retry_failed_documents"
VOID_DAG_ID = "koywe_void_documents"
STATUS_DAG_ID = "koywe_document_status"
#: DAGs the page offers a form for (and no other).
TRIGGERABLE = (RETRY_DAG_ID, VOID_DAG_ID, STATUS_DAG_ID)


class LedgerUnavailableError(RuntimeError):
    """The ledger's database does not exist or holds no ledger (the set-up never ran)."""


@dataclass(frozen=True)
class Action:
    """A button on a document's page: opens ``dag_id``'s trigger form with ``prefill``."""

    label: str
    dag_id: str
    prefill: dict[str, Any]
    help: str

    def href(self) -> str:
        query: list[tuple[str, str]] = []
        for key, value in self.prefill.items():
            for item in value if isinstance(value, list) else [value]:
                query.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
        return f"trigger/{self.dag_id}?{urlencode(query)}"


def actions_for(row: dict[str, Any]) -> list[Action]:
    """The buttons a document in ``row['state']`` gets (what ``koywe_retry_failed_documents`` picks for a
    named reference: ``retryable``/``unknown``/``in_flight`` rows, and ``pending`` ones plus re-queued
    ``rejected``/``dead`` ones with ``requeue_rejected``)."""
    state, reference = row["state"], row["reference"]
    found: list[Action] = []
    if state in ("rejected", "dead"):
        found.append(
            Action(
                "Re-queue / fix and re-issue",
                RETRY_DAG_ID,
                {"references": [reference], "requeue_rejected": True},
                "koywe_retry_failed_documents with this reference: after its payload was fixed, the "
                "document is issued again (a rejected one as a new generation)",
            )
        )
    elif state == "invalid":
        found.append(
            Action(
                "Fix…",
                RETRY_DAG_ID,
                {"references": [reference]},
                "koywe_retry_failed_documents with this reference: give the corrected fields in its form "
                "(or ingest a corrected line)",
            )
        )
    elif state in ("retryable", "unknown", "in_flight"):
        found.append(
            Action(
                "Retry now",
                RETRY_DAG_ID,
                {"references": [reference]},
                "koywe_retry_failed_documents with this reference, due or not (looked up by reference "
                "first when a send may have reached Koywe)",
            )
        )
    elif state == "pending":
        found.append(
            Action(
                "Issue now",
                RETRY_DAG_ID,
                {"references": [reference], "requeue_rejected": True},
                "koywe_retry_failed_documents with this reference: issue it without waiting for the next run",
            )
        )
    if state in ("issued", "draft", "not_sent"):
        found.append(
            Action(
                "Void…",
                VOID_DAG_ID,
                {"references": [reference]},
                "koywe_void_documents: a credit note or a cancellation for this document",
            )
        )
    if state in ("draft", "issued"):
        found.append(
            Action(
                "Issue draft / cancel…",
                STATUS_DAG_ID,
                {"reference": reference, "account_id": row["account_id"]},
                "koywe_document_status: issue a Chile draft or cancel a Mexico invoice",
            )
        )
    return found


def default_ledger() -> Ledger:
    """The ledger of the ``koywe_ledger`` connection; never creates a database.

    :raises LedgerUnavailableError: the SQLite file does not exist.
    """
    from sqlalchemy.engine import make_url

    from koywe_provider.hooks.ledger import KoyweLedgerHook

    hook = KoyweLedgerHook()
    url = make_url(hook.get_url())
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        raise LedgerUnavailableError(
            f"no ledger at {url.database or '(memory)'}: the set-up (make demo / make up, or the "
            "migrations of the koywe_ledger connection) creates it"
        )
    return hook.get_ledger()


def default_reports() -> Any:
    """``[koywe] reports_dir`` as an ``ObjectStoragePath``."""
    from koywe_provider.services.ingestion import as_storage_path
    from koywe_provider.services.report import reports_dir

    return as_storage_path(reports_dir())


def create_app(
    *,
    ledger: Callable[[], Ledger] = default_ledger,
    reports: Callable[[], Any] = default_reports,
    permissions: Permissions | None = None,
) -> FastAPI:
    """Build the page's app. ``ledger`` and ``reports`` are called per request; ``permissions`` default to
    Airflow's auth manager (:class:`~koywe_provider.ui.access.AirflowPermissions`)."""
    app = FastAPI(title="Koywe ledger page", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.permissions = permissions or AirflowPermissions()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.globals.update(
        state_order=browse.STATE_ORDER,
        state_help=render.STATE_HELP,
        failed_states=browse.FAILED_STATES,
    )
    env.filters.update(
        status=lambda value, field: render.status_label(field, value),
        country=render.country_name,
        doctype=render.document_type_name,
        when=render.when,
        markdown=render.markdown,
        reason=render.reason,
        short_reference=render.short_reference,
    )
    env.globals["amount"] = render.amount

    def page(request: Request, name: str, reader: Any, code: int = 200, **context: Any) -> HTMLResponse:
        root, airflow_root = _roots(request)
        return templates.TemplateResponse(
            request,
            name,
            {"root": root, "airflow_root": airflow_root, "reader": reader, **context},
            status_code=code,
        )

    def open_ledger() -> Ledger:
        return ledger()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
            root, airflow_root = _roots(request)
            context = {
                "root": root,
                "airflow_root": airflow_root,
                "detail": exc.detail,
                "login": _login_url(request),
                "code": exc.status_code,
            }
            return templates.TemplateResponse(
                request, "denied.html", context, status_code=exc.status_code, headers=exc.headers
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(LedgerUnavailableError)
    async def no_ledger(request: Request, exc: LedgerUnavailableError) -> Response:
        return HTMLResponse(_plain_page("The Koywe ledger is not set up", str(exc)), status_code=503)

    @app.exception_handler(SQLAlchemyError)
    async def ledger_error(request: Request, exc: SQLAlchemyError) -> Response:
        log.warning("Koywe page: the ledger could not be read: %s", exc)
        return HTMLResponse(
            _plain_page(
                "The Koywe ledger could not be read",
                "Its database answered with an error (logged on the API server). If it is new, run the "
                "ledger's migrations (make up / the set-up does).",
            ),
            status_code=503,
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(reader: ReaderDep, name: str) -> FileResponse:
        # The icon is fetched by Airflow's navigation, the stylesheet and script by the pages. They hold
        # no data, but every route of the page is behind the login: no exception to reason about.
        if name not in STATIC_FILES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name])

    @app.get("/", response_class=HTMLResponse)
    def overview_page(
        request: Request,
        reader: ReaderDep,
        account: str = "",
        country: str | None = None,
        days: int = DEFAULT_DAYS,
        day_from: str = "",
        day_to: str = "",
    ) -> HTMLResponse:
        from datetime import UTC, datetime, timedelta

        led = open_ledger()
        if not day_from and days > 0:
            day_from = (datetime.now(UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")
        data = browse.overview(
            led,
            account_id=account or None,
            country_id=country,
            day_from=day_from or None,
            day_to=day_to or None,
        )
        return page(
            request,
            "overview.html",
            reader,
            data=data,
            account=account,
            country=country,
            days=days,
            day_from=day_from,
            day_to=day_to,
            runs=browse.recent_runs(led, limit=5),
        )

    @app.get("/search", response_class=HTMLResponse)
    def search_page(request: Request, reader: ReaderDep, q: str = "") -> Response:
        hits = browse.search(open_ledger(), q)
        if len(hits) == 1 and hits[0]["matched"] != "reference_prefix":
            return RedirectResponse(f"documents/{hits[0]['id']}", status_code=status.HTTP_303_SEE_OTHER)
        return page(request, "search.html", reader, q=q.strip(), hits=hits)

    @app.get("/documents/{pk}", response_class=HTMLResponse)
    def document_page(request: Request, reader: ReaderDep, pk: int) -> HTMLResponse:
        story = browse.document_story(open_ledger(), pk)
        if story is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {pk} in the ledger")
        actions = actions_for(story.row)
        return page(
            request,
            "document.html",
            reader,
            story=story,
            row=story.row,
            summary=story.summary,
            actions=[(a, reader.may_trigger(a.dag_id)) for a in actions],
        )

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, reader: ReaderDep) -> HTMLResponse:
        return page(request, "runs.html", reader, runs=browse.recent_runs(open_ledger(), limit=100))

    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_page(request: Request, reader: ReaderDep, run_id: str) -> HTMLResponse:
        from koywe_provider.services.report import find_report

        led = open_ledger()
        failures = browse.run_failures(led, run_id)
        counts = browse.run_counts(led, run_id)
        report_md, report_dag, report_error = None, None, None
        try:
            found = find_report(reports(), run_id)
        except Exception as exc:  # a storage error must not hide the ledger's answer
            log.warning("Koywe page: reports of run %s could not be listed: %s", run_id, exc)
            found, report_error = None, "the reports' folder could not be read (logged on the API server)"
        if found is not None:
            report_dag, path = found
            report_md = path.read_text()
        if not failures and not any(counts.values()) and found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"the ledger knows no run {run_id}")
        return page(
            request,
            "run.html",
            reader,
            run_id=run_id,
            failures=failures,
            counts=counts,
            report_md=report_md,
            report_dag=report_dag,
            report_error=report_error,
        )

    @app.get("/trigger/{dag_id}", response_class=HTMLResponse)
    def trigger_page(request: Request, reader: ReaderDep, dag_id: str) -> HTMLResponse:
        if dag_id not in TRIGGERABLE:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"the Koywe page triggers no DAG {dag_id}")
        prefill: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            prefill.setdefault(key, []).append(value)
        return page(
            request,
            "trigger.html",
            reader,
            dag_id=dag_id,
            prefill=prefill,
            allowed=reader.may_trigger(dag_id),
        )

    return app


def _roots(request: Request) -> tuple[str, str]:
    """``(the page's root path, Airflow's root path)``: ``("/koywe-ledger", "")``, or with Airflow under
    ``/airflow``, ``("/airflow/koywe-ledger", "/airflow")`` (the mount sets the ASGI ``root_path``)."""
    from koywe_provider.ui.asgi import URL_PREFIX

    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root, root.removesuffix(URL_PREFIX) if root.endswith(URL_PREFIX) else ""


def _login_url(request: Request) -> str | None:
    """Airflow's login page, coming back to this page afterwards (``None`` outside an API server)."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # no auth manager initialised (a test app): no link
        return None


def _plain_page(title: str, text: str) -> str:
    from markupsafe import escape

    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body style='font-family: system-ui, sans-serif; margin: 2rem'><h1>{escape(title)}</h1>"
        f"<p>{escape(text)}</p></body></html>"
    )


__all__ = ["TRIGGERABLE", "Action", "LedgerUnavailableError", "actions_for", "create_app", "default_ledger"]
