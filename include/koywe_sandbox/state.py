"""In-memory state of the Koywe sandbox: configuration, tokens, documents, accounts, stats, faults.

All methods are synchronous and the server runs on a single asyncio event loop, so each method call is
atomic with respect to concurrent requests (no awaits inside; handlers await only before or after).

Time: every time-dependent rule reads ``SandboxState.clock`` (a :class:`~koywe_sandbox.clock.SandboxClock`
over ``SandboxConfig.clock``, monotonic seconds), so tests inject a clock or advance it instead of sleeping.

Documents carry two statuses (API_NOTES, "Decisions added after the first release"): the top-level
``document_status`` is the document's life (0 draft, Chile only; 1 issued; 2 cancelled, Mexico only) and is
what ``PUT /documents/{id}`` changes; ``header.document_status`` is the counterparty's view (0 draft,
1 issued, 2 sent to the counterparty, 3 accepted by it), changed only by ``POST /_sandbox/counterparty``.
A Mexico cancellation waiting for the receiver (``cancel_pending_acceptance``) also carries the top-level
``cancellation_status`` (``"pending_acceptance"``, then ``"cancelled"`` or ``"refused"``): the sandbox's
stand-in for SAT's "pending the receiver's acceptance", not a documented Koywe field.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import documents as docs
from .accounts import public_view
from .clock import SandboxClock, WindowPeak
from .faults import SCENARIO_KEYS, FaultSettings, TokenBucket

#: ``GET /_sandbox/stats`` counters (all back to 0 on reset, but ``in_flight``). Of the later ones:
#: ``documents_planted`` (``POST /_sandbox/documents``; never in ``documents_created``),
#: ``no_document_id_responses`` (2xx answers without ``document_id``; nothing created),
#: ``result_status_2_documents`` (created with ``result.status`` 2; also in ``documents_created``),
#: ``cancellations_completed`` (``POST /_sandbox/cancellations``), ``counterparty_updates``
#: (``POST /_sandbox/counterparty``), ``max_requests_in_any_second`` (largest number of ``/V1``
#: arrivals, any endpoint or outcome, auth included, within a window ``[t, t + 1 s)`` of the sandbox clock),
#: ``document_reads`` (``GET /V1/documents/{id}``: one document each), ``notes_created`` (credit and debit
#: notes created, also in ``documents_created``), ``notes_refused`` (notes refused against their original)
#: and ``documents_deleted`` (drafts, ``DELETE /V1/documents/{id}``).
STAT_KEYS = (
    "auth_calls",
    "documents_created",
    "lookups",
    "list_calls",
    "rate_limited",
    "max_in_flight",
    "in_flight",
    "duplicate_references",
    "requests_total",
    "injected_5xx",
    "lost_responses",
    "slow_responses",
    "revocations",
    "accounts_created",
    "webhook_subscriptions",
    "validations_completed",
    "callbacks_sent",
    "callbacks_failed",
    "documents_planted",
    "no_document_id_responses",
    "result_status_2_documents",
    "cancellations_completed",
    "counterparty_updates",
    "max_requests_in_any_second",
    "document_reads",
    "notes_created",
    "notes_refused",
    "documents_deleted",
)
#: ``/V1`` arrivals kept for ``GET /_sandbox/arrivals`` (the oldest are dropped beyond it).
MAX_ARRIVAL_LOG = 100_000
#: Default mix of final validation outcomes (``taxbureau_validation_status``: probability).
DEFAULT_VALIDATION_OUTCOMES = {"3": 1.0}
#: ``taxbureau_validation_comments`` the sandbox writes for each final validation status.
VALIDATION_COMMENTS = {
    2: "Envio rechazado: error de firma en el sobre (sandbox)",
    3: "",
    4: "Aceptado con reparos: giro del receptor no coincide (sandbox)",
    5: "Rechazado: RUT receptor no autorizado (sandbox)",
}
SECRET_ACCOUNT_FIELDS = ("admin_password",)
#: Header fields the sandbox assigns on creation that a planted document may set itself.
PLANTED_HEADER_KEYS = (
    "document_number",
    "document_type_taxbureau",
    "document_status",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
    "taxbureau_validation_comments",
)
CANCELLATION_OUTCOMES = {"accepted": "cancelled", "refused": "refused"}
COUNTERPARTY_STATUSES = (2, 3)
FIRST_DOCUMENT_ID = 1000
FIRST_ACCOUNT_ID = 600


@dataclass
class SandboxConfig:
    """Server configuration (command-line options). Times in seconds unless named ``*_ms``."""

    host: str = "127.0.0.1"
    port: int = 8099
    token_ttl: float = 3600.0
    rate_limit: float = 0.0
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"  # noqa: S105 - documented sandbox default, not a secret
    username: str = "sandbox-user"
    password: str = "sandbox-password"  # noqa: S105 - documented sandbox default, not a secret
    seed: int | None = None
    #: Start-up value of the ``list_shape`` fault key (``"hal"``, ``"flat"`` or ``"data"``).
    list_envelope: str = "hal"
    #: Seconds (of :attr:`SandboxState.clock`) after which the validation of a document in process (Chile,
    #: or created with ``result.status`` 2) completes by itself and subscribed callbacks are sent;
    #: None = only when ``POST /_sandbox/validate`` asks.
    validation_delay: float | None = None
    #: ``{"3": 0.8, "4": 0.1, "5": 0.1}``: probability of each final validation status.
    validation_outcomes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_VALIDATION_OUTCOMES))
    #: Start-up ``reject_references``: internal references (``references[]`` code 5) the tax bureau rejects.
    reject_references: list[str] = field(default_factory=list)
    #: Start-up ``cancel_pending_acceptance``: Mexico cancellations wait for the receiver's acceptance.
    cancel_pending_acceptance: bool = False
    #: Base clock, monotonic seconds (inject a fake in unit tests).
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    #: Freeze the base clock: time moves only with ``POST /_sandbox/clock`` (``SandboxClock.advance``).
    manual_clock: bool = False
    faults: FaultSettings = field(default_factory=FaultSettings)


@dataclass
class Admission:
    """A ``/V1`` request refused before processing: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class SandboxState:
    """Everything the sandbox remembers; ``reset()`` clears data and stats but keeps the configuration
    (except the document-outcome settings, which go back to their start-up values)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.faults.list_shape = config.list_envelope
        self.clock = SandboxClock(config.clock, manual=config.manual_clock)
        self._scenario_start = {key: getattr(self.faults, key) for key in SCENARIO_KEYS}
        self._validation_start = (list(config.reject_references), config.cancel_pending_acceptance)
        self.reset()

    # ----------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Clear documents, accounts, tokens, subscriptions and stats; re-seed the fault generator; refill the
        bucket; restore the start-up document-outcome settings (:data:`~koywe_sandbox.faults.SCENARIO_KEYS`,
        ``reject_references``, ``cancel_pending_acceptance``). Keeps the clock's offset (time never goes
        back), the transport faults, ``rate_limit``, ``seed`` and the validation delay and outcomes."""
        in_flight = getattr(self, "stats", {}).get("in_flight", 0)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.stats["in_flight"] = self.stats["max_in_flight"] = in_flight
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.documents: dict[int, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.sequences: dict[tuple[str, int], int] = {}
        self.reference_counts: dict[tuple[str, str], int] = {}
        self.next_document_id = FIRST_DOCUMENT_ID
        self.next_account_id = FIRST_ACCOUNT_ID
        self.burst_counter = 0
        self.revoke_fired = False
        self.subscriptions: list[dict[str, Any]] = []
        self.validating: set[int] = set()  # documents whose validation is in process
        self.validation_due: dict[int, float] = {}  # document_id -> clock time its validation completes
        self.forced_outcomes: dict[int, int] = {}  # document_id -> final status (reject_references)
        self.arrivals = WindowPeak(1.0)  # /V1 arrival times, for max_requests_in_any_second
        self.arrival_log: deque[tuple[float, str, str]] = deque(maxlen=MAX_ARRIVAL_LOG)
        self.arrivals_since = self.clock()  # arrival times are given from here (the last reset)
        self.rng = random.Random(self.config.seed)
        self.bucket = TokenBucket(self.config.rate_limit, self.clock)
        for key, value in self._scenario_start.items():
            setattr(self.faults, key, value)
        self.config.reject_references = list(self._validation_start[0])
        self.config.cancel_pending_acceptance = self._validation_start[1]

    def set_faults(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply run-time fault settings (plus ``rate_limit`` and ``seed``); returns the current ones."""
        values = dict(values)
        rate_limit = values.pop("rate_limit", None)
        reseed = "seed" in values
        seed = values.pop("seed", None)
        pending = values.pop("cancel_pending_acceptance", None)
        if pending is not None and not isinstance(pending, bool):
            raise ValueError("cancel_pending_acceptance must be true or false")
        if rate_limit is not None:
            rate = float(rate_limit)
            if rate < 0:
                raise ValueError("rate_limit must be >= 0")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        self.faults.update(values)  # validates everything before changing anything
        if pending is not None:
            self.config.cancel_pending_acceptance = pending
        if rate_limit is not None:
            self.config.rate_limit = rate
            self.bucket = TokenBucket(rate, self.clock)
        if reseed:
            self.config.seed = seed
            self.rng = random.Random(seed)
        if "burst_429" in values:
            self.burst_counter = 0
        if "revoke_after_documents" in values:
            self.revoke_fired = False
            self._maybe_revoke_after_documents()
        if self.faults.revoke_tokens:
            self.faults.revoke_tokens = False
            self.revoke_all()
        return self.fault_view()

    def fault_view(self) -> dict[str, Any]:
        """Current faults plus ``rate_limit``, ``seed`` and ``cancel_pending_acceptance``."""
        return {
            **self.faults.as_dict(),
            "rate_limit": self.config.rate_limit,
            "seed": self.config.seed,
            "cancel_pending_acceptance": self.config.cancel_pending_acceptance,
        }

    # ----------------------------------------------------------------- /V1 admission
    def enter(self, method: str = "", target: str = "") -> None:
        """A ``/V1`` request arrived (any endpoint, before admission: refused requests count too);
        ``method`` and ``target`` (path and query) are kept for :meth:`arrival_view`."""
        now = self.clock()
        self.stats["max_requests_in_any_second"] = self.arrivals.add(now)
        self.arrival_log.append((now, method, target))
        self.stats["requests_total"] += 1
        self.stats["in_flight"] += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])

    def arrival_view(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/arrivals``: every ``/V1`` arrival since the last reset (the last
        :data:`MAX_ARRIVAL_LOG`), oldest first: ``{"at": seconds since the reset (sandbox clock), "method",
        "target": path and query}``; what ``max_requests_in_any_second`` counted, endpoint by endpoint."""
        return [
            {"at": round(at - self.arrivals_since, 6), "method": method, "target": target}
            for at, method, target in self.arrival_log
        ]

    def leave(self) -> None:
        """A ``/V1`` response has been produced (or the connection dropped)."""
        self.stats["in_flight"] = max(0, self.stats["in_flight"] - 1)

    def admit(self) -> Admission | None:
        """Rate limit, burst_429 and injected 5xx, in that order; None when the request may proceed."""
        wait = self.bucket.take()
        if wait is not None:
            self.stats["rate_limited"] += 1
            return Admission(
                429, {"error": "Too many requests"}, {"Retry-After": str(TokenBucket.retry_after(wait))}
            )
        burst = self.faults.burst_429
        if burst:
            position = self.burst_counter % (burst["every"] + burst["length"])
            self.burst_counter += 1
            if position >= burst["every"]:
                self.stats["rate_limited"] += 1
                return Admission(
                    429, {"error": "Too many requests"}, {"Retry-After": str(burst["retry_after"])}
                )
        if self.faults.error_5xx_rate > 0 and self.rng.random() < self.faults.error_5xx_rate:
            self.stats["injected_5xx"] += 1
            status = self.rng.choice((500, 502, 503))
            return Admission(status, {"error": f"Injected sandbox error {status}"})
        return None

    # ----------------------------------------------------------------- auth
    def authenticate(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /auth``: returns (status, JSON body)."""
        self.stats["auth_calls"] += 1
        if not isinstance(body, dict):
            return 400, {"error": "Request body must be a JSON object"}
        for key in ("grant_type", "client_id", "client_secret", "username", "password"):
            if body.get(key) in (None, ""):
                return 400, {"error": f"{key} is required"}
        if body["grant_type"] != "password":
            return 400, {"error": "grant_type must be 'password'"}
        cfg = self.config
        expected = (cfg.client_id, cfg.client_secret, cfg.username, cfg.password)
        given = tuple(str(body[k]) for k in ("client_id", "client_secret", "username", "password"))
        if not all(
            secrets.compare_digest(a.encode(), b.encode()) for a, b in zip(given, expected, strict=True)
        ):
            return 401, {"error": "Invalid credentials"}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + cfg.token_ttl
        ttl = int(cfg.token_ttl) if float(cfg.token_ttl).is_integer() else cfg.token_ttl
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl}

    def token_valid(self, authorization: str | None) -> bool:
        """Whether an ``Authorization: Bearer <token>`` header carries a live token."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None:
            return False
        if self.clock() >= expiry:
            del self.tokens[token.strip()]
            return False
        return True

    def revoke_all(self) -> None:
        """Revoke every token issued so far (one revocation event)."""
        self.tokens.clear()
        self.stats["revocations"] += 1

    def _maybe_revoke_after_documents(self) -> None:
        limit = self.faults.revoke_after_documents
        if limit and not self.revoke_fired and self.stats["documents_created"] >= limit:
            self.revoke_fired = True
            self.revoke_all()

    # ----------------------------------------------------------------- documents
    def _roll(self, rate: float) -> bool:
        """One draw of the seeded generator against ``rate`` (no draw at all when the rate is 0)."""
        return rate > 0 and self.rng.random() < rate

    def roll_no_document_id(self) -> tuple[int, dict[str, Any]] | None:
        """Before a create: ``(status, body)`` of a 2xx without ``document_id`` (``no_document_id_rate``;
        nothing is created), or None to go on."""
        if not self._roll(self.faults.no_document_id_rate):
            return None
        self.stats["no_document_id_responses"] += 1
        if self.faults.no_document_id_body == "empty":
            return 201, {}
        return 200, {"error": "Internal processing error"}

    def create_document(self, body: dict[str, Any], stamp: bool) -> dict[str, Any]:
        """``POST /V1/documents``: store a validated body and return the Koywe ``Document`` (counted in
        ``documents_created``; may come out with ``result.status`` 2, see ``result_status_2_rate``)."""
        return self._store(body, stamp, planted=False)

    def plant_document(self, body: dict[str, Any], stamp: bool = False) -> dict[str, Any]:
        """``POST /_sandbox/documents``: store a validated body as a document created out of band.

        No fault applies and it counts only in ``documents_planted`` (not ``documents_created``,
        ``duplicate_references`` or ``revoke_after_documents``). Like a created document it gets the next
        document_id and folio, and the tax bureau treats it the same (Chile in process, others accepted,
        ``reject_references`` honoured), but the body may set what the sandbox normally assigns:
        ``header.{document_number, document_type_taxbureau, document_status, taxbureau_sending_status,
        taxbureau_validation_status, taxbureau_validation_comments}``, the top-level ``document_status``
        and ``result``. A planted document whose validation status is not 0/1 is not in process.
        """
        return self._store(body, stamp, planted=True)

    def _store(self, body: dict[str, Any], stamp: bool, planted: bool) -> dict[str, Any]:
        given = body["header"]
        header = dict(given)
        type_id = docs.as_int(header["document_type_id"])
        assert type_id is not None  # validated by documents.validate_document
        account_key = str(header["account_id"])
        country = docs.country_of(type_id, header, self.accounts)
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        draft = bool(options.get("draft_only"))
        if planted and given.get("document_number") not in (None, ""):
            folio = given["document_number"]
        else:
            seq_key = (account_key, type_id)
            self.sequences[seq_key] = self.sequences.get(seq_key, 0) + 1
            folio = docs.format_folio(type_id, country, self.sequences[seq_key], header)
        bureau = docs.taxbureau_code(type_id)
        references = body.get("references")
        rejected = not draft and bool(docs.reference_numbers(references) & set(self.config.reject_references))
        not_sent = not planted and not draft and self._roll(self.faults.result_status_2_rate)
        if not_sent:
            sending, validation = 0, 0
        elif country == docs.CHILE:
            sending, validation = 0, 1
        else:
            sending, validation = (1, 5) if rejected else (1, 3)
        document_id = self.next_document_id
        self.next_document_id += 1
        header.update(
            document_number=folio,
            document_type_taxbureau=bureau,
            document_status=0 if draft else 1,
            taxbureau_sending_status=sending,
            taxbureau_validation_status=validation,
            received_issued_flag=header.get("received_issued_flag", 1),
        )
        if validation == 5:
            header["taxbureau_validation_comments"] = VALIDATION_COMMENTS[5]
        life = 0 if draft else 1
        result = (
            {"status": 2, "error_message": docs.RESULT_2_MESSAGE}
            if not_sent
            else {"status": 0, "error_message": ""}
        )
        if planted:
            header.update({k: given[k] for k in PLANTED_HEADER_KEYS if given.get(k) not in (None, "")})
            if docs.as_int(body.get("document_status")) is not None:
                life = docs.as_int(body["document_status"])
            if isinstance(body.get("result"), dict):
                result = dict(body["result"])
        totals = body["totals"]
        document = {
            "document_id": document_id,
            "document_status": life,
            "header": header,
            "details": body["details"],
            "references": references,
            "totals": totals,
            "electronic_document": docs.electronic_document(
                document_id, bureau, header["document_number"], totals.get("total_amount"), stamp
            ),
            "result": result,
        }
        self.documents[document_id] = document
        in_process = docs.as_int(header["taxbureau_validation_status"]) in (0, 1)
        if life != 0 and in_process and (country == docs.CHILE or not_sent or planted):
            self._start_validation(document)
        if planted:
            self.stats["documents_planted"] += 1
            return document
        self.stats["documents_created"] += 1
        self.stats["notes_created"] += type_id in docs.NOTE_TYPES
        self.stats["result_status_2_documents"] += not_sent
        for number in docs.reference_numbers(references):
            key = (account_key, number)
            self.reference_counts[key] = self.reference_counts.get(key, 0) + 1
            if self.reference_counts[key] == 2:
                self.stats["duplicate_references"] += 1
        self._maybe_revoke_after_documents()
        return document

    def _start_validation(self, document: dict[str, Any]) -> None:
        """Put a document in process; its final status is forced to 5 when one of its internal references
        is in ``reject_references`` now."""
        document_id = document["document_id"]
        self.validating.add(document_id)
        if docs.reference_numbers(document.get("references")) & set(self.config.reject_references):
            self.forced_outcomes[document_id] = 5

    def roll_post_create_fault(self) -> str | None:
        """After a successful create: ``"lost"``, ``"slow"`` or None (random, from the seeded generator)."""
        if self._roll(self.faults.lost_response_rate):
            self.stats["lost_responses"] += 1
            return "lost"
        if self._roll(self.faults.slow_response_rate):
            self.stats["slow_responses"] += 1
            return "slow"
        return None

    def list_documents(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Documents matching the filters, ordered by document_id; counts a lookup or a list call."""
        self.stats["lookups" if "reference_number" in filters else "list_calls"] += 1
        return [d for _, d in sorted(self.documents.items()) if docs.matches(d, filters)]

    def forget_document(self, document_id: int) -> dict[str, Any] | None:
        """Drop a stored document as if Koywe had lost it (no validation or callback follows); returns
        it, or None when unknown. Its references stay counted in ``duplicate_references``."""
        self.validating.discard(document_id)
        self.validation_due.pop(document_id, None)
        self.forced_outcomes.pop(document_id, None)
        return self.documents.pop(document_id, None)

    def update_status(self, document: dict[str, Any], target: int) -> str:
        """``PUT /documents/{id}`` with top-level ``document_status`` ``target``; returns what happened:

        - ``"unchanged"``: already at ``target``;
        - ``"applied"``: Chile draft 0 → 1 (also ``header.document_status`` 0 → 1; the validation starts)
          or Mexico 1 → 2 (immediate cancellation);
        - ``"pending"``: Mexico 1 → 2 asked while ``cancel_pending_acceptance`` is on (or already pending):
          the document stays at 1 with ``cancellation_status: "pending_acceptance"`` until
          :meth:`complete_cancellation`;
        - ``"refused"``: anything else (Koywe's 400 ``Cannot update a signed document``).
        """
        header = document["header"]
        current = docs.as_int(document.get("document_status"))
        if current == target:
            return "unchanged"
        type_id = docs.as_int(header.get("document_type_id")) or 0
        country = docs.country_of(type_id, header, self.accounts)
        if target == 1 and current == 0 and country == docs.CHILE:
            document["document_status"] = 1
            if docs.as_int(header.get("document_status")) == 0:
                header["document_status"] = 1
            self._start_validation(document)  # an issued draft goes to the tax bureau now
            return "applied"
        if target == 2 and current == 1 and country == docs.MEXICO:
            if document.get("cancellation_status") == "pending_acceptance":
                return "pending"
            if self.config.cancel_pending_acceptance:
                document["cancellation_status"] = "pending_acceptance"
                return "pending"
            document["document_status"] = 2
            if "cancellation_status" in document:  # asked again after a refusal
                document["cancellation_status"] = "cancelled"
            return "applied"
        return "refused"

    def note_problem(self, body: dict[str, Any]) -> str | None:
        """Why a note cannot be created against its original (:func:`koywe_sandbox.documents.note_problem`),
        counted in ``notes_refused``; None for a valid note or any other document."""
        problem = docs.note_problem(body, self.documents)
        if problem is not None:
            self.stats["notes_refused"] += 1
        return problem

    def delete_document(self, document_id: int) -> str:
        """``DELETE /documents/{id}``: ``"deleted"`` (a draft: gone from every listing, its id answers 404
        from now on) or ``"refused"`` (Koywe deletes drafts only). Raises KeyError for an unknown id."""
        document = self.documents[document_id]
        if docs.as_int(document.get("document_status")) != 0:
            return "refused"
        del self.documents[document_id]
        self.validating.discard(document_id)
        self.validation_due.pop(document_id, None)
        self.stats["documents_deleted"] += 1
        return "deleted"

    def complete_cancellation(self, document_id: int, outcome: str) -> dict[str, Any]:
        """Finish a cancellation pending acceptance: ``"accepted"`` → ``document_status`` 2,
        ``cancellation_status: "cancelled"``; ``"refused"`` → stays 1, ``cancellation_status: "refused"``.
        Returns the ``DOCUMENT.STATUSUPDATE`` payload. Raises KeyError (unknown document) or ValueError."""
        if outcome not in CANCELLATION_OUTCOMES:
            raise ValueError('outcome must be "accepted" or "refused"')
        document = self.documents[document_id]
        if document.get("cancellation_status") != "pending_acceptance":
            raise ValueError(f"Document {document_id} has no cancellation pending acceptance")
        if outcome == "accepted":
            document["document_status"] = 2
        document["cancellation_status"] = CANCELLATION_OUTCOMES[outcome]
        self.stats["cancellations_completed"] += 1
        return self.status_payload(document)

    def set_counterparty_status(self, document_id: int, status: Any) -> dict[str, Any]:
        """Set ``header.document_status`` (2 sent to the counterparty, 3 accepted by it) of an issued
        document; the top-level ``document_status`` does not change. Returns the ``DOCUMENT.STATUSUPDATE``
        payload. Raises KeyError (unknown document) or ValueError (bad status, or a draft)."""
        if isinstance(status, bool) or status not in COUNTERPARTY_STATUSES:
            raise ValueError("status must be 2 (sent to the counterparty) or 3 (accepted by it)")
        document = self.documents[document_id]
        if docs.as_int(document.get("document_status")) == 0:
            raise ValueError(f"Document {document_id} is a draft: it has not been issued")
        document["header"]["document_status"] = status
        self.stats["counterparty_updates"] += 1
        return self.status_payload(document)

    # ----------------------------------------------------------------- validation and webhooks
    def set_validation(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply validation settings (all optional; invalid values raise ValueError and change nothing):

        - ``delay_seconds`` (float >= 0 or null): see :attr:`SandboxConfig.validation_delay`;
        - ``outcomes`` (``{"3": p, …}``): mix of final statuses, see :func:`parse_outcomes`;
        - ``reject_references`` (list of strings, or null = none): a document created (or planted) with one
          of these internal references (``references[]`` entry with ``reference_code`` 5) is rejected on its
          content: ``taxbureau_validation_status`` 5 with ``taxbureau_validation_comments``, at creation in
          Colombia/Mexico/Peru, when its validation completes in Chile (an explicit ``outcome`` of
          ``POST /_sandbox/validate`` still wins). Replaces the previous list; applies to documents
          created afterwards;
        - ``cancel_pending_acceptance`` (bool): see :meth:`update_status`.

        Returns :meth:`validation_view`.
        """
        delay = self.config.validation_delay
        outcomes = self.config.validation_outcomes
        rejects = self.config.reject_references
        pending = self.config.cancel_pending_acceptance
        for key in values:
            if key not in ("delay_seconds", "outcomes", "reject_references", "cancel_pending_acceptance"):
                raise ValueError(f"Unknown validation option: {key}")
        if "delay_seconds" in values:
            delay = values["delay_seconds"]
            if delay is not None and (isinstance(delay, bool) or float(delay) < 0):
                raise ValueError("delay_seconds must be a non-negative number or null")
            delay = None if delay is None else float(delay)
        if "outcomes" in values:
            outcomes = parse_outcomes(values["outcomes"])
        if "reject_references" in values:
            rejects = parse_references(values["reject_references"])
        if "cancel_pending_acceptance" in values:
            pending = values["cancel_pending_acceptance"]
            if not isinstance(pending, bool):
                raise ValueError("cancel_pending_acceptance must be true or false")
        cfg = self.config
        cfg.validation_delay, cfg.validation_outcomes = delay, outcomes
        cfg.reject_references, cfg.cancel_pending_acceptance = rejects, pending
        return self.validation_view()

    def validation_view(self) -> dict[str, Any]:
        """``GET /_sandbox/validation``: settings plus ``in_process`` (sorted document ids)."""
        return {
            "delay_seconds": self.config.validation_delay,
            "outcomes": dict(self.config.validation_outcomes),
            "reject_references": list(self.config.reject_references),
            "cancel_pending_acceptance": self.config.cancel_pending_acceptance,
            "in_process": sorted(self.validating),
        }

    def schedule_validation(self, document_id: int) -> float | None:
        """When a validation delay is set and the document is in process: record and return the clock time
        at which its validation completes by itself (``validation_due``); else None."""
        delay = self.config.validation_delay
        if delay is None or document_id not in self.validating:
            return None
        due = self.clock() + delay
        self.validation_due[document_id] = due
        return due

    def due_validations(self) -> list[int]:
        """Documents in process whose scheduled completion time has come, by document_id."""
        now = self.clock()
        return sorted(d for d, due in self.validation_due.items() if due <= now and d in self.validating)

    def add_subscription(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /webhook_subscriptions``: returns (status, body without the callback password)."""
        if not isinstance(body, dict):
            return 400, {"error": "Request body must be a JSON object"}
        for key in ("account_id", "callback_url", "callback_username", "callback_password", "event_id"):
            if body.get(key) in (None, ""):
                return 400, {"error": f"{key} is required"}
        if not str(body["callback_url"]).startswith(("http://", "https://")):
            return 400, {"error": "callback_url must be an http(s) URL"}
        subscription = {
            k: body[k] for k in ("callback_url", "callback_username", "callback_password", "event_id")
        }
        subscription["account_id"] = str(body["account_id"])
        subscription["webhook_subscription_id"] = len(self.subscriptions) + 1
        self.subscriptions.append(subscription)
        self.stats["webhook_subscriptions"] += 1
        return 201, {k: v for k, v in subscription.items() if k != "callback_password"}

    def complete_validation(self, document_id: int, outcome: int | None = None) -> dict[str, Any] | None:
        """Finish the tax bureau's validation of a document in process: the final status is ``outcome``,
        else 5 when its reference was in ``reject_references``, else drawn from the configured mix. Sending
        status becomes 1 (201 for outcome 2). Returns the ``DOCUMENT.STATUSUPDATE`` payload, or None when
        the document is not in process."""
        if document_id not in self.validating:
            return None
        self.validating.discard(document_id)
        self.validation_due.pop(document_id, None)
        forced = self.forced_outcomes.pop(document_id, None)
        document = self.documents[document_id]
        if outcome is None:
            outcome = forced
        if outcome is None:
            statuses = [int(k) for k in self.config.validation_outcomes]
            weights = list(self.config.validation_outcomes.values())
            outcome = self.rng.choices(statuses, weights=weights)[0]
        header = document["header"]
        header["taxbureau_validation_status"] = outcome
        header["taxbureau_sending_status"] = 201 if outcome == 2 else 1
        header["taxbureau_validation_comments"] = VALIDATION_COMMENTS.get(outcome, "")
        header["taxbureau_send_id"] = str(9_000_000 + document_id)
        header["taxbureau_send_date"] = time.strftime("%Y-%m-%d %H:%M:%S")  # wall-clock timestamp (a field)
        self.stats["validations_completed"] += 1
        return self.status_payload(document)

    @staticmethod
    def status_payload(document: dict[str, Any]) -> dict[str, Any]:
        """The documented ``DOCUMENT.STATUSUPDATE`` body of a document (API_NOTES "Documents"), nothing more:
        ``document_status`` is the top-level one; fields the document lacks are null."""
        header = document["header"]
        return {
            "document_id": document["document_id"],
            "account_id": header.get("account_id"),
            "document_status": document.get("document_status"),
            "taxbureau_send_status": header.get("taxbureau_sending_status"),
            "taxbureau_send_id": header.get("taxbureau_send_id"),
            "taxbureau_send_date": header.get("taxbureau_send_date"),
            "taxbureau_validation_status": header.get("taxbureau_validation_status"),
            "taxbureau_validation_comments": header.get("taxbureau_validation_comments"),
        }

    def subscribers(self, account_id: Any, event_id: str = "DOCUMENT.STATUSUPDATE") -> list[dict[str, Any]]:
        """Subscriptions of ``account_id`` to ``event_id``, in creation order."""
        return [
            s for s in self.subscriptions if s["account_id"] == str(account_id) and s["event_id"] == event_id
        ]

    # ----------------------------------------------------------------- accounts
    def create_account(self, body: dict[str, Any]) -> str:
        """Store an account and return its new id (a string)."""
        account_id = str(self.next_account_id)
        self.next_account_id += 1
        self.accounts[account_id] = {**body, "account_id": account_id}
        self.stats["accounts_created"] += 1
        return account_id

    def public_account(self, account_id: str) -> dict[str, Any] | None:
        """``{account_id, account_created: {…}}`` without ``admin_password`` or certificates, or None."""
        account = self.accounts.get(account_id)
        if account is None:
            return None
        return public_view(account)


def parse_outcomes(value: Any) -> dict[str, float]:
    """Validate a validation outcome mix ``{"3": 0.8, "4": 0.1, "5": 0.1}`` (keys 2..5, weights >= 0)."""
    if not isinstance(value, dict) or not value:
        raise ValueError('outcomes must be a non-empty object like {"3": 0.9, "5": 0.1}')
    parsed: dict[str, float] = {}
    for key, weight in value.items():
        if str(key) not in ("2", "3", "4", "5"):
            raise ValueError("outcome keys are final taxbureau_validation_status values 2, 3, 4, 5")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError("outcome weights must be non-negative numbers")
        parsed[str(key)] = float(weight)
    if not sum(parsed.values()) > 0:
        raise ValueError("at least one outcome weight must be positive")
    return parsed


def parse_references(value: Any) -> list[str]:
    """Validate ``reject_references``: a list of non-empty strings (integers are turned into strings);
    null means an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("reject_references must be a list of reference_number strings")
    parsed: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int) or str(item) == "":
            raise ValueError("reject_references must be a list of reference_number strings")
        parsed.append(str(item))
    return parsed
