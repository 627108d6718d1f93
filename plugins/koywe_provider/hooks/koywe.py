"""``KoyweHook``: the Koywe Billing API (https://api-billing.koywe.com/V1) on top of ``HttpHook``.

The hook owns everything that talks to Koywe: the base URL and credentials of the ``koywe``
connection, the bearer token (cached in-process and in an Airflow Variable for its 60-minute life),
client-side pacing, pagination of ``GET /documents``, and the classification of every answer into a
result or one specific exception (:mod:`koywe_provider.exceptions`). Sources: Koywe's OpenAPI spec,
``API_NOTES.md`` and seeds ``000_…`` (token reuse, rate limits, references), ``004_…`` (status updates).
"""

from __future__ import annotations

import copy
import email.utils
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook, _is_connect_failure
from requests import Response, Session

from koywe_provider import KOYWE_DEFAULT_BASE_URL, __version__
from koywe_provider.exceptions import (
    KoyweAuthError,
    KoyweConfigurationError,
    KoyweError,
    KoyweNotFoundError,
    KoyweOutcomeUnknownError,
    KoyweRateLimitedError,
    KoyweRejectedError,
    KoyweTransientError,
)
from koywe_provider.hooks.rate_limit import RateLimiter, limiter_for
from koywe_provider.hooks.token_store import CachedToken, TokenStore, VariableTokenStore, variable_key

INTERNAL_REFERENCE_CODE = 5
INTERNAL_REFERENCE_DESCRIPTION = "Internal transaction ID"
DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
TOKEN_REFRESH_MARGIN_SECONDS = 300.0
LIST_PAGE_SIZE = 100

# Connection extras that configure the hook; they must never become HTTP headers (HttpHook turns
# unknown extras into headers, which would send the client secret with every request).
_KOYWE_EXTRA_KEYS = ("client_id", "client_secret", "requests_per_second", "timeout")
_PLACEHOLDER = re.compile(r"^(0|none|null|string|changeme|x+|<.*>|your[ _-]?\w*|\*+)$", re.IGNORECASE)

# One token per (connection, API user, client) in this process, shared by every hook instance.
_process_tokens: dict[tuple[str, str, str], CachedToken] = {}
_auth_lock = threading.Lock()


def _extra(extra: dict, name: str) -> Any:
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__koywe__{name}")
    return value


def koywe_error_message(body: Any) -> str:
    """Koywe's error text from ``{"error"|"message"|"error_message"|"error_description": …}`` (API_NOTES)."""
    if isinstance(body, dict):
        for key in ("error", "message", "error_message", "error_description"):
            if body.get(key):
                return str(body[key])
        result = body.get("result")
        if isinstance(result, dict) and result.get("error_message"):
            return str(result["error_message"])
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def merge_internal_reference(payload: dict, reference: str) -> dict:
    """Return a copy of ``payload`` whose ``references[]`` carries the internal transaction id.

    Adds ``{reference_code: 5, reference_number: reference, description: "Internal transaction ID"}``
    (seed ``000_…``, "Prevent duplicates using reference field") unless an entry with code 5 and the
    same number is already there; the document's own references are kept in order.
    """
    merged = copy.deepcopy(payload)
    references = list(merged.get("references") or [])
    for ref in references:
        if _is_internal(ref) and str(ref.get("reference_number")) == reference:
            break
    else:
        references.append(
            {
                "reference_code": INTERNAL_REFERENCE_CODE,
                "reference_number": reference,
                "description": INTERNAL_REFERENCE_DESCRIPTION,
            }
        )
    merged["references"] = references
    return merged


def _is_internal(ref: Any) -> bool:
    if not isinstance(ref, dict):
        return False
    code = str(ref.get("reference_code", "")).strip().lstrip("0")
    return code == str(INTERNAL_REFERENCE_CODE)


def documents_in_page(body: Any) -> list[dict]:
    """The documents of one ``GET /documents`` page, whatever the envelope.

    Accepts the three envelopes in API_NOTES: HAL ``{_embedded: {documents: […]}}``, flat
    ``{documents: […]}`` and ``{data: […]}``; a bare list is accepted too.
    """
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("_embedded"), dict):
        return list(body["_embedded"].get("documents") or [])
    for key in ("documents", "data"):
        if isinstance(body.get(key), list):
            return list(body[key])
    return []


