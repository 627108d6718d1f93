"""Issuing ledger rows through Koywe, exactly once as seen from Koywe.

For each row: claim it (``in_flight``, committed before anything is sent); if an earlier POST may have
reached Koywe (``attempts > 0``) look it up by its internal reference first and adopt what Koywe has
(seeds ``000_…``–``002_…``: no idempotency key, never re-submit after a 2xx); otherwise count the send
(committed), POST, and record the outcome with its attempt row. The ledger, not the task, remembers
what was sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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

RATE_LIMIT_TRIES = 3
RATE_LIMIT_MIN_WAIT_SECONDS = 30.0
RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 6 * 3600.0
MAX_ATTEMPTS = 8


def retry_delay_seconds(
    attempts: int, *, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_MAX_SECONDS
) -> float:
    """Backoff before the next try of a document that has been sent ``attempts`` times.

    ``base * 2**(attempts-1)`` capped at ``cap``: 1, 2, 4, 8, 16, 32 min, … 6 h (no jitter: callers add it).
    """
    return min(cap, base * 2 ** max(0, attempts - 1))


def rate_limit_wait_seconds(err: KoyweRateLimitedError, try_number: int, *, rng: random.Random) -> float:
    """Seconds to wait after the ``try_number``-th 429 in a row (seed ``000_…``).

    Koywe's ``Retry-After`` when present; otherwise at least 30 s, doubling per try, plus up to 20 % jitter.
    """
    if err.retry_after is not None:
        return err.retry_after
    base = RATE_LIMIT_MIN_WAIT_SECONDS * 2 ** max(0, try_number - 1)
    return base * (1 + 0.2 * rng.random())


@dataclass
class BatchOutcome:
    """Counts of one batch: what happened to each claimed row (a small XCom)."""

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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Issuer:
    """Issues ledger rows with a :class:`KoyweHook`.

    :param owner: who holds the claims (task instance id), stored as the lease owner.
    :param lease_seconds: how long a claim protects a row before another run may take it over.
    :param max_attempts: sends after which a failing row is ``dead`` (needs a person).
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
        lease_seconds: int = 900,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.owner = owner
        self.run_id = run_id
        self.task = task
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.rng = rng or random.Random()

    def issue_range(self, first_id: int, last_id: int, *, states=(DocumentState.PENDING,)) -> BatchOutcome:
        """Issue the rows with ``first_id <= id <= last_id`` in ``states``; rows claimed elsewhere are skipped."""
        outcome = BatchOutcome()
        for pk in self.ledger.ids_in_range(first_id, last_id, states=states):
            claimed = self.ledger.claim(pk, owner=self.owner, lease_seconds=self.lease_seconds, states=states)
            if claimed is None:
                outcome.skipped += 1
                continue
            self.issue_one(claimed, outcome)
        return outcome

    def issue_claimed(self, claimed: list[ClaimedDocument]) -> BatchOutcome:
        outcome = BatchOutcome()
        for doc in claimed:
            self.issue_one(doc, outcome)
        return outcome

    # --- one document --------------------------------------------------------------------------
    def issue_one(self, doc: ClaimedDocument, outcome: BatchOutcome) -> None:
        """Take one claimed row to its next state. Raises only for bad credentials (the task must stop)."""
        if doc.attempts > 0 and self._adopted_existing(doc, outcome):
            return
        rate_limited_tries = 0
        while True:
            self.ledger.mark_sent(doc.pk)
            started = time.monotonic()
            try:
                document = self.hook.create_document(doc.payload, reference=doc.reference)
            except KoyweRateLimitedError as err:
                rate_limited_tries += 1
                outcome.rate_limited += 1
                self._attempt(doc, "rate_limited", err, started)
                wait = rate_limit_wait_seconds(err, rate_limited_tries, rng=self.rng)
                self.hook.limiter.pause(wait)
                if rate_limited_tries >= RATE_LIMIT_TRIES:
                    self._retry_later(doc, err, outcome, delay=wait)
                    return
                continue
            except KoyweRejectedError as err:
                self._attempt(doc, "rejected", err, started)
                created = (err.response or {}).get("document_id")
                self.ledger.mark_rejected(
                    doc.pk,
                    error=err.message,
                    error_class=type(err).__name__,
                    koywe_document_id=None if created is None else str(created),
                    result_status=err.result_status,
                )
                outcome.rejected += 1
                return
            except KoyweTransientError as err:
                self._attempt(doc, "retryable", err, started)
                self._retry_later(doc, err, outcome)
                return
            except KoyweOutcomeUnknownError as err:
                self._attempt(doc, "unknown", err, started)
                if doc.attempts + 1 >= self.max_attempts:
                    self._dead(doc, err, outcome)
                else:
                    self.ledger.mark_unknown(
                        doc.pk,
                        error=err.message,
                        error_class=type(err).__name__,
                        next_attempt_at=datetime.now(UTC) + timedelta(seconds=RETRY_BASE_SECONDS),
                    )
                    outcome.unknown += 1
                return
            except (KoyweAuthError, KoyweConfigurationError) as err:
                self._attempt(doc, "auth_error", err, started)
                self.ledger.release(doc.pk)
                raise
            self._attempt(doc, "issued", None, started, http_status=201)
            self._mark_issued(doc, document, adopted=False)
            outcome.issued += 1
            return

    def _adopted_existing(self, doc: ClaimedDocument, outcome: BatchOutcome) -> bool:
        """Look the row up by reference; adopt a single match; alarm on several. True when handled."""
        outcome.lookups += 1
        started = time.monotonic()
        try:
            found = self.hook.find_documents_by_reference(doc.reference, account_id=doc.account_id)
        except (KoyweAuthError, KoyweConfigurationError):
            self.ledger.release(doc.pk)
            raise
        except KoyweError as err:
            # Could not check: sending now might duplicate; leave it for a later lookup.
            self._attempt(doc, "unknown", err, started, kind="lookup")
            self.ledger.mark_unknown(
                doc.pk,
                error=f"lookup failed: {err.message}",
                error_class=type(err).__name__,
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=RETRY_BASE_SECONDS),
            )
            outcome.unknown += 1
            return True
        if not found:
            self._attempt(doc, "not_found", None, started, kind="lookup", http_status=200)
            return False
        if len(found) > 1:
            ids = ", ".join(str(d.get("document_id")) for d in found)
            message = (
                f"duplicate alarm: {len(found)} Koywe documents carry reference {doc.reference!r} ({ids})"
            )
            self._attempt(
                doc, "duplicate_alarm", None, started, kind="lookup", http_status=200, error=message
            )
            self.ledger.mark_dead(doc.pk, error=message, error_class="DuplicateAlarm")
            outcome.duplicate_alarms += 1
            return True
        self._attempt(doc, "adopted", None, started, kind="lookup", http_status=200)
        self._mark_issued(doc, found[0], adopted=True)
        outcome.adopted += 1
        return True

    # --- helpers -------------------------------------------------------------------------------
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

    def _retry_later(
        self, doc: ClaimedDocument, err: KoyweError, outcome: BatchOutcome, *, delay: float | None = None
    ) -> None:
        attempts = doc.attempts + 1
        if attempts >= self.max_attempts:
            self._dead(doc, err, outcome)
            return
        delay = max(delay or 0.0, retry_delay_seconds(attempts)) * (1 + 0.1 * self.rng.random())
        self.ledger.mark_retryable(
            doc.pk,
            error=err.message,
            error_class=type(err).__name__,
            next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
        )
        outcome.retryable += 1

    def _dead(self, doc: ClaimedDocument, err: KoyweError, outcome: BatchOutcome) -> None:
        self.ledger.mark_dead(
            doc.pk,
            error=f"gave up after {self.max_attempts} attempts: {err.message}",
            error_class=type(err).__name__,
        )
        outcome.dead += 1

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
