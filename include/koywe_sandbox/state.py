"""In-memory state of the Koywe sandbox: configuration, tokens, documents, accounts, stats, faults.

All methods are synchronous and the server runs on a single asyncio event loop, so each method call is
atomic with respect to concurrent requests (no awaits inside; handlers await only before or after).
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from . import documents as docs
from .accounts import public_view
from .faults import FaultSettings, TokenBucket

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
)
#: Default mix of final Chile validation outcomes (``taxbureau_validation_status``: probability).
DEFAULT_VALIDATION_OUTCOMES = {"3": 1.0}
#: ``taxbureau_validation_comments`` the sandbox writes for each final validation status.
VALIDATION_COMMENTS = {
    2: "Envio rechazado: error de firma en el sobre (sandbox)",
    3: "",
    4: "Aceptado con reparos: giro del receptor no coincide (sandbox)",
    5: "Rechazado: RUT receptor no autorizado (sandbox)",
}
SECRET_ACCOUNT_FIELDS = ("admin_password",)
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
    list_envelope: str = "hal"
    #: Seconds after which a Chile document's asynchronous validation completes by itself (and
    #: subscribed callbacks are sent); None = only when ``POST /_sandbox/validate`` asks.
    validation_delay: float | None = None
    #: ``{"3": 0.8, "4": 0.1, "5": 0.1}``: probability of each final validation status.
    validation_outcomes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_VALIDATION_OUTCOMES))
    faults: FaultSettings = field(default_factory=FaultSettings)


@dataclass
class Admission:
    """A ``/V1`` request refused before processing: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class SandboxState:
    """Everything the sandbox remembers; ``reset()`` clears data and stats but keeps the configuration."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.reset()

    # ----------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Clear documents, accounts, tokens and stats; re-seed the fault generator; refill the bucket."""
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
        self.validating: set[int] = set()  # Chile documents whose validation is in process
        self.rng = random.Random(self.config.seed)
        self.bucket = TokenBucket(self.config.rate_limit)

    def set_faults(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply run-time fault settings (plus ``rate_limit`` and ``seed``); returns the current ones."""
        values = dict(values)
        rate_limit = values.pop("rate_limit", None)
        reseed = "seed" in values
        seed = values.pop("seed", None)
        if rate_limit is not None:
            rate = float(rate_limit)
            if rate < 0:
                raise ValueError("rate_limit must be >= 0")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        self.faults.update(values)  # validates everything before changing anything
        if rate_limit is not None:
            self.config.rate_limit = rate
            self.bucket = TokenBucket(rate)
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
        """Current faults plus ``rate_limit`` and ``seed``."""
        return {**self.faults.as_dict(), "rate_limit": self.config.rate_limit, "seed": self.config.seed}

    # ----------------------------------------------------------------- /V1 admission
    def enter(self) -> None:
        """A ``/V1`` request arrived."""
        self.stats["requests_total"] += 1
        self.stats["in_flight"] += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])

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
        self.tokens[token] = time.monotonic() + cfg.token_ttl
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
        if time.monotonic() >= expiry:
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
    def create_document(self, body: dict[str, Any], stamp: bool) -> dict[str, Any]:
        """Store a validated document body and return the Koywe ``Document``."""
        header = dict(body["header"])
        type_id = docs.as_int(header["document_type_id"])
        assert type_id is not None  # validated by documents.validate_document
        account_key = str(header["account_id"])
        country = docs.country_of(type_id, header, self.accounts)
        seq_key = (account_key, type_id)
        self.sequences[seq_key] = self.sequences.get(seq_key, 0) + 1
        folio = docs.format_folio(type_id, country, self.sequences[seq_key], header)
        bureau = docs.taxbureau_code(type_id)
        draft = (
            bool((body.get("options") or {}).get("draft_only"))
            if isinstance(body.get("options"), dict)
            else False
        )
        sending, validation = (0, 1) if country == docs.CHILE else (1, 3)
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
        totals = body["totals"]
        document = {
            "document_id": document_id,
            "header": header,
            "details": body["details"],
            "references": body.get("references"),
            "totals": totals,
            "electronic_document": docs.electronic_document(
                document_id, bureau, folio, totals.get("total_amount"), stamp
            ),
            "result": {"status": 0, "error_message": ""},
        }
        self.documents[document_id] = document
        if country == docs.CHILE and not draft:
            self.validating.add(document_id)
        self.stats["documents_created"] += 1
        for number in docs.reference_numbers(document["references"]):
            key = (account_key, number)
            self.reference_counts[key] = self.reference_counts.get(key, 0) + 1
            if self.reference_counts[key] == 2:
                self.stats["duplicate_references"] += 1
        self._maybe_revoke_after_documents()
        return document

    def roll_post_create_fault(self) -> str | None:
        """After a successful create: ``"lost"``, ``"slow"`` or None (random, from the seeded generator)."""
        if self.faults.lost_response_rate > 0 and self.rng.random() < self.faults.lost_response_rate:
            self.stats["lost_responses"] += 1
            return "lost"
        if self.faults.slow_response_rate > 0 and self.rng.random() < self.faults.slow_response_rate:
            self.stats["slow_responses"] += 1
            return "slow"
        return None

    def list_documents(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Documents matching the filters, ordered by document_id; counts a lookup or a list call."""
        self.stats["lookups" if "reference_number" in filters else "list_calls"] += 1
        return [d for _, d in sorted(self.documents.items()) if docs.matches(d, filters)]

    def update_status(self, document: dict[str, Any], target: int) -> bool:
        """``PUT /documents/{id}``: apply a status change; False when Koywe refuses it."""
        header = document["header"]
        current = docs.as_int(header.get("document_status"))
        if current == target:
            return True
        type_id = docs.as_int(header.get("document_type_id")) or 0
        country = docs.country_of(type_id, header, self.accounts)
        if (target == 1 and current == 0 and country == docs.CHILE) or (
            target == 2 and current == 1 and country == docs.MEXICO
        ):
            header["document_status"] = target
            if country == docs.CHILE:  # an issued draft goes to the tax bureau now
                self.validating.add(docs.as_int(document["document_id"]) or 0)
            return True
        return False

    # ----------------------------------------------------------------- validation and webhooks
    def set_validation(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{"delay_seconds": float|null, "outcomes": {"3": p, …}}``; returns the current settings."""
        delay = self.config.validation_delay
        outcomes = self.config.validation_outcomes
        for key in values:
            if key not in ("delay_seconds", "outcomes"):
                raise ValueError(f"Unknown validation option: {key}")
        if "delay_seconds" in values:
            delay = values["delay_seconds"]
            if delay is not None and (isinstance(delay, bool) or float(delay) < 0):
                raise ValueError("delay_seconds must be a non-negative number or null")
            delay = None if delay is None else float(delay)
        if "outcomes" in values:
            outcomes = parse_outcomes(values["outcomes"])
        self.config.validation_delay, self.config.validation_outcomes = delay, outcomes
        return self.validation_view()

    def validation_view(self) -> dict[str, Any]:
        return {
            "delay_seconds": self.config.validation_delay,
            "outcomes": dict(self.config.validation_outcomes),
            "in_process": sorted(self.validating),
        }

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
        """Finish the tax bureau's validation of a document in process: the final status is ``outcome`` or
        drawn from the configured mix. Returns the ``DOCUMENT.STATUSUPDATE`` payload, or None when the
        document is not in process."""
        if document_id not in self.validating:
            return None
        self.validating.discard(document_id)
        document = self.documents[document_id]
        if outcome is None:
            statuses = [int(k) for k in self.config.validation_outcomes]
            weights = list(self.config.validation_outcomes.values())
            outcome = self.rng.choices(statuses, weights=weights)[0]
        header = document["header"]
        header["taxbureau_validation_status"] = outcome
        header["taxbureau_sending_status"] = 201 if outcome == 2 else 1
        header["taxbureau_validation_comments"] = VALIDATION_COMMENTS.get(outcome, "")
        header["taxbureau_send_id"] = str(9_000_000 + document_id)
        header["taxbureau_send_date"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.stats["validations_completed"] += 1
        return {
            "document_id": document_id,
            "account_id": header.get("account_id"),
            "document_status": header.get("document_status"),
            "taxbureau_send_status": header["taxbureau_sending_status"],
            "taxbureau_send_id": header["taxbureau_send_id"],
            "taxbureau_send_date": header["taxbureau_send_date"],
            "taxbureau_validation_status": outcome,
            "taxbureau_validation_comments": header["taxbureau_validation_comments"],
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
