"""FastAPI application of the Koywe sandbox.

``/V1`` (alias ``/v1``) mimics the Koywe Billing API (auth, documents, webhook subscriptions, accounts).
Credit and debit notes are validated against the original their ``references[]`` names
(:func:`koywe_sandbox.documents.note_problem`: a 400 naming the field otherwise); ``DELETE
/V1/documents/{id}`` deletes drafts only (400 for any other document, 404 for an unknown one).
``/_sandbox`` holds the admin endpoints: no auth, no faults, no rate limit, not counted in any ``/V1`` stat:

- ``GET /_sandbox/stats``: counters (``state.STAT_KEYS``), among them ``max_requests_in_any_second``
  (largest number of ``/V1`` arrivals, any endpoint and outcome, within a sliding one-second window
  ``[t, t+1)`` of the sandbox clock since the last reset).
- ``GET /_sandbox/arrivals``: every ``/V1`` arrival since the last reset, oldest first, ``{"at": seconds,
  "method", "target": path and query}`` (:meth:`SandboxState.arrival_view`): which calls made a peak.
- ``POST /_sandbox/reset``: see :meth:`SandboxState.reset`.
- ``GET|POST /_sandbox/faults``: fault keys (``faults`` module docstring).
- ``GET /_sandbox/documents``: every stored document, by document_id. ``POST /_sandbox/documents`` (a
  ``POST /V1/documents`` body; ``?generate_stamp=1`` honoured; the Peru boleta date rule not applied):
  plant a document created out of band, answer 201 with it (:meth:`SandboxState.plant_document`).
- ``DELETE /_sandbox/documents/{document_id}``: forget a document (gone from lists and ``GET``; for
  reconciliation tests: a document the ledger holds and Koywe does not); 404 when unknown.
- ``GET|POST /_sandbox/validation``: tax-bureau settings ``{"delay_seconds": s|null, "outcomes": {"3": p,
  "4": p, "5": p}, "reject_references": [ref, …], "cancel_pending_acceptance": bool}``
  (:meth:`SandboxState.set_validation`); the answer adds ``in_process``.
- ``POST /_sandbox/validate`` (``{"document_ids": [...]|null, "outcome": 2..5|null}``): finish validations
  in process now (all when ``document_ids`` is null) and deliver their callbacks before answering
  ``{"validated": [ids], "callbacks": {"sent": n, "failed": n}}``.
- ``GET /_sandbox/clock`` → ``{"now", "offset_seconds", "manual"}``; ``POST /_sandbox/clock``
  (``{"advance_seconds": s}``): move the sandbox clock forward (token expiry, token bucket, validation
  schedule, the one-second window), finish the validations that became due and deliver their callbacks
  before answering ``{"now", "offset_seconds", "manual", "validated", "callbacks"}``.
- ``POST /_sandbox/cancellations/{document_id}`` (``{"outcome": "accepted"|"refused"}``): finish a Mexico
  cancellation pending acceptance (``cancel_pending_acceptance``); 404 unknown document, 400 none pending.
- ``POST /_sandbox/counterparty/{document_id}`` (``{"status": 2|3}``): set ``header.document_status``
  (2 sent to the counterparty, 3 accepted by it) of an issued document; 404 unknown, 400 bad status/draft.

Both of the last two answer ``{"document": {…}, "callbacks": {"sent": n, "failed": n}}`` after delivering a
``DOCUMENT.STATUSUPDATE`` callback, as does every completed validation (the scheduled ones too): it is POSTed
with HTTP basic auth to every ``/V1/webhook_subscriptions`` entry of the document's account, with exactly the
documented fields ``{document_id, account_id, document_status, taxbureau_send_status, taxbureau_send_id,
taxbureau_send_date, taxbureau_validation_status, taxbureau_validation_comments}`` (``document_status`` is the
top-level one). Errors are always ``{"error": "<message>"}``.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import documents as docs
from .accounts import account_error
from .faults import LIST_SHAPES
from .state import SandboxConfig, SandboxState

#: Key under which the custom uvicorn protocol puts the connection's transport in ``scope["state"]``.
TRANSPORT_STATE_KEY = "koywe_sandbox.transport"
ENVELOPES = LIST_SHAPES
#: Shortest real sleep of a scheduled validation that is not due yet (a frozen clock must not spin).
MIN_VALIDATION_SLEEP_S = 0.05
LIST_FILTERS = (
    "issue_date_from",
    "issue_date_to",
    "document_type_id",
    "document_number",
    "receiver_tax_id_code",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
    "account_id",
    "reference_code",
    "reference_number",
)
INVALID_TOKEN = {"error": "Invalid or expired token"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Koywe error response ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class DropConnection(Response):
    """Response that sends nothing: closes the TCP connection, then waits for uvicorn to notice.

    Needs the transport that :class:`koywe_sandbox.server.DroppableH11Protocol` exposes in
    ``scope["state"]``. Because uvicorn sees the disconnect before the app returns, it neither sends a 500
    nor logs an error.
    """

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        transport = (scope.get("state") or {}).get(TRANSPORT_STATE_KEY)
        if transport is None:
            raise RuntimeError("lost responses need koywe_sandbox.server.DroppableH11Protocol")
        transport.close()  # FIN without any response byte: the client sees RemoteDisconnected
        try:
            async with asyncio.timeout(5):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:  # pragma: no cover - the loop always reports connection_lost
            transport.abort()


class V1Middleware:
    """Pure ASGI middleware for ``/V1``: in-flight accounting, rate limit, burst 429, 5xx, latency."""

    def __init__(self, app: Any, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            path = "/V1" + path[3:]
            scope = {**scope, "path": path, "raw_path": path.encode()}
        if not (path == "/V1" or path.startswith("/V1/")):
            await self.app(scope, receive, send)
            return
        state = self.state
        query = scope.get("query_string") or b""
        state.enter(scope["method"], path + (f"?{query.decode('latin-1')}" if query else ""))
        try:
            refusal = state.admit()
            if state.faults.latency_ms > 0:
                await asyncio.sleep(state.faults.latency_ms / 1000)
            if refusal is not None:
                response = JSONResponse(refusal.body, status_code=refusal.status, headers=refusal.headers)
                await response(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            state.leave()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _stamp(request: Request) -> bool:
    return request.query_params.get("generate_stamp") in ("1", "true", "True")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    value = docs.as_int(raw)
    if value is None:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _envelope(
    kind: str, request: Request, items: list[dict[str, Any]], page: int, per_page: int, flat_items: bool
) -> dict[str, Any]:
    total = len(items)
    page_count = math.ceil(total / per_page)
    chunk = items[(page - 1) * per_page : page * per_page]
    if flat_items:
        chunk = [docs.list_item(d) for d in chunk]
    if kind == "data":
        return {"data": chunk, "pagination": {"total": total, "per_page": per_page, "current_page": page}}
    body: dict[str, Any] = {
        "page_count": page_count,
        "total_items": total,
        "page": page,
        "page_size": per_page,
    }
    if kind == "flat":
        return {"documents": chunk, **body}
    base = str(request.url.replace(query=""))
    query = dict(request.query_params)
    links: dict[str, Any] = {"self": {"href": str(request.url)}}
    if page < page_count:
        links["next"] = {"href": f"{base}?{urlencode({**query, 'page': page + 1, 'per_page': per_page})}"}
    return {"_embedded": {"documents": chunk}, "_links": links, **body}


def create_app(config: SandboxConfig | None = None) -> FastAPI:
    """Build the sandbox app; ``app.state.sandbox`` is the :class:`SandboxState`."""
    config = config or SandboxConfig()
    if config.list_envelope not in ENVELOPES:
        raise ValueError(f"list_envelope must be one of {ENVELOPES}")
    state = SandboxState(config)
    app = FastAPI(title="Koywe Billing API sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = state
    app.add_middleware(V1Middleware, state=state)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - defensive
        return error(500, f"Internal sandbox error: {type(exc).__name__}")

    background: set[asyncio.Task[Any]] = set()

    async def deliver(payload: dict[str, Any]) -> dict[str, int]:
        """POST one ``DOCUMENT.STATUSUPDATE`` to every subscriber of the document's account."""
        sent = failed = 0
        subscribers = state.subscribers(payload["account_id"])
        if not subscribers:  # no client at all: building one costs ~0.1 s on a busy machine
            return {"sent": 0, "failed": 0}
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for sub in subscribers:
                try:
                    response = await client.post(
                        sub["callback_url"],
                        json=payload,
                        auth=(sub["callback_username"], sub["callback_password"]),
                    )
                    ok = 200 <= response.status_code < 300
                except httpx.HTTPError:
                    ok = False
                sent, failed = sent + ok, failed + (not ok)
        state.stats["callbacks_sent"] += sent
        state.stats["callbacks_failed"] += failed
        return {"sent": sent, "failed": failed}

    async def complete_and_deliver(ids: list[int], outcome: int | None = None) -> dict[str, Any]:
        """Finish the validations of ``ids`` that are in process; deliver each callback in turn."""
        validated, callbacks = [], {"sent": 0, "failed": 0}
        for document_id in ids:
            payload = state.complete_validation(document_id, outcome)
            if payload is None:
                continue
            validated.append(document_id)
            for key, value in (await deliver(payload)).items():
                callbacks[key] += value
        return {"validated": validated, "callbacks": callbacks}

    async def validate_when_due(document_id: int) -> None:
        """Wait (real time) until the sandbox clock reaches the document's due time, then finish it.

        Re-reads the due time after every sleep: a clock advance may have finished it already, a reset
        may have replaced it."""
        while True:
            due = state.validation_due.get(document_id)
            if due is None or document_id not in state.validating:
                return
            remaining = due - state.clock()
            if remaining <= 0:
                break
            await asyncio.sleep(max(remaining, MIN_VALIDATION_SLEEP_S))
        await complete_and_deliver([document_id])

    def schedule_validation(document_id: int) -> None:
        if state.schedule_validation(document_id) is None:
            return
        task = asyncio.get_running_loop().create_task(validate_when_due(document_id))
        background.add(task)
        task.add_done_callback(background.discard)

    def unauthorized(request: Request) -> JSONResponse | None:
        if state.token_valid(request.headers.get("authorization")):
            return None
        return JSONResponse(INVALID_TOKEN, status_code=401)

    # ------------------------------------------------------------------ Koywe API
    @app.post("/V1/auth")
    async def auth(request: Request) -> JSONResponse:
        status, body = state.authenticate(await _json_body(request))
        return JSONResponse(body, status_code=status)

    @app.post("/V1/documents")
    async def create_document(request: Request) -> Response:
        body = await _json_body(request)
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            docs.validate_document(body)
        except docs.ValidationError as exc:
            return error(400, str(exc))
        if (problem := state.note_problem(body)) is not None:
            return error(400, problem)
        if (no_id := state.roll_no_document_id()) is not None:
            return JSONResponse(no_id[1], status_code=no_id[0])
        document = state.create_document(body, _stamp(request))
        schedule_validation(document["document_id"])
        fault = state.roll_post_create_fault()
        if fault == "lost":
            return DropConnection()
        if fault == "slow":
            await asyncio.sleep(state.faults.slow_response_ms / 1000)
        return JSONResponse(document, status_code=201)

    @app.get("/V1/documents")
    async def list_documents(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            page = max(1, _int_param(request, "page", 1))
            per_page = min(100, max(1, _int_param(request, "per_page", 10)))
        except ValueError as exc:
            return error(400, str(exc))
        filters = {
            k: request.query_params[k] for k in LIST_FILTERS if request.query_params.get(k) not in (None, "")
        }
        items = state.list_documents(filters)
        faults = state.faults
        flat = faults.list_items == "flat"
        return JSONResponse(_envelope(faults.list_shape, request, items, page, per_page, flat))

    @app.get("/V1/documents/{document_id}")
    async def get_document(document_id: str, request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        state.stats["document_reads"] += 1
        document = state.documents.get(docs.as_int(document_id) or -1)
        return JSONResponse(document) if document else error(404, "Document not found")

    @app.put("/V1/documents/{document_id}")
    async def update_document(document_id: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if (denied := unauthorized(request)) is not None:
            return denied
        document = state.documents.get(docs.as_int(document_id) or -1)
        if document is None:
            return error(404, "Document not found")
        target = docs.as_int(body.get("document_status")) if isinstance(body, dict) else None
        if target not in (1, 2):
            return error(400, 'document_status must be "1" or "2"')
        if state.update_status(document, target) == "refused":
            return error(400, "Cannot update a signed document")
        schedule_validation(document["document_id"])
        return JSONResponse(document)

    @app.delete("/V1/documents/{document_id}")
    async def delete_document(document_id: str, request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        key = docs.as_int(document_id)
        if key is None or key not in state.documents:
            return error(404, "Document not found")
        if state.delete_document(key) == "refused":
            return error(400, "Only draft documents can be deleted")
        return JSONResponse({"document_id": key, "deleted": True})

    @app.post("/V1/webhook_subscriptions")
    async def create_webhook_subscription(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if (denied := unauthorized(request)) is not None:
            return denied
        status, answer = state.add_subscription(body)
        return JSONResponse(answer, status_code=status)

    @app.post("/V1/accounts")
    async def create_account(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if (denied := unauthorized(request)) is not None:
            return denied
        if (problem := account_error(body)) is not None:
            return error(400, problem)
        return JSONResponse({"account_id": state.create_account(body)}, status_code=201)

    @app.get("/V1/accounts/{account_id}")
    async def get_account(account_id: str, request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        account = state.public_account(account_id)
        return JSONResponse(account) if account else error(404, "Account not found")

    # ------------------------------------------------------------------ admin
    @app.get("/_sandbox/stats")
    async def stats() -> dict[str, int]:
        return dict(state.stats)

    @app.get("/_sandbox/arrivals")
    async def arrivals() -> list[dict[str, Any]]:
        return state.arrival_view()

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"reset": True}

    @app.get("/_sandbox/faults")
    async def get_faults() -> dict[str, Any]:
        return state.fault_view()

    @app.post("/_sandbox/faults")
    async def set_faults(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        try:
            return JSONResponse(state.set_faults(body))
        except (ValueError, TypeError) as exc:
            return error(400, str(exc))

    @app.get("/_sandbox/validation")
    async def get_validation() -> dict[str, Any]:
        return state.validation_view()

    @app.post("/_sandbox/validation")
    async def set_validation(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        try:
            return JSONResponse(state.set_validation(body))
        except (ValueError, TypeError) as exc:
            return error(400, str(exc))

    @app.post("/_sandbox/validate")
    async def validate_now(request: Request) -> JSONResponse:
        body = await _json_body(request) or {}
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        outcome = body.get("outcome")
        if outcome is not None and (isinstance(outcome, bool) or outcome not in (2, 3, 4, 5)):
            return error(400, "outcome must be 2, 3, 4, 5 or null")
        wanted = body.get("document_ids")
        ids = sorted(state.validating) if wanted is None else [docs.as_int(d) or -1 for d in wanted]
        return JSONResponse(await complete_and_deliver(ids, outcome))

    def clock_view() -> dict[str, Any]:
        clock = state.clock
        return {"now": clock(), "offset_seconds": clock.offset, "manual": clock.manual}

    @app.get("/_sandbox/clock")
    async def get_clock() -> dict[str, Any]:
        return clock_view()

    @app.post("/_sandbox/clock")
    async def advance_clock(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) != {"advance_seconds"}:
            return error(400, 'Request body must be {"advance_seconds": <seconds>}')
        try:
            state.clock.advance(body["advance_seconds"])
        except ValueError as exc:
            return error(400, str(exc))
        completed = await complete_and_deliver(state.due_validations())
        return JSONResponse({**clock_view(), **completed})

    @app.get("/_sandbox/documents")
    async def all_documents() -> list[dict[str, Any]]:
        return [doc for _, doc in sorted(state.documents.items())]

    @app.post("/_sandbox/documents")
    async def plant_document(request: Request) -> JSONResponse:
        body = await _json_body(request)
        try:
            docs.validate_document(body, boleta_date=False)
        except docs.ValidationError as exc:
            return error(400, str(exc))
        document = state.plant_document(body, _stamp(request))
        schedule_validation(document["document_id"])
        return JSONResponse(document, status_code=201)

    @app.delete("/_sandbox/documents/{document_id}")
    async def forget_document(document_id: str) -> JSONResponse:
        key = docs.as_int(document_id)
        if key is None or state.forget_document(key) is None:
            return error(404, "Document not found")
        return JSONResponse({"forgotten": key})

    async def _document_event(document_id: str, change: Any) -> JSONResponse:
        """Apply ``change(id)`` (a state method returning a callback payload) and deliver the callback."""
        key = docs.as_int(document_id)
        if key is None or key not in state.documents:
            return error(404, "Document not found")
        try:
            payload = change(key)
        except ValueError as exc:
            return error(400, str(exc))
        callbacks = await deliver(payload)
        return JSONResponse({"document": state.documents[key], "callbacks": callbacks})

    @app.post("/_sandbox/cancellations/{document_id}")
    async def complete_cancellation(document_id: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        return await _document_event(
            document_id, lambda k: state.complete_cancellation(k, body.get("outcome"))
        )

    @app.post("/_sandbox/counterparty/{document_id}")
    async def set_counterparty(document_id: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        return await _document_event(
            document_id, lambda k: state.set_counterparty_status(k, body.get("status"))
        )

    return app
