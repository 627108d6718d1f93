"""Issuing ledger rows through Koywe, exactly once as seen from Koywe.

For each row: claim it (``in_flight``, committed before anything is sent); if an earlier POST may have
reached Koywe (``attempts > 0``: ``unknown``, ``retryable`` after a send, an ``in_flight`` row whose
lease expired after a crash, a re-queued row) look it up by its internal reference first and adopt what
Koywe has (seeds ``000_…``–``002_…``: no idempotency key, never re-submit after a 2xx); otherwise count
the send (committed), POST, and record the outcome with its attempt row. A row never sent
(``attempts == 0``) is POSTed without a lookup (seed ``000_…``: not on every issuance). The ledger, not
the task, remembers what was sent.

Classification of one ``POST /documents`` (see docs/DESIGN.md, "Issuance state machine"):

=====================================================  ==============================================
Koywe's answer                                         ledger row
=====================================================  ==============================================
2xx, ``result.status == 0``                            ``issued`` (document id and number stored)
400, or 2xx with ``result.status != 0``                ``rejected`` with Koywe's message (permanent)
429                                                    wait ``Retry-After`` (else >= 30 s, doubling,
                                                       jitter) pausing the whole process's pacing;
                                                       at most 3 tries, then ``retryable``
5xx, connection refused before the body was sent       ``retryable`` at the backoff schedule
timeout, connection dropped after sending              ``unknown`` (looked up before any resend)
401 after one token refresh, bad credentials           row released, the task fails
=====================================================  ==============================================

Backoff schedule (:func:`retry_delay_seconds`, defaults): after the n-th POST of a document the next
try is due ``60 s * 2**(n-1)`` later (+ up to 10 % jitter; never before a 429's wait), capped at 6 h:
1, 2, 4, 8, 16, 32, 64, 128, 256 min. Once :data:`MAX_ATTEMPTS` (10) POSTs were sent — about 8.5 h of
failures — a row that fails again (429/5xx), or whose lookup finds nothing, is ``dead``: it needs a
person, and the report names it with its last error. Every POST counts, 429s included (they were
sent). An ``unknown`` row never dies unseen: it stays ``unknown`` until a lookup settles it. A re-queued
row past the maximum gets one more try. Settings: Airflow config section ``[koywe]``
(:class:`IssuancePolicy`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from koywe_provider.exceptions import (
    KoyweAuthError,
    KoyweConfigurationError,
    KoyweError,
    KoyweOutcomeUnknownError,
    KoyweRateLimitedError,
    KoyweRejectedError,
    KoyweTransientError,
)
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import ClaimedDocument, DocumentState, Ledger
from koywe_provider.ledger.core import LeaseLostError

RATE_LIMIT_TRIES = 3
RATE_LIMIT_MIN_WAIT_SECONDS = 30.0
RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 6 * 3600.0
MAX_ATTEMPTS = 10
LEASE_SECONDS = 900
#: States the retry DAG picks: ``in_flight`` only once its lease has expired (a crashed task).
RETRY_STATES: tuple[DocumentState, ...] = (
    DocumentState.RETRYABLE,
    DocumentState.UNKNOWN,
    DocumentState.IN_FLIGHT,
)
DUPLICATE_ALARM = "DuplicateAlarm"
#: Seconds a lease must still have beyond one request's timeout before another POST is sent.
LEASE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class IssuancePolicy:
    """Lease, backoff and give-up settings of issuance (all times in seconds).

    :param lease_seconds: how long a claim protects a row before another run may take it over (must
        exceed one document's longest handling: 3 x (timeout + rate-limit wait)).
    :param retry_base_seconds: first delay of the backoff schedule (0 = due at once; tests only).
    :param retry_max_seconds: cap of the backoff schedule.
    :param max_attempts: POSTs after which a failing row is ``dead``.
    :param rate_limit_min_wait_seconds: wait after a 429 without ``Retry-After`` (doubles per try).
    """

    lease_seconds: int = LEASE_SECONDS
    retry_base_seconds: float = RETRY_BASE_SECONDS
    retry_max_seconds: float = RETRY_MAX_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    rate_limit_min_wait_seconds: float = RATE_LIMIT_MIN_WAIT_SECONDS

    @classmethod
    def from_config(cls) -> IssuancePolicy:
        """Read ``[koywe] lease_seconds, retry_base_seconds, retry_max_seconds, max_attempts,
        rate_limit_min_wait_seconds`` from Airflow's configuration (``AIRFLOW__KOYWE__…`` env vars);
        missing options keep the defaults. Call at task run time, never at DAG parse time."""
        from airflow.sdk import conf

        return cls(
            lease_seconds=conf.getint("koywe", "lease_seconds", fallback=LEASE_SECONDS),
            retry_base_seconds=conf.getfloat("koywe", "retry_base_seconds", fallback=RETRY_BASE_SECONDS),
            retry_max_seconds=conf.getfloat("koywe", "retry_max_seconds", fallback=RETRY_MAX_SECONDS),
            max_attempts=conf.getint("koywe", "max_attempts", fallback=MAX_ATTEMPTS),
            rate_limit_min_wait_seconds=conf.getfloat(
                "koywe", "rate_limit_min_wait_seconds", fallback=RATE_LIMIT_MIN_WAIT_SECONDS
            ),
        )


def retry_delay_seconds(
    attempts: int, *, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_MAX_SECONDS
) -> float:
    """Backoff before the next try of a document that has been sent ``attempts`` times (seconds).

    ``base * 2**(attempts-1)`` capped at ``cap``: 1, 2, 4, 8, 16, 32 min, … 6 h (no jitter: callers add it).
    """
    return min(cap, base * 2 ** max(0, attempts - 1))


def rate_limit_wait_seconds(
    err: KoyweRateLimitedError,
    try_number: int,
    *,
    rng: random.Random,
    minimum: float = RATE_LIMIT_MIN_WAIT_SECONDS,
) -> float:
    """Seconds to wait after the ``try_number``-th 429 in a row (seed ``000_…``).

    Koywe's ``Retry-After`` when present; otherwise at least ``minimum`` (30 s), doubling per try, plus
    up to 20 % jitter.
    """
    if err.retry_after is not None:
        return err.retry_after
    base = minimum * 2 ** max(0, try_number - 1)
    return base * (1 + 0.2 * rng.random())


@dataclass
class BatchOutcome:
    """Counts of one batch: what happened to each claimed row (a small XCom).

    ``retried``: rows taken from ``retryable``/``unknown``/expired ``in_flight`` or sent before;
    ``adopted``: found at Koywe by reference and recorded without a POST; ``duplicate_alarms``: several
    Koywe documents carry the reference (row ``dead``, a person decides); ``lookups``: reference lookups
    made; ``rate_limited``: 429 answers; ``skipped``: rows another run holds.
    """

    issued: int = 0
    adopted: int = 0
    rejected: int = 0
    retryable: int = 0
    unknown: int = 0
    dead: int = 0
    duplicate_alarms: int = 0
    skipped: int = 0
    lookups: int = 0
    rate_limited: int = 0
    retried: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Issuer:
    """Issues ledger rows with a :class:`KoyweHook`.

    :param owner: who holds the claims (task instance id), stored as the lease owner.
    :param policy: lease, backoff and give-up settings (default: :class:`IssuancePolicy` defaults).
    :param lease_seconds, max_attempts: override the policy's values.
    :param sleep: injectable sleeper (tests).
    """

    def __init__(
        self,
        hook: KoyweHook,
        ledger: Ledger,
        *,
        owner: str,
        run_id: str | None = None,
        task: str | None = None,
        policy: IssuancePolicy | None = None,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        policy = policy or IssuancePolicy()
        self.hook = hook
        self.ledger = ledger
        self.owner = owner
        self.run_id = run_id
        self.task = task
        self.policy = policy
        self.lease_seconds = int(lease_seconds if lease_seconds is not None else policy.lease_seconds)
        self.max_attempts = int(max_attempts if max_attempts is not None else policy.max_attempts)
        self.sleep = sleep
        self.rng = rng or random.Random()

    def issue_range(
        self,
        first_id: int,
        last_id: int,
        *,
        states: Collection[str | DocumentState] = (DocumentState.PENDING,),
        references: Collection[str] | None = None,
        due_before: datetime | None = None,
    ) -> BatchOutcome:
        """Issue the due rows with ``first_id <= id <= last_id`` in ``states`` (``in_flight``: expired
        leases only), lowest id first, each claimed atomically just before it is handled
        (:meth:`Ledger.claim_next`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional update on
        SQLite), so concurrent runs never handle the same row. ``references``: only those internal
        references. ``due_before``: default now (``next_attempt_at`` must have passed).

        Raises :class:`KoyweAuthError` / :class:`KoyweConfigurationError` when Koywe refuses the
        credentials (the row being handled is released first).
        """
        outcome = BatchOutcome()
        candidates = self.ledger.ids_in_range(first_id, last_id, states=states, due_before=due_before)
        if references is not None:
            wanted = set(self.ledger.ids_for_references(references, states=states))
            candidates = [pk for pk in candidates if pk in wanted]
        for pk in candidates:
            # One row at a time, so every lease starts when its row is handled.
            claimed = self.ledger.claim_next(
                owner=self.owner,
                limit=1,
                states=states,
                due_before=due_before,
                first_id=pk,
                last_id=pk,
                lease_seconds=self.lease_seconds,
            )
            if not claimed:
                outcome.skipped += 1
                continue
            self.issue_one(claimed[0], outcome)
        return outcome

    def issue_claimed(self, claimed: list[ClaimedDocument]) -> BatchOutcome:
        outcome = BatchOutcome()
        for doc in claimed:
            self.issue_one(doc, outcome)
        return outcome

    # --- one document --------------------------------------------------------------------------
    def issue_one(self, doc: ClaimedDocument, outcome: BatchOutcome) -> None:
        """Take one claimed row to its next state. Raises only for bad credentials (the task must stop)."""
        if doc.attempts > 0 or doc.previous_state is not DocumentState.PENDING:
            outcome.retried += 1
        if doc.needs_lookup and self._handled_by_lookup(doc, outcome):
            return
        if doc.attempts >= self.max_attempts and doc.previous_state is not DocumentState.PENDING:
            # Not at Koywe after max_attempts POSTs: stop (a person re-queues it for one more try).
            self._dead(doc, "none of them reached Koywe (reference not found)", outcome, sent=doc.attempts)
            return
        rate_limited_tries = 0
        while True:
            try:
                sent = self.ledger.mark_sent(doc.pk, owner=self.owner)
            except LeaseLostError:
                outcome.skipped += 1  # another run took the row over: it will look it up first
                return
            started = time.monotonic()
            try:
                document = self.hook.create_document(doc.payload or {}, reference=doc.reference)
            except KoyweRateLimitedError as err:
                rate_limited_tries += 1
                outcome.rate_limited += 1
                self._attempt(doc, "rate_limited", err, started)
                wait = rate_limit_wait_seconds(
                    err, rate_limited_tries, rng=self.rng, minimum=self.policy.rate_limit_min_wait_seconds
                )
                self.hook.limiter.pause(wait)  # the whole process slows down, not just this row
                if rate_limited_tries >= RATE_LIMIT_TRIES or not self._lease_allows(doc, wait):
                    self._retry_later(doc, err, outcome, sent=sent, delay=wait)
                    return
                continue
            except KoyweRejectedError as err:
                self._attempt(doc, "rejected", err, started)
                created = (err.response or {}).get("document_id")
                self._guarded(
                    self.ledger.mark_rejected,
                    doc,
                    outcome,
                    error=err.message,
                    error_class=type(err).__name__,
                    koywe_document_id=None if created is None else str(created),
                    result_status=err.result_status,
                )
                outcome.rejected += 1
                return
            except KoyweTransientError as err:
                self._attempt(doc, "retryable", err, started)
                self._retry_later(doc, err, outcome, sent=sent)
                return
            except (KoyweAuthError, KoyweConfigurationError) as err:
                self._attempt(doc, "auth_error", err, started)
                self.ledger.release(doc.pk, owner=self.owner)
                raise
            except (KoyweOutcomeUnknownError, KoyweError) as err:
                # Timeout or dropped connection after sending, or an answer we cannot read: the document
                # may exist at Koywe, so the next try looks it up first.
                self._attempt(doc, "unknown", err, started)
                self._unknown(doc, err, outcome, sent=sent)
                return
            self._attempt(doc, "issued", None, started, http_status=201)
            self._mark_issued(doc, document, adopted=False)
            outcome.issued += 1
            return

    def _handled_by_lookup(self, doc: ClaimedDocument, outcome: BatchOutcome) -> bool:
        """Look the row up by reference; adopt a single match; alarm on several. True when handled."""
        rate_limited_tries = 0
        while True:
            outcome.lookups += 1
            started = time.monotonic()
            try:
                found = self.hook.find_documents_by_reference(doc.reference, account_id=doc.account_id)
                break
            except (KoyweAuthError, KoyweConfigurationError):
                self.ledger.release(doc.pk, owner=self.owner)
                raise
            except KoyweRateLimitedError as err:
                rate_limited_tries += 1
                outcome.rate_limited += 1
                wait = rate_limit_wait_seconds(
                    err, rate_limited_tries, rng=self.rng, minimum=self.policy.rate_limit_min_wait_seconds
                )
                self.hook.limiter.pause(wait)
                if rate_limited_tries < RATE_LIMIT_TRIES and self._lease_allows(doc, wait):
                    continue
                self._attempt(doc, "unknown", err, started, kind="lookup")
                self._unknown(doc, err, outcome, sent=doc.attempts, prefix="lookup failed: ", delay=wait)
                return True
            except KoyweError as err:
                # Could not check: sending now might duplicate; leave it for a later lookup.
                self._attempt(doc, "unknown", err, started, kind="lookup")
                self._unknown(doc, err, outcome, sent=doc.attempts, prefix="lookup failed: ")
                return True
        if not found:
            self._attempt(doc, "not_found", None, started, kind="lookup", http_status=200)
            return False
        if len(found) > 1:
            ids = ", ".join(str(d.get("document_id")) for d in found)
            message = (
                f"duplicate alarm: {len(found)} Koywe documents carry reference {doc.reference!r} "
                f"({ids}); a person must decide which one stands (none is cancelled automatically)"
            )
            self._attempt(
                doc, "duplicate_alarm", None, started, kind="lookup", http_status=200, error=message
            )
            self._guarded(self.ledger.mark_dead, doc, outcome, error=message, error_class=DUPLICATE_ALARM)
            outcome.duplicate_alarms += 1
            return True
        self._attempt(doc, "adopted", None, started, kind="lookup", http_status=200)
        self._mark_issued(doc, found[0], adopted=True)
        outcome.adopted += 1
        return True

    # --- helpers -------------------------------------------------------------------------------
    def _lease_allows(self, doc: ClaimedDocument, wait: float) -> bool:
        """Whether the claim outlives a wait of ``wait`` s plus one request (else another run could take the
        row over while our POST is under way)."""
        if doc.lease_expires_at is None:
            return True
        left = (doc.lease_expires_at - datetime.now(UTC)).total_seconds()
        return left > wait + float(self.hook.timeout) + LEASE_MARGIN_SECONDS

    def _mark_issued(self, doc: ClaimedDocument, document: dict, *, adopted: bool) -> None:
        header = document.get("header") if isinstance(document.get("header"), dict) else {}
        result = document.get("result") if isinstance(document.get("result"), dict) else {}

        def as_int(value):
            try:
                return None if value in (None, "") else int(value)
            except (TypeError, ValueError):
                return None

        self.ledger.mark_issued(
            doc.pk,
            koywe_document_id=str(document.get("document_id")),
            document_number=None if header.get("document_number") is None else str(header["document_number"]),
            document_status=as_int(header.get("document_status", document.get("document_status"))),
            taxbureau_sending_status=as_int(header.get("taxbureau_sending_status")),
            taxbureau_validation_status=as_int(header.get("taxbureau_validation_status")),
            result_status=as_int(result.get("status")) or 0,
            adopted=adopted,
        )

    def _next_attempt_at(self, sent: int, delay: float | None = None) -> datetime:
        scheduled = retry_delay_seconds(
            sent, base=self.policy.retry_base_seconds, cap=self.policy.retry_max_seconds
        )
        seconds = max(delay or 0.0, scheduled) * (1 + 0.1 * self.rng.random())
        return datetime.now(UTC) + timedelta(seconds=seconds)

    def _retry_later(
        self,
        doc: ClaimedDocument,
        err: KoyweError,
        outcome: BatchOutcome,
        *,
        sent: int,
        delay: float | None = None,
    ) -> None:
        if sent >= self.max_attempts:
            self._dead(doc, err.message, outcome, sent=sent, error_class=type(err).__name__)
            return
        if self._guarded(
            self.ledger.mark_retryable,
            doc,
            outcome,
            error=err.message,
            error_class=type(err).__name__,
            next_attempt_at=self._next_attempt_at(sent, delay),
        ):
            outcome.retryable += 1

    def _unknown(
        self,
        doc: ClaimedDocument,
        err: KoyweError,
        outcome: BatchOutcome,
        *,
        sent: int,
        prefix: str = "",
        delay: float | None = None,
    ) -> None:
        # Never dead from here: the document may exist at Koywe, and only a lookup can tell.
        if self._guarded(
            self.ledger.mark_unknown,
            doc,
            outcome,
            error=f"{prefix}{err.message}",
            error_class=type(err).__name__,
            next_attempt_at=self._next_attempt_at(sent, delay),
        ):
            outcome.unknown += 1

    def _dead(
        self,
        doc: ClaimedDocument,
        last_error: str,
        outcome: BatchOutcome,
        *,
        sent: int,
        error_class: str = "MaxAttemptsExceeded",
    ) -> None:
        if self._guarded(
            self.ledger.mark_dead,
            doc,
            outcome,
            error=f"gave up after {sent} attempts (maximum {self.max_attempts}): {last_error}",
            error_class=error_class,
        ):
            outcome.dead += 1

    def _guarded(
        self, mark: Callable[..., None], doc: ClaimedDocument, outcome: BatchOutcome, **kwargs
    ) -> bool:
        """Record a failure outcome only while we still hold the row; False when another run took it over."""
        try:
            mark(doc.pk, owner=self.owner, **kwargs)
        except LeaseLostError:
            outcome.skipped += 1
            return False
        return True

    def _attempt(
        self,
        doc: ClaimedDocument,
        outcome: str,
        err: KoyweError | None,
        started: float,
        *,
        kind: str = "create",
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        self.ledger.record_attempt(
            doc.pk,
            kind=kind,
            outcome=outcome,
            http_status=err.status_code if err is not None else http_status,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=error or (err.message if err is not None else None),
            run_id=self.run_id,
            task=self.task,
        )
