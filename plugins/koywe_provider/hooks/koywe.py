"""``KoyweHook``: the Koywe Billing API (https://api-billing.koywe.com/V1) on top of ``HttpHook``.

The hook owns everything that talks to Koywe: the base URL and credentials of the ``koywe``
connection, the bearer token (cached in-process and in an Airflow Variable for its 60-minute life),
client-side pacing, pagination of ``GET /documents``, and the classification of every answer into a
result or one specific exception (:mod:`koywe_provider.exceptions`). Sources: Koywe's OpenAPI spec,
``API_NOTES.md`` and seeds ``000_…`` (token reuse, rate limits, references), ``004_…`` (status updates).
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook
from requests import Response, Session
from urllib3.exceptions import ConnectTimeoutError

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
from koywe_provider.hooks.rate_budget import (
    RateBudget,
    RateBudgetTimeout,
    budget_for,
    budget_key,
    margin_from_config,
    rate_limit_max_wait_from_config,
    rate_limit_wait_seconds,
    send_lead_from_config,
)
from koywe_provider.hooks.token_store import (
    CachedToken,
    SharedLockVariableTokenStore,
    TokenStore,
    token_store_for,
    variable_key,
)
from koywe_provider.models.answers import (
    LIST_PAGE_SIZE,
    AccountAnswer,
    AuthAnswer,
    DocumentAnswer,
    DocumentPage,
    ErrorBody,
)
from koywe_provider.models.references import INTERNAL_REFERENCE_CODE, merge_internal_reference
from koywe_provider.models.statuses import ResultStatus

DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
TOKEN_REFRESH_MARGIN_SECONDS = 300.0
#: A request whose token went stale this many times in a row is sent with the last one (and a warning).
MAX_STALE_TOKENS = 10

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


def _matches_reference(document: DocumentAnswer, reference_number: str, account_id: str | None) -> bool:
    """Whether a listed document really is the one asked for: of ``account_id`` (when both say) and,
    when Koywe returns the document's references (full documents do, flat list items do not), carrying
    the internal reference ``reference_number``."""
    owner = document.owner_account_id
    if account_id is not None and owner is not None and owner != str(account_id):
        return False
    if document.references:
        return reference_number in document.internal_references
    return True


class KoyweHook(HttpHook):
    """Calls the Koywe Billing API with a cached bearer token, pacing and error classification.

    Connection (type ``koywe``): host = base URL (default ``https://api-billing.koywe.com/V1``),
    login/password = API user, extras ``client_id``, ``client_secret`` (masked),
    ``requests_per_second`` (default 5) and ``timeout`` (seconds, default 30).

    :param koywe_conn_id: the connection id (default ``koywe_default``).
    :param token_store: where the token is shared between processes; default the Airflow Variable
        ``koywe_token__<conn_id>`` (inject :class:`~koywe_provider.hooks.token_store.MemoryTokenStore`
        outside a running task).
    :param shared_state_url: where the deployment-wide rate budget lives (``sqlite:///…``,
        ``postgresql://…``, ``redis://…``, ``memory://`` for scripts and unit tests). Default: Airflow
        config ``[koywe] shared_state_url``, else the ledger's database (connection ``koywe_ledger``,
        else ``$AIRFLOW_HOME/koywe_ledger.db``), so every task, worker and host that shares the ledger
        shares one budget of the connection's ``requests_per_second`` per Koywe API user.

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
        shared_state_url: str | None = None,
        send_lead_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="GET", http_conn_id=koywe_conn_id, **kwargs)
        if send_lead_seconds is not None:  # else [koywe] send_lead_seconds, read on the first request
            self.__dict__["send_lead_seconds"] = max(0.0, float(send_lead_seconds))
        self.koywe_conn_id = koywe_conn_id
        self._token_store = token_store
        self._shared_state_url = shared_state_url
        self._consecutive_429s = 0
        self._reserved = 0  # budget tokens taken ahead by reserve_request() for the next requests
        self._send_at: float | None = None  # monotonic: when the reserved request is due to leave
        self._lead = 0.0  # seconds between the reserved token's grant and its request leaving
        self._reserve_deadline: float | None = None  # monotonic: the reserved request's latest start
        self._session: Session | None = None
        self.calls = 0  # HTTP requests this hook sent (auth included); cheap observability for reports

    def clone(self) -> KoyweHook:
        """A hook of the same connection, token store and shared state with its own HTTP session (one per
        thread: ``requests`` sessions are not shared between threads). Token and rate budget are shared."""
        twin = type(self)(
            self.koywe_conn_id, token_store=self._token_store, shared_state_url=self._shared_state_url
        )
        for name in (
            "connection",
            "_credentials",
            "requests_per_second",
            "timeout",
            "shared_state_url",
            "token_store",
            "send_lead_seconds",
        ):
            if name in self.__dict__:  # already resolved here: no second read of the connection
                twin.__dict__[name] = self.__dict__[name]
        return twin

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
    def token_store(self) -> TokenStore:
        """Where the token is shared: the injected store, else the Airflow Variable
        ``koywe_token__<conn_id>`` bound to this connection's base URL and API user (a token cached for
        another one is never used), renewed under the shared store's lock (one login per token life
        for the whole deployment)."""
        if self._token_store is not None:
            return self._token_store
        base_url, api_user = self._owner()
        lock_store = token_store_for(self.shared_state_url, base_url=base_url, api_user=api_user)
        return SharedLockVariableTokenStore(
            variable_key(self.koywe_conn_id), lock_store=lock_store, base_url=base_url, api_user=api_user
        )

    def _owner(self) -> tuple[str, str]:
        if not getattr(self, "base_url", None):
            self._set_base_url(self.connection)
        return self.base_url, self._credentials["username"]

    @cached_property
    def shared_state_url(self) -> str:
        """The store of the rate budget (see the class docstring); read at run time, never at parse time."""
        if self._shared_state_url:
            return self._shared_state_url
        from airflow.sdk import conf

        configured = conf.get("koywe", "shared_state_url", fallback="")
        if configured:
            return configured
        from koywe_provider.hooks.ledger import KoyweLedgerHook

        return KoyweLedgerHook(conf.get("koywe", "ledger_conn_id", fallback="koywe_ledger")).get_url()

    @cached_property
    def budget(self) -> RateBudget:
        """The deployment-wide budget of this connection's API user (``requests_per_second``)."""
        base_url, api_user = self._owner()
        return budget_for(
            self.shared_state_url,
            budget_key(base_url, api_user),
            self.requests_per_second,
            margin_seconds=margin_from_config(),
        )

    @cached_property
    def send_lead_seconds(self) -> float:
        """Seconds between a request's grant and its leaving, the same for every call of every process
        (``[koywe] send_lead_seconds``, default 0.05): what runs in between (a fenced send's UPDATE, a
        thread hand-off) then does not move a request on the wire relative to the others."""
        return send_lead_from_config()

    def reserve_request(self, *, timeout: float | None = None, lead: float | None = None) -> float:
        """Take one token of the shared budget now, for the next request this hook sends (which then
        takes none). A fenced send takes its token first, then checks its lease, then sends, so no
        budget wait can fall between the lease check and the POST. Every other call reserves its
        token the same way just before sending.

        The request then leaves ``lead`` seconds after the grant (it waits if it comes earlier), so
        that what happens in between does not move it on the wire: fenced and unfenced calls keep the
        budget's spacing. A request that comes later than ``lead`` + the budget's margin (this thread
        did not run for a while) does not use the stale token, which could now share a second with the
        grants that came after it: it takes a fresh one, within what is left of ``timeout``.

        :param timeout: seconds at most to wait for the token (and for a fresh one).
        :param lead: seconds between the grant and the request leaving; default
            :attr:`send_lead_seconds` (a different lead for some calls only skews them against the rest).
        :return: seconds waited.
        :raises RateBudgetTimeout: no token within ``timeout`` (``retry_after``: when one may come).
        """
        started = time.monotonic()
        granted_at = self.budget.acquire_at(timeout=timeout)
        self._reserved += 1
        self._lead = self.send_lead_seconds if lead is None else max(0.0, lead)
        self._send_at = granted_at + self._lead
        self._reserve_deadline = None if timeout is None else started + timeout
        return time.monotonic() - started

    def _use_reservation(self, what: str) -> None:
        """Spend the reserved token: wait for its send time, or replace it when it went stale.

        :raises KoyweTransientError: the token went stale and no fresh one came within the
            reservation's timeout (nothing was sent).
        """
        self._reserved -= 1
        send_at, self._send_at = self._send_at, None
        if send_at is None:
            return
        for stale in range(MAX_STALE_TOKENS + 1):
            early = send_at - time.monotonic()
            if early > 0:
                time.sleep(early)
            late = time.monotonic() - send_at
            if late <= self.budget.margin_seconds:
                return
            if stale == MAX_STALE_TOKENS:
                self.log.warning(
                    "%s: %d rate tokens in a row went stale before this thread could send (an "
                    "overloaded machine); sending with the last one",
                    what,
                    stale + 1,
                )
                return
            deadline = self._reserve_deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.log.debug("%s: the reserved token is %.0f ms stale; taking a fresh one", what, late * 1000)
            try:
                send_at = self.budget.acquire_at(timeout=timeout) + self._lead
            except RateBudgetTimeout as err:
                raise KoyweTransientError(
                    f"{what}: not sent (the shared Koywe rate budget had no fresh token in time: {err})"
                ) from err

    async def _await_send_slot(self) -> None:
        """:meth:`reserve_request` then :meth:`_use_reservation` for asyncio (the triggerer): a token,
        then its send time (grant + :attr:`send_lead_seconds`), a fresh token when that went stale."""
        import asyncio

        lead, margin = self.send_lead_seconds, self.budget.margin_seconds
        for _ in range(MAX_STALE_TOKENS + 1):
            send_at = await self.budget.aacquire_at() + lead
            early = send_at - time.monotonic()
            if early > 0:
                await asyncio.sleep(early)
            if time.monotonic() - send_at <= margin:
                return
        self.log.warning(
            "%d rate tokens in a row went stale in the event loop; sending", MAX_STALE_TOKENS + 1
        )

    def release_reservation(self) -> None:
        """Give up a token taken by :meth:`reserve_request` that no request used (it is not refunded to
        the budget: the budget only ever errs on the side of fewer requests)."""
        self._reserved = max(0, self._reserved - 1)
        self._send_at = None

    def pause_for_rate_limit(self, err: KoyweRateLimitedError, *, rng: Any = None) -> float:
        """After a 429: pause the shared budget for every process, ``max(30 s, Retry-After)`` doubling per
        consecutive 429 with jitter, capped by ``[koywe] rate_limit_max_wait_seconds`` (default 900 s;
        seed ``000_…``). Returns the wait in seconds."""
        import random

        from airflow.sdk import conf

        self._consecutive_429s += 1
        wait = rate_limit_wait_seconds(
            err.retry_after,
            self._consecutive_429s,
            floor=conf.getfloat("koywe", "rate_limit_min_wait_seconds", fallback=30.0),
            cap=rate_limit_max_wait_from_config(),
            rng=rng or random.Random(),
        )
        self.budget.pause(wait)
        self.log.warning(
            "Koywe answered 429 (%d in a row); the shared rate budget pauses %.0f s for every task",
            self._consecutive_429s,
            wait,
        )
        return wait

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

    def run_and_check(self, session: Session, prepped_request: Any, extra_options: dict[Any, Any]) -> Any:
        """:class:`HttpHook`'s send, with the reserved rate token spent at the last moment: the request
        is already prepared (body serialised), so only the send itself falls between the token's
        send time (or the replacement of a stale token) and the wire."""
        if self._reserved:
            self._use_reservation(f"{prepped_request.method} {prepped_request.path_url.split('?')[0]}")
        self.calls += 1
        return super().run_and_check(session, prepped_request, extra_options)

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
            if cached and cached.usable(rejected=failed, min_seconds_left=min_seconds_left):
                return cached
            stored = self.token_store.load()
            if stored and stored.usable(rejected=failed, min_seconds_left=min_seconds_left):
                self._remember(key, stored)
                return stored
            # Single flight: under the store's lock, the first to come logs in; the others find its token.
            token = self.token_store.renew(
                self._authenticate, rejected=failed, min_seconds_left=min_seconds_left
            )
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
                f"(HTTP {response.status_code}: {ErrorBody.of(self._json(response)).text})",
                status_code=response.status_code,
            )
        data = self._classify(response, "POST", "auth")
        try:
            answer = AuthAnswer.model_validate(data)
        except ValueError:
            raise KoyweAuthError(
                "POST /auth answered without an access_token", status_code=response.status_code
            ) from None
        self.log.info("Authenticated with Koywe as connection %s", self.koywe_conn_id)
        return CachedToken.from_auth_answer(answer)

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
        if not self._reserved:
            self.reserve_request()
        extra_options = {"check_response": False, "timeout": (CONNECT_TIMEOUT_SECONDS, self.timeout)}
        try:
            if method == "GET":
                return self.run(endpoint, data=params, headers=headers, extra_options=extra_options)
            return self.run(endpoint, headers=headers, extra_options=extra_options, json=json, params=params)
        except requests.exceptions.ConnectTimeout as err:
            raise KoyweTransientError(f"{method} /{endpoint}: could not connect to Koywe ({err})") from err
        except requests.exceptions.ConnectionError as err:
            if _never_connected(err) or method == "GET":
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
            self._consecutive_429s = 0
            if body is None and response.content:
                if method == "GET":
                    raise KoyweTransientError(f"{what}: unreadable {status} answer", status_code=status)
                raise KoyweOutcomeUnknownError(f"{what}: unreadable {status} answer", status_code=status)
            return body
        message = ErrorBody.of(body).text or response.reason or ""
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
    ) -> DocumentAnswer:
        """``POST /documents``: issue one document; returns Koywe's ``Document`` typed.

        :param payload: the Koywe document (``header``, ``details``, ``references``, ``totals``, ``options``).
        :param reference: the Koywe reference (internal transaction id of this generation,
            :func:`~koywe_provider.models.references.koywe_reference`), merged into ``references[]``
            with code 5 in place of any other internal reference.
        :return: the document, with ``result.status`` 0 (OK) or 2 (``NOT_SENT``: generated but not sent
            to the tax bureau yet; it exists, follow it, never issue it again).
        :raises KoyweRejectedError: HTTP 400, or ``result.status`` 1 or any other value
            (``response`` carries the typed document when Koywe returned one).
        :raises KoyweOutcomeUnknownError: a 2xx without ``document_id`` (e.g. ``200 {"error": …}``):
            Koywe may or may not hold the document; look it up before sending again.
        """
        body = merge_internal_reference(payload, reference) if reference else payload
        params = {"generate_stamp": 1} if generate_stamp else None
        answer = self.call("POST", "documents", json=body, params=params)
        if not isinstance(answer, dict):
            raise KoyweOutcomeUnknownError("POST /documents: the answer is not a document")
        document = DocumentAnswer.from_any(answer)
        status = document.result_status
        if status not in (None, ResultStatus.OK, ResultStatus.NOT_SENT):
            message = document.result.error_message or ErrorBody.of(answer).text
            raise KoyweRejectedError(
                f"POST /documents: Koywe answered result.status {int(status)}: {message}",
                status_code=200,
                error_message=message,
                result_status=int(status),
                response=document,
            )
        if document.document_id is None:
            message = ErrorBody.of(answer).text or "no document_id"
            raise KoyweOutcomeUnknownError(
                f"POST /documents: Koywe answered 2xx without a document_id ({message}); the document may "
                f"or may not exist"
            )
        return document

    def get_document(self, document_id: str | int) -> DocumentAnswer:
        """``GET /documents/{document_id}``; raises :class:`KoyweNotFoundError` when absent."""
        return self._document_answer(self.call("GET", f"documents/{document_id}"), f"documents/{document_id}")

    async def aget_document(self, document_id: str | int) -> DocumentAnswer:
        """Async twin of :meth:`get_document` (triggers)."""
        body = await self.acall("GET", f"documents/{document_id}")
        return self._document_answer(body, f"documents/{document_id}")

    @staticmethod
    def _document_answer(body: Any, endpoint: str) -> DocumentAnswer:
        if not isinstance(body, dict):
            raise KoyweTransientError(f"GET /{endpoint}: the answer is not a document")
        return DocumentAnswer.from_any(body)

    @staticmethod
    def _list_params(filters: dict[str, Any]) -> tuple[dict[str, Any], int]:
        params = {k: v for k, v in filters.items() if v is not None}
        params.setdefault("per_page", LIST_PAGE_SIZE)
        return params, int(params.pop("page", 1))

    def list_documents(self, **filters: Any) -> Iterator[DocumentAnswer]:
        """``GET /documents`` with ``filters``, every page (100 per page unless ``per_page`` is given).

        Filters (Koywe names): ``issue_date_from``, ``issue_date_to``, ``document_type_id``,
        ``document_number``, ``receiver_tax_id_code``, ``taxbureau_sending_status``,
        ``taxbureau_validation_status``, ``reference_code``, ``reference_number``, ``order_by``.
        Yields typed documents lazily, one request per page, whatever the envelope
        (:class:`~koywe_provider.models.answers.DocumentPage`).
        """
        params, page = self._list_params(filters)
        next_page: int | None = page
        while next_page is not None:
            parsed = self._page(
                self.call("GET", "documents", params={**params, "page": next_page}), next_page
            )
            yield from parsed.documents
            next_page = parsed.next_page

    async def alist_documents(self, **filters: Any) -> AsyncIterator[DocumentAnswer]:
        """Async twin of :meth:`list_documents` (the deferrable sensor's trigger)."""
        params, page = self._list_params(filters)
        next_page: int | None = page
        while next_page is not None:
            body = await self.acall("GET", "documents", params={**params, "page": next_page})
            parsed = self._page(body, next_page)
            for document in parsed.documents:
                yield document
            next_page = parsed.next_page

    @staticmethod
    def _page(body: Any, page: int) -> DocumentPage:
        try:
            return DocumentPage.parse(body, page)
        except TypeError as err:
            raise KoyweTransientError(f"GET /documents: {err}") from err

    def find_documents_by_reference(
        self,
        reference_number: str,
        reference_code: int = INTERNAL_REFERENCE_CODE,
        *,
        account_id: str | int | None = None,
    ) -> list[DocumentAnswer]:
        """Documents carrying ``references[]`` entry (``reference_code``, ``reference_number``).

        ``GET /documents?reference_code=…&reference_number=…`` (seed ``000_…``), every page, kept only
        when the document is of ``account_id`` (when given) and, when Koywe returns the document's
        references, when one of them really matches. More than one result is a duplicate. Whether a
        match has OUR content is the caller's question (:class:`~koywe_provider.models.answers.DocumentContent`).
        """
        account = None if account_id is None else str(account_id)
        return [
            document
            for document in self.list_documents(
                reference_code=reference_code, reference_number=reference_number
            )
            if _matches_reference(document, str(reference_number), account)
        ]

    def get_documents(
        self,
        document_ids: Iterable[str | int],
        *,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
    ) -> dict[str, DocumentAnswer]:
        """The documents ``document_ids`` by id (absent ones are missing from the result).

        With an issue-date window (``YYYY-MM-DD``) one ``GET /documents`` per 100 documents of the window
        (seeds ``001_…``/``002_…``: batch reads, never one call per document); without one, one
        ``GET /documents/{id}`` each (meant for a handful). Raises as :meth:`call`.
        """
        wanted = [str(d) for d in dict.fromkeys(str(i) for i in document_ids)]
        if not (issue_date_from or issue_date_to):
            return {doc_id: self.get_document(doc_id) for doc_id in wanted}
        window = {"issue_date_from": issue_date_from, "issue_date_to": issue_date_to}
        found = {}
        for document in self.list_documents(**window):
            if document.document_id in wanted:
                found[document.document_id] = document
        return found

    async def aget_documents(
        self,
        document_ids: Iterable[str | int],
        *,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
    ) -> dict[str, DocumentAnswer]:
        """Async twin of :meth:`get_documents` (the deferrable sensor's trigger)."""
        wanted = [str(d) for d in dict.fromkeys(str(i) for i in document_ids)]
        if not (issue_date_from or issue_date_to):
            return {doc_id: await self.aget_document(doc_id) for doc_id in wanted}
        found = {}
        async for document in self.alist_documents(
            issue_date_from=issue_date_from, issue_date_to=issue_date_to
        ):
            if document.document_id in wanted:
                found[document.document_id] = document
        return found

    def update_document_status(self, document_id: str | int, document_status: int | str) -> DocumentAnswer:
        """``PUT /documents/{id}`` with ``{"document_status": "1"|"2"}`` (seed ``004_…``).

        ``1`` issues a Chile draft, ``2`` cancels a Mexico invoice; Koywe answers 400 ``Cannot update a
        signed document`` otherwise (:class:`KoyweRejectedError`). Returns the document AS KOYWE ANSWERED
        (a Mexico cancellation may still be waiting for the receiver's acceptance); when the answer is
        not a document, the document is read back with ``GET /documents/{id}``.
        """
        endpoint = f"documents/{document_id}"
        answer = self.call("PUT", endpoint, json={"document_status": str(document_status)})
        if isinstance(answer, dict) and (answer.get("document_id") is not None or "header" in answer):
            document = DocumentAnswer.from_any(answer)
            if document.document_status is not None:
                return document
        return self.get_document(document_id)

    def delete_document(self, document_id: str | int) -> None:
        """``DELETE /documents/{id}``: deletes a draft (Koywe refuses any other document with a 400,
        :class:`KoyweRejectedError`)."""
        self.call("DELETE", f"documents/{document_id}")

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

        import httpx
        from asgiref.sync import sync_to_async

        def prepare(failed: str | None) -> tuple[str, str]:
            if not getattr(self, "base_url", None):
                self._set_base_url(self.connection)
            token = self._token(min_seconds_left=TOKEN_REFRESH_MARGIN_SECONDS, failed=failed)
            self.budget  # opened here, off the event loop  # noqa: B018
            self.send_lead_seconds  # noqa: B018
            return self.base_url, token.access_token

        base_url, token = await sync_to_async(prepare, thread_sensitive=False)(None)
        headers = {"User-Agent": f"airflow-provider-koywe/{__version__}", "Accept": "application/json"}
        timeout = httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(timeout=timeout, headers=headers, trust_env=False) as client:
            for attempt in range(2):
                await self._await_send_slot()
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
        """``POST /accounts`` (seed ``003_…``); returns the new ``account_id`` as a string.

        :raises KoyweOutcomeUnknownError: a 2xx without ``account_id`` (the account may exist).
        """
        body = self.call("POST", "accounts", json=payload)
        answer = AccountAnswer.model_validate(body) if isinstance(body, dict) else AccountAnswer()
        if answer.account_id is None:
            raise KoyweOutcomeUnknownError("POST /accounts answered without an account_id")
        return answer.account_id

    def get_account(self, account_id: str | int) -> AccountAnswer:
        """``GET /accounts/{account_id}`` typed (every field kept); raises :class:`KoyweNotFoundError`."""
        body = self.call("GET", f"accounts/{account_id}")
        if not isinstance(body, dict):
            raise KoyweTransientError(f"GET /accounts/{account_id}: the answer is not an account")
        return AccountAnswer.model_validate(body)

    # --- Airflow UI ----------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Authenticate (one ``POST /auth``) and read one page of documents.

        Works outside a task (the UI's "Test" button, ``airflow connections test``): the fresh token is
        used for this one check and is not written to the Variable store, which only a task can write.
        """
        try:
            token = self._authenticate()
            response = self._send(
                "GET", "documents", params={"per_page": 1, "page": 1}, token=token.access_token
            )
            page = self._page(self._classify(response, "GET", "documents"), 1)
        except KoyweError as err:
            return False, str(err)
        return True, f"Authenticated; {len(page.documents)} document(s) readable on the first page"


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


def _never_connected(err: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was ever made (connect timeout, refused, DNS failure): the request was
    never sent, so even a POST is safe to send again."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    if isinstance(reason, ConnectTimeoutError):
        return True
    text = repr(err.args[0]) if err.args else ""
    return any(s in text for s in ("NewConnectionError", "Connection refused", "NameResolutionError"))


__all__ = [
    "KoyweHook",
    "parse_retry_after",
]