def next_page(body: Any, page: int) -> int | None:
    """Number of the page after ``page``, or ``None`` when ``body`` was the last one.

    Stops on an empty page, when ``page >= page_count``, when a HAL ``_links`` has no ``next``, or
    when the ``{data, pagination: {total, per_page, current_page}}`` envelope is exhausted.
    """
    if not documents_in_page(body) or not isinstance(body, dict):
        return None
    if body.get("page_count") is not None and page >= int(body["page_count"]):
        return None
    links = body.get("_links")
    if isinstance(links, dict) and "_embedded" in body and not links.get("next"):
        return None
    pagination = body.get("pagination")
    if isinstance(pagination, dict) and pagination.get("total") is not None:
        per_page = int(pagination.get("per_page") or LIST_PAGE_SIZE)
        current = int(pagination.get("current_page") or page)
        if current * per_page >= int(pagination["total"]):
            return None
    return page + 1


def document_references(document: dict) -> list[dict]:
    refs = document.get("references")
    return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []


def document_account_id(document: dict) -> str | None:
    header = document.get("header") if isinstance(document.get("header"), dict) else {}
    value = header.get("account_id", document.get("account_id"))
    return None if value is None else str(value)


class KoyweHook(HttpHook):
    """Calls the Koywe Billing API with a cached bearer token, pacing and error classification.

    Connection (type ``koywe``): host = base URL (default ``https://api-billing.koywe.com/V1``),
    login/password = API user, extras ``client_id``, ``client_secret`` (masked),
    ``requests_per_second`` (default 5) and ``timeout`` (seconds, default 30).

    :param koywe_conn_id: the connection id (default ``koywe_default``).
    :param token_store: where the token is shared between processes; default the Airflow Variable
        ``koywe_token__<conn_id>`` (inject :class:`~koywe_provider.hooks.token_store.MemoryTokenStore`
        outside a running task).
    :param parallel_clients: how many processes share the connection's rate at once (the slots of the
        pool that runs Koywe calls); this process keeps ``requests_per_second / parallel_clients``.

    Every method raises one of: :class:`KoyweConfigurationError` (bad or placeholder credentials, nothing
    sent), :class:`KoyweAuthError`, :class:`KoyweRejectedError` (400, or ``result.status != 0``),
    :class:`KoyweNotFoundError` (404), :class:`KoyweRateLimitedError` (429, ``retry_after`` seconds),
    :class:`KoyweTransientError` (5xx, connection refused; nothing took effect) or
    :class:`KoyweOutcomeUnknownError` (a write was sent and no answer came back).
    """

    conn_name_attr = "koywe_conn_id"
    default_conn_name = "koywe_default"
    conn_type = "koywe"
    hook_name = "Koywe Billing API"
    default_host = KOYWE_DEFAULT_BASE_URL

    def __init__(
        self,
        koywe_conn_id: str = default_conn_name,
        *,
        token_store: TokenStore | None = None,
        parallel_clients: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="GET", http_conn_id=koywe_conn_id, **kwargs)
        self.koywe_conn_id = koywe_conn_id
        self.token_store: TokenStore = token_store or VariableTokenStore(variable_key(koywe_conn_id))
        self.parallel_clients = max(1, int(parallel_clients))
        self._session: Session | None = None
        self.calls = 0  # HTTP requests this hook sent (auth included); cheap observability for reports

    # --- connection ----------------------------------------------------------------------------
    @cached_property
    def connection(self):
        return self.get_connection(self.koywe_conn_id)

    @cached_property
    def _credentials(self) -> dict[str, str]:
        conn = self.connection
        extra = conn.extra_dejson
        creds = {
            "client_id": _extra(extra, "client_id"),
            "client_secret": _extra(extra, "client_secret"),
            "username": conn.login,
            "password": conn.password,
        }
        for name, value in creds.items():
            if value is None or not str(value).strip() or _PLACEHOLDER.match(str(value).strip()):
                raise KoyweConfigurationError(
                    f"Connection {self.koywe_conn_id!r}: {name} is empty or a placeholder; set the real "
                    f"Koywe API {name} (nothing was sent to Koywe)."
                )
        return {k: str(v) for k, v in creds.items()}

    @cached_property
    def requests_per_second(self) -> float:
        value = _extra(self.connection.extra_dejson, "requests_per_second")
        rate = float(value) if value not in (None, "") else DEFAULT_REQUESTS_PER_SECOND
        if rate <= 0:
            raise KoyweConfigurationError(
                f"Connection {self.koywe_conn_id!r}: requests_per_second must be > 0, got {rate}"
            )
        return rate

    @cached_property
    def timeout(self) -> float:
        value = _extra(self.connection.extra_dejson, "timeout")
        return float(value) if value not in (None, "") else DEFAULT_TIMEOUT_SECONDS

    @cached_property
    def limiter(self) -> RateLimiter:
        return limiter_for(self.koywe_conn_id, self.requests_per_second / self.parallel_clients)

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None):
        """One ``requests.Session`` per hook (keep-alive across calls), without the Koywe extras as headers."""
        if self._session is None:
            session = super().get_conn(None, extra_options)
            for key in _KOYWE_EXTRA_KEYS:
                session.headers.pop(key, None)
                session.headers.pop(f"extra__koywe__{key}", None)
            session.headers.update(
                {"User-Agent": f"airflow-provider-koywe/{__version__}", "Accept": "application/json"}
            )
            self._session = session
        return self._session

    def _configure_session_from_auth(self, session: Session, connection) -> Session:
        # login/password are the API user for POST /auth, not HTTP basic credentials.
        session.auth = None
        return session

    def _set_base_url(self, connection) -> None:
        super()._set_base_url(connection)
        self.base_url = self.base_url.rstrip("/")

    # --- token ---------------------------------------------------------------------------------
    @property
    def _token_key(self) -> tuple[str, str, str]:
        creds = self._credentials
        return (self.koywe_conn_id, creds["username"], creds["client_id"])

    def get_token(self, *, min_seconds_left: float = TOKEN_REFRESH_MARGIN_SECONDS) -> str:
        """A bearer token with at least ``min_seconds_left`` of life (default 300 s).

        Looks in this process's cache, then the shared token store, and only then calls ``POST /auth``
        (seed ``000_…``: never authenticate per document). Raises :class:`KoyweConfigurationError`
        for empty or placeholder credentials and :class:`KoyweAuthError` when Koywe refuses them.
        """
        return self._token(min_seconds_left=min_seconds_left, failed=None).access_token

    def token_info(self, *, min_seconds_left: float = TOKEN_REFRESH_MARGIN_SECONDS) -> CachedToken:
        """Like :meth:`get_token` but returns the :class:`CachedToken` (its ``expires_at`` is loggable)."""
        return self._token(min_seconds_left=min_seconds_left, failed=None)

    def _token(self, *, min_seconds_left: float, failed: str | None) -> CachedToken:
        key = self._token_key
        with _auth_lock:
            cached = _process_tokens.get(key)
            if cached and cached.access_token != failed and cached.seconds_left() > min_seconds_left:
                return cached
            stored = self.token_store.load()
            if stored and stored.access_token != failed and stored.seconds_left() > min_seconds_left:
                self._remember(key, stored)
                return stored
            token = self._authenticate()
            self.token_store.save(token)
            self._remember(key, token)
            return token

    def _remember(self, key: tuple[str, str, str], token: CachedToken) -> None:
        from airflow.sdk.log import mask_secret

        mask_secret(token.access_token)
        _process_tokens[key] = token

    def _authenticate(self) -> CachedToken:
        body = {"grant_type": "password", **self._credentials}
        response = self._send("POST", "auth", json=body, authenticated=False)
        if response.status_code in (400, 401, 403):
            raise KoyweAuthError(
                f"Koywe refused the credentials of connection {self.koywe_conn_id!r} "
                f"(HTTP {response.status_code}: {koywe_error_message(self._json(response))})",
                status_code=response.status_code,
            )
        data = self._classify(response, "POST", "auth")
        if not isinstance(data, dict) or not data.get("access_token"):
            raise KoyweAuthError(
                "POST /auth answered without an access_token", status_code=response.status_code
            )
        self.log.info("Authenticated with Koywe as connection %s", self.koywe_conn_id)
        return CachedToken.from_auth_response(data)

    def forget_token(self) -> None:
        """Drop this process's cached token (the shared store is left alone)."""
        _process_tokens.pop(self._token_key, None)

    # --- transport -----------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict | None = None,
        authenticated: bool = True,
        token: str | None = None,
    ) -> Response:
        """Send one paced request; map ``requests`` failures to Koywe exceptions (never retries)."""
        headers = {"Authorization": f"Bearer {token}"} if authenticated else {}
        self.method = method
        self.limiter.acquire()
        self.calls += 1
        extra_options = {"check_response": False, "timeout": (CONNECT_TIMEOUT_SECONDS, self.timeout)}
        try:
            if method == "GET":
                return self.run(endpoint, data=params, headers=headers, extra_options=extra_options)
            return self.run(endpoint, headers=headers, extra_options=extra_options, json=json, params=params)
        except requests.exceptions.ConnectTimeout as err:
            raise KoyweTransientError(f"{method} /{endpoint}: could not connect to Koywe ({err})") from err
        except requests.exceptions.ConnectionError as err:
            if _is_connect_failure(err) or _refused(err) or method == "GET":
                raise KoyweTransientError(f"{method} /{endpoint}: connection failed ({err})") from err
            raise KoyweOutcomeUnknownError(
                f"{method} /{endpoint}: connection dropped after the request was sent; Koywe may have "
                f"acted on it ({type(err).__name__})"
            ) from err
        except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            if method == "GET":
                raise KoyweTransientError(f"{method} /{endpoint}: no answer in time ({err})") from err
            raise KoyweOutcomeUnknownError(
                f"{method} /{endpoint}: no answer within {self.timeout:g} s after the request was sent; "
                f"Koywe may have acted on it"
            ) from err

    @staticmethod
    def _json(response: Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _classify(self, response: Response, method: str, endpoint: str) -> Any:
        """Turn an answer into its parsed body or the matching exception (API_NOTES "Errors")."""
        status = response.status_code
        body = self._json(response)
        what = f"{method} /{endpoint}"
        if 200 <= status < 300:
            if body is None and response.content:
                if method == "GET":
                    raise KoyweTransientError(f"{what}: unreadable {status} answer", status_code=status)
                raise KoyweOutcomeUnknownError(f"{what}: unreadable {status} answer", status_code=status)
            return body
        message = koywe_error_message(body) or response.reason or ""
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise KoyweRateLimitedError(f"{what}: rate limited by Koywe ({message})", retry_after=retry_after)
        if status == 401:
            raise KoyweAuthError(f"{what}: {message or 'Invalid or expired token'}", status_code=status)
        if status == 403:
            raise KoyweAuthError(f"{what}: forbidden ({message})", status_code=status)
        if status == 404:
            raise KoyweNotFoundError(f"{what}: not found ({message})", status_code=status)
        if status >= 500:
            raise KoyweTransientError(f"{what}: Koywe server error {status} ({message})", status_code=status)
        if 400 <= status < 500:
            raise KoyweRejectedError(
                f"{what}: rejected by Koywe (HTTP {status}): {message}",
                status_code=status,
                error_message=message,
                response=body if isinstance(body, dict) else None,
            )
        raise KoyweError(f"{what}: unexpected HTTP {status}", status_code=status)

    def call(self, method: str, endpoint: str, *, json: Any = None, params: dict | None = None) -> Any:
        """One authenticated API call; on a 401 the token is refreshed once and the call sent once more.

        :param endpoint: path under the base URL, e.g. ``documents/123``.
        :return: the parsed JSON body.
        """
        token = self.get_token()
        response = self._send(method, endpoint, json=json, params=params, token=token)
        if response.status_code == 401:
            self.log.warning("Koywe answered 401 to %s /%s; refreshing the token once", method, endpoint)
            token = self._token(min_seconds_left=TOKEN_REFRESH_MARGIN_SECONDS, failed=token).access_token
            response = self._send(method, endpoint, json=json, params=params, token=token)
        return self._classify(response, method, endpoint)

    # --- documents -----------------------------------------------------------------------------
    def create_document(
        self, payload: dict, *, reference: str | None = None, generate_stamp: bool = False
    ) -> dict:
        """``POST /documents``: issue one document; returns Koywe's ``Document``.

        :param payload: the Koywe document (``header``, ``details``, ``references``, ``totals``, ``options``).
        :param reference: the internal transaction id, merged into ``references[]`` with code 5.
        :raises KoyweRejectedError: HTTP 400, or 2xx with ``result.status != 0`` (``response`` carries
            the document Koywe created, e.g. ``result.status == 2``: generated, not sent to the tax bureau).
        """
        body = merge_internal_reference(payload, reference) if reference else payload
        params = {"generate_stamp": 1} if generate_stamp else None
        document = self.call("POST", "documents", json=body, params=params)
        if not isinstance(document, dict):
            raise KoyweOutcomeUnknownError("POST /documents: the answer is not a document")
        result = document.get("result") if isinstance(document.get("result"), dict) else {}
        result_status = result.get("status", 0)
        if result_status not in (0, "0", None):
            message = str(result.get("error_message") or "")
            raise KoyweRejectedError(
                f"POST /documents: Koywe answered result.status {result_status}: {message}",
                status_code=200,
                error_message=message,
                result_status=int(result_status),
                response=document,
            )
        return document

    def get_document(self, document_id: str | int) -> dict:
        """``GET /documents/{document_id}``; raises :class:`KoyweNotFoundError` when absent."""
        return self.call("GET", f"documents/{document_id}")

    def list_documents(self, **filters: Any) -> Iterator[dict]:
        """``GET /documents`` with ``filters``, every page (100 per page unless ``per_page`` is given).

        Filters (Koywe names): ``issue_date_from``, ``issue_date_to``, ``document_type_id``,
        ``document_number``, ``receiver_tax_id_code``, ``taxbureau_sending_status``,
        ``taxbureau_validation_status``, ``reference_code``, ``reference_number``, ``order_by``.
        Yields documents lazily, one request per page.
        """
        params = {k: v for k, v in filters.items() if v is not None}
        params.setdefault("per_page", LIST_PAGE_SIZE)
        page: int | None = int(params.pop("page", 1))
        while page is not None:
            body = self.call("GET", "documents", params={**params, "page": page})
            yield from documents_in_page(body)
            page = next_page(body, page)

    def find_documents_by_reference(
        self,
        reference_number: str,
        reference_code: int = INTERNAL_REFERENCE_CODE,
        *,
        account_id: str | int | None = None,
    ) -> list[dict]:
        """Documents carrying ``references[]`` entry (``reference_code``, ``reference_number``).

        ``GET /documents?reference_code=…&reference_number=…`` (seed ``000_…``), every page, kept only
        when the document is of ``account_id`` (when given) and, when Koywe returns the document's
        references, when one of them really matches. More than one result is a duplicate.
        """
        found = []
        for document in self.list_documents(reference_code=reference_code, reference_number=reference_number):
            doc_account = document_account_id(document)
            if account_id is not None and doc_account is not None and doc_account != str(account_id):
                continue
            refs = document_references(document)
            if refs and not any(
                str(r.get("reference_number")) == str(reference_number)
                and str(r.get("reference_code", "")).lstrip("0") == str(reference_code).lstrip("0")
                for r in refs
            ):
                continue
            found.append(document)
        return found

    def update_document_status(self, document_id: str | int, document_status: int | str) -> dict:
        """``PUT /documents/{id}`` with ``{"document_status": "1"|"2"}`` (seed ``004_…``).

        ``1`` issues a Chile draft, ``2`` cancels a Mexico invoice; Koywe answers 400 ``Cannot update a
        signed document`` otherwise (:class:`KoyweRejectedError`).
        """
        return self.call("PUT", f"documents/{document_id}", json={"document_status": str(document_status)})

    # --- webhooks ------------------------------------------------------------------------------
    def create_webhook_subscription(
        self,
        account_id: str | int,
        callback_url: str,
        callback_username: str,
        callback_password: str,
        event_id: str = "DOCUMENT.STATUSUPDATE",
    ) -> dict:
        """``POST /webhook_subscriptions`` (API_NOTES "Documents"): Koywe will POST ``event_id`` events for
        ``account_id`` to ``callback_url`` with HTTP basic ``callback_username``/``callback_password``.

        Returns Koywe's answer without any ``callback_password`` it echoes. Raises as :meth:`call`.
        """
        body = {
            "account_id": account_id,
            "callback_url": callback_url,
            "callback_username": callback_username,
            "callback_password": callback_password,
            "event_id": event_id,
        }
        answer = self.call("POST", "webhook_subscriptions", json=body)
        if not isinstance(answer, dict):
            return {}
        return {k: v for k, v in answer.items() if k != "callback_password"}

    # --- async (triggers) ----------------------------------------------------------------------
    async def acall(self, method: str, endpoint: str, *, params: dict | None = None) -> Any:
        """Async twin of :meth:`call` for triggers: ``httpx.AsyncClient``, same pacing and token cache
        (the connection and the token are read in a worker thread, so the event loop never blocks and
        no login happens while the cached token is valid); one token refresh on 401.
        Raises the exceptions of :meth:`call` (a GET never raises :class:`KoyweOutcomeUnknownError`).
        """
        import asyncio

        import httpx
        from asgiref.sync import sync_to_async

        def prepare(failed: str | None) -> tuple[str, str]:
            if not getattr(self, "base_url", None):
                self._set_base_url(self.connection)
            token = self._token(min_seconds_left=TOKEN_REFRESH_MARGIN_SECONDS, failed=failed)
            return self.base_url, token.access_token

        base_url, token = await sync_to_async(prepare, thread_sensitive=False)(None)
        headers = {"User-Agent": f"airflow-provider-koywe/{__version__}", "Accept": "application/json"}
        timeout = httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(timeout=timeout, headers=headers, trust_env=False) as client:
            for attempt in range(2):
                await asyncio.to_thread(self.limiter.acquire)
                self.calls += 1
                try:
                    response = await client.request(
                        method,
                        f"{base_url}/{endpoint.lstrip('/')}",
                        params=params,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError as err:
                    raise KoyweTransientError(f"{method} /{endpoint}: {type(err).__name__} ({err})") from err
                if response.status_code == 401 and attempt == 0:
                    self.log.warning(
                        "Koywe answered 401 to %s /%s; refreshing the token once", method, endpoint
                    )
                    _, token = await sync_to_async(prepare, thread_sensitive=False)(token)
                    continue
                break
        return self._classify(_AsyncAnswer(response), method, endpoint)

    # --- accounts ------------------------------------------------------------------------------
    def create_account(self, payload: dict) -> str:
        """``POST /accounts`` (seed ``003_…``); returns the new ``account_id`` as a string."""
        body = self.call("POST", "accounts", json=payload)
        if not isinstance(body, dict) or body.get("account_id") in (None, ""):
            raise KoyweOutcomeUnknownError("POST /accounts answered without an account_id")
        return str(body["account_id"])

    def get_account(self, account_id: str | int) -> dict:
        """``GET /accounts/{account_id}``; raises :class:`KoyweNotFoundError` when absent."""
        return self.call("GET", f"accounts/{account_id}")

    # --- Airflow UI ----------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Authenticate (one ``POST /auth``) and read one page of documents."""
        try:
            token = self._authenticate()
            self.token_store.save(token)
            self._remember(self._token_key, token)
            body = self.call("GET", "documents", params={"per_page": 1, "page": 1})
        except KoyweError as err:
            return False, str(err)
        return True, f"Authenticated; {len(documents_in_page(body))} document(s) readable on the first page"


class _AsyncAnswer:
    """An ``httpx.Response`` seen through the ``requests.Response`` attributes ``_classify`` reads."""

    def __init__(self, response: Any) -> None:
        self.status_code = response.status_code
        self.content = response.content
        self.headers = response.headers
        self.reason = response.reason_phrase
        self._response = response

    def json(self) -> Any:
        return self._response.json()


def _refused(err: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was ever made (refused, DNS failure): the request was never sent."""
    text = repr(err.args[0]) if err.args else ""
    return any(s in text for s in ("NewConnectionError", "Connection refused", "NameResolutionError"))


__all__ = [
    "INTERNAL_REFERENCE_CODE",
    "KoyweHook",
    "documents_in_page",
    "merge_internal_reference",
    "next_page",
    "parse_retry_after",
]
