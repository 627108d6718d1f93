"""Issuing ledger rows through Koywe, exactly once as seen from Koywe.

For each row: claim it (``in_flight``, committed before anything is sent); if a POST of its current
generation may have reached Koywe (``generation_sends > 0``: ``unknown``, ``retryable`` after a send, an
``in_flight`` row whose lease expired after a crash, a re-queued row) look it up by its Koywe reference
first and adopt what Koywe has only when its content matches (:mod:`koywe_provider.services.adoption`;
seeds ``000_…``–``002_…``: no idempotency key, never re-submit after a 2xx). Otherwise the send is
fenced: take a token of the deployment-wide rate budget, then in one UPDATE check that this task still
holds the row and extend its lease (:meth:`~koywe_provider.ledger.Ledger.mark_sent`), then POST, and
record the outcome with its attempt row in one transaction. A generation never sent is POSTed without a
lookup (seed ``000_…``: not on every issuance). The ledger, not the task, remembers what was sent.

Classification of one ``POST /documents`` (``docs/DESIGN.md``, "Issuance state machine"):

=====================================================  ==============================================
Koywe's answer                                         ledger row
=====================================================  ==============================================
2xx, ``result.status == 0``                            ``issued`` (``draft`` for a Chile draft); Koywe
                                                       id, folio and statuses stored
2xx, ``result.status == 2``                            ``not_sent``: generated, not sent to the tax
                                                       bureau yet; followed, never re-issued
2xx without ``document_id`` (``200 {"error": …}``)     ``unknown`` (looked up before any resend)
400, or 2xx with ``result.status`` 1                   ``rejected`` with Koywe's message; a fix is a
                                                       new generation (``INV-1~2``)
429                                                    the shared budget pauses for every task
                                                       (``max(30 s, Retry-After)``, doubling, capped);
                                                       at most 3 tries, or a pause longer than the
                                                       lease, then ``retryable`` due after the pause
5xx, connection refused before the body was sent       ``retryable`` at the backoff schedule
timeout, connection dropped after sending              ``unknown`` (looked up before any resend)
401 after one token refresh, bad credentials           row released, the task fails
lookup: several documents, or one with other content   ``dead`` (``DuplicateAlarm`` /
                                                       ``ContentMismatchAlarm``): nothing sent
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

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
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
from koywe_provider.hooks.rate_budget import RateBudgetTimeout
from koywe_provider.ledger import (
    AttemptKind,
    AttemptOutcome,
    AttemptRecord,
    ClaimedDocument,
    DocumentFacts,
    DocumentState,
    LeaseLostError,
    Ledger,
)
from koywe_provider.ledger.errors import DuplicateKoyweDocumentError
from koywe_provider.models.answers import DocumentAnswer
from koywe_provider.services.adoption import LookupVerdict, judge_lookup

RATE_LIMIT_TRIES = 3
RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 6 * 3600.0
MAX_ATTEMPTS = 10
#: ``[koywe] max_in_flight`` when unset: enough to fill 5 req/s at 1.6 s latency, 20 req/s at 400 ms.
DEFAULT_MAX_IN_FLIGHT = 8
LEASE_SECONDS = 900
#: States the retry DAG picks: ``in_flight`` only once its lease has expired (a crashed task).
RETRY_STATES: tuple[DocumentState, ...] = (
    DocumentState.RETRYABLE,
    DocumentState.UNKNOWN,
    DocumentState.IN_FLIGHT,
)
DUPLICATE_ALARM = "DuplicateAlarm"
log = logging.getLogger(__name__)
CONTENT_MISMATCH_ALARM = "ContentMismatchAlarm"
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
    :param max_in_flight: requests one issue task keeps under way at once (threads, each with its own
        HTTP session; every row still claimed, fenced and recorded on its own). The shared rate budget,
        not this number, sets the pace: with enough in flight one task reaches the contract rate at any
        latency. 1 = one after another. ``[koywe] max_in_flight``, default 8.
    """

    lease_seconds: int = LEASE_SECONDS
    retry_base_seconds: float = RETRY_BASE_SECONDS
    retry_max_seconds: float = RETRY_MAX_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    max_in_flight: int = 1

    @classmethod
    def from_config(cls) -> IssuancePolicy:
        """Read ``[koywe] lease_seconds, retry_base_seconds, retry_max_seconds, max_attempts`` from Airflow's configuration (``AIRFLOW__KOYWE__…`` env vars);
        missing options keep the defaults. Call at task run time, never at DAG parse time."""
        from airflow.sdk import conf

        return cls(
            lease_seconds=conf.getint("koywe", "lease_seconds", fallback=LEASE_SECONDS),
            retry_base_seconds=conf.getfloat("koywe", "retry_base_seconds", fallback=RETRY_BASE_SECONDS),
            retry_max_seconds=conf.getfloat("koywe", "retry_max_seconds", fallback=RETRY_MAX_SECONDS),
            max_attempts=conf.getint("koywe", "max_attempts", fallback=MAX_ATTEMPTS),
            max_in_flight=max(1, conf.getint("koywe", "max_in_flight", fallback=DEFAULT_MAX_IN_FLIGHT)),
        )


def retry_delay_seconds(
    attempts: int, *, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_MAX_SECONDS
) -> float:
    """Backoff before the next try of a document that has been sent ``attempts`` times (seconds).

    ``base * 2**(attempts-1)`` capped at ``cap``: 1, 2, 4, 8, 16, 32 min, … 6 h (no jitter: callers add it).
    """
    return min(cap, base * 2 ** max(0, attempts - 1))


@dataclass
class BatchOutcome:
    """Counts of one batch: what happened to each claimed row (a small XCom).

    ``retried``: rows taken from ``retryable``/``unknown``/expired ``in_flight`` or sent before;
    ``adopted``: found at Koywe by reference, with our content, and recorded without a POST;
    ``not_sent``: generated by Koywe but not sent to the tax bureau yet (``result.status`` 2, followed);
    ``duplicate_alarms``: several Koywe documents carry the reference; ``mismatch_alarms``: one does, with
    other content (both: row ``dead``, a person decides, nothing sent); ``lookups``: reference lookups
    made; ``rate_limited``: 429 answers; ``skipped``: rows another run holds.
    """

    issued: int = 0
    not_sent: int = 0
    adopted: int = 0
    rejected: int = 0
    retryable: int = 0
    unknown: int = 0
    dead: int = 0
    duplicate_alarms: int = 0
    mismatch_alarms: int = 0
    skipped: int = 0
    lookups: int = 0
    rate_limited: int = 0
    retried: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: BatchOutcome) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class Issuer:
    """Issues ledger rows with a :class:`KoyweHook`.

    :param owner: who holds the claims (task instance id), stored as the lease owner.
    :param policy: lease, backoff and give-up settings (default: :class:`IssuancePolicy` defaults).
    :param lease_seconds, max_attempts: override the policy's values.
    :param sleep: injectable sleeper (tests).
    :param on_recorded: called as ``on_recorded(doc, document, state, adopted=…)`` once a document Koywe
        holds (created, or adopted after a lookup) is recorded in the ledger, e.g. to archive its
        ``electronic_document`` (:class:`~koywe_provider.services.archive.ArchiveWriter`); its errors
        are logged, never raised into issuance.
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
        on_recorded: Callable[..., None] | None = None,
    ) -> None:
        policy = policy or IssuancePolicy()
        self.on_recorded = on_recorded
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
        steal_window: tuple[int, int] | None = None,
    ) -> BatchOutcome:
        """Issue the due rows with ``first_id <= id <= last_id`` in ``states`` (``in_flight``: expired
        leases only), lowest id first, each claimed atomically just before it is handled
        (:meth:`Ledger.claim_next`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional update on
        SQLite), so concurrent runs never handle the same row. ``references``: only those internal
        references. ``due_before``: default now (``next_attempt_at`` must have passed).

        ``steal_window``: ``(first_id, last_id)`` of the whole plan. Once its own range is done, every
        thread keeps claiming the lowest claimable row of the window that was due when this call
        started (rows of batches whose tasks have not started yet, or are slower), until none is left:
        no thread idles while rows wait for a pool slot, so the batches' waves and uneven ends cost no
        throughput. Ignored with ``references``. Rows handled here count in this call's outcome.

        Raises :class:`KoyweAuthError` / :class:`KoyweConfigurationError` when Koywe refuses the
        credentials (the row being handled is released first).
        """
        started = datetime.now(UTC)
        candidates = self.ledger.ids_in_range(first_id, last_id, states=states, due_before=due_before)
        if references is not None:
            wanted = set(self.ledger.ids_for_references(references, states=states))
            candidates = [pk for pk in candidates if pk in wanted]
            steal_window = None
        # Stealing: rows due at the start only, so a row this call made due again is never taken twice.
        steal = None if steal_window is None else (steal_window, due_before or started)
        workers = min(
            self.policy.max_in_flight, len(candidates) if steal is None else self.policy.max_in_flight
        )
        if workers <= 1:
            outcome = BatchOutcome()
            for pk in candidates:
                self._claim_and_issue(pk, states, due_before, outcome)
            if steal is not None:
                self._steal(steal, states, outcome)
            return outcome
        return self._issue_concurrently(candidates, states, due_before, workers, steal)

    def _claim_and_issue(
        self,
        pk: int,
        states: Collection[str | DocumentState],
        due_before: datetime | None,
        outcome: BatchOutcome,
    ) -> None:
        claimed = self._claim_one(states, due_before, pk, pk)
        if claimed is None:
            outcome.skipped += 1
            return
        self.issue_one(claimed, outcome)

    def _claim_one(
        self,
        states: Collection[str | DocumentState],
        due_before: datetime | None,
        first_id: int,
        last_id: int,
    ) -> ClaimedDocument | None:
        # One row at a time, so every lease starts when its row is handled.
        claimed = self.ledger.claim_next(
            owner=self.owner,
            limit=1,
            states=states,
            due_before=due_before,
            first_id=first_id,
            last_id=last_id,
            lease_seconds=self.lease_seconds,
        )
        return claimed[0] if claimed else None

    def _steal(
        self,
        steal: tuple[tuple[int, int], datetime],
        states: Collection[str | DocumentState],
        outcome: BatchOutcome,
        stop: threading.Event | None = None,
    ) -> None:
        """Claim and issue the lowest claimable row of the window, one at a time, until none is left."""
        (first_id, last_id), due_before = steal
        while stop is None or not stop.is_set():
            claimed = self._claim_one(states, due_before, first_id, last_id)
            if claimed is None:
                return
            self.issue_one(claimed, outcome)

    def _issue_concurrently(
        self,
        candidates: list[int],
        states: Collection[str | DocumentState],
        due_before: datetime | None,
        workers: int,
        steal: tuple[tuple[int, int], datetime] | None = None,
    ) -> BatchOutcome:
        """``workers`` threads take the candidates lowest id first, each with its own hook (its own HTTP
        session) and the same ledger, rate budget and token, then steal (:meth:`issue_range`). The first
        credentials error stops them all (rows not yet claimed stay as they were) and is raised."""
        queue = deque(candidates)
        lock = threading.Lock()
        stop = threading.Event()

        def work() -> BatchOutcome:
            issuer = self._for_thread()
            outcome = BatchOutcome()
            try:
                while not stop.is_set():
                    with lock:
                        if not queue:
                            break
                        pk = queue.popleft()
                    issuer._claim_and_issue(pk, states, due_before, outcome)
                if steal is not None:
                    issuer._steal(steal, states, outcome, stop)
            except BaseException:
                stop.set()
                raise
            return outcome

        total = BatchOutcome()
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="koywe-issue") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
        for future in futures:
            try:
                total.add(future.result())
            except BaseException as err:
                errors.append(err)
        if errors:
            raise errors[0]
        return total

    def _for_thread(self) -> Issuer:
        return Issuer(
            self.hook.clone(),
            self.ledger,
            owner=self.owner,
            run_id=self.run_id,
            task=self.task,
            policy=self.policy,
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            sleep=self.sleep,
            rng=random.Random(self.rng.random()),
            on_recorded=self.on_recorded,
        )

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
        lease_until = doc.lease_expires_at
        rate_limited_tries = 0
        while True:
            # The fence: the rate token first, then (one UPDATE) "still ours? extend the lease", then
            # the POST. No wait can fall between the lease check and the send.
            try:
                self.hook.reserve_request(timeout=self._time_left(lease_until))
            except RateBudgetTimeout as err:
                self._budget_exhausted(doc, err, outcome)
                return
            try:
                sent = self.ledger.mark_sent(doc.pk, owner=self.owner, lease_seconds=self.lease_seconds)
            except LeaseLostError:
                self.hook.release_reservation()
                outcome.skipped += 1  # another run took the row over: it will look it up first
                return
            lease_until = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
            started = time.monotonic()
            try:
                document = self.hook.create_document(doc.payload or {}, reference=doc.koywe_reference)
            except KoyweRateLimitedError as err:
                rate_limited_tries += 1
                outcome.rate_limited += 1
                self._attempt(doc, AttemptOutcome.RATE_LIMITED, err, started)
                wait = self.hook.pause_for_rate_limit(err, rng=self.rng)  # every task of the deployment
                left = self._time_left(lease_until, wait)
                if rate_limited_tries >= RATE_LIMIT_TRIES or (left is not None and left <= 0):
                    # The pause outlasts what this task may hold the row for: hand it back, due then.
                    self._retry_later(doc, err, outcome, sent=sent, delay=wait)
                    return
                continue
            except KoyweRejectedError as err:
                self._rejected(doc, err, outcome, started)
                return
            except KoyweTransientError as err:
                self._attempt(doc, AttemptOutcome.RETRYABLE, err, started)
                self._retry_later(doc, err, outcome, sent=sent)
                return
            except (KoyweAuthError, KoyweConfigurationError) as err:
                self._attempt(doc, AttemptOutcome.AUTH_ERROR, err, started)
                self.ledger.release(doc.pk, owner=self.owner)
                raise
            except (KoyweOutcomeUnknownError, KoyweError) as err:
                # Timeout or dropped connection after sending, a 2xx without document_id, or an answer
                # we cannot read: the document may exist at Koywe, so the next try looks it up first.
                self._attempt(doc, AttemptOutcome.UNKNOWN, err, started)
                self._unknown(doc, err, outcome, sent=sent)
                return
            self._record_document(doc, document, outcome, started, adopted=False)
            return

    def _time_left(self, lease_until: datetime | None, wait: float = 0.0) -> float | None:
        """Seconds a budget wait may take so that the POST still ends inside the lease (``None``: no
        lease to respect); ``wait`` is time already promised to a pause."""
        if lease_until is None:
            return None
        left = (lease_until - datetime.now(UTC)).total_seconds()
        return max(0.0, left - wait - float(self.hook.timeout) - LEASE_MARGIN_SECONDS)

    def _budget_exhausted(self, doc: ClaimedDocument, err: RateBudgetTimeout, outcome: BatchOutcome) -> None:
        """No rate token within the lease: hand the row back, due when the budget has room again, instead
        of sleeping on it (nothing was sent)."""
        reason = "paused after a 429" if err.paused else "exhausted"
        if self._guarded(
            self.ledger.mark_retryable,
            doc,
            outcome,
            error=f"the shared Koywe rate budget is {reason}; released before sending",
            error_class="RateBudgetTimeout",
            next_attempt_at=datetime.now(UTC) + timedelta(seconds=max(1.0, err.retry_after)),
        ):
            outcome.retryable += 1

    def _rejected(
        self, doc: ClaimedDocument, err: KoyweRejectedError, outcome: BatchOutcome, started
    ) -> None:
        self._attempt(doc, AttemptOutcome.REJECTED, err, started)
        answer = err.response if isinstance(err.response, DocumentAnswer) else None
        facts = DocumentFacts.from_answer(answer) if answer is not None else DocumentFacts()
        facts = DocumentFacts(
            **{
                **facts.as_dict(),
                "result_status": err.result_status,
                "result_error_message": err.error_message or None,
            }
        )
        if self._guarded(
            self.ledger.mark_rejected,
            doc,
            outcome,
            error=err.message,
            error_class=type(err).__name__,
            facts=facts,
        ):
            outcome.rejected += 1

    def _record_document(
        self,
        doc: ClaimedDocument,
        document: DocumentAnswer,
        outcome: BatchOutcome,
        started: float,
        *,
        adopted: bool,
    ) -> None:
        """Record a document Koywe holds (created now, or found by lookup): ``issued``, ``draft``,
        ``not_sent`` (result.status 2) or, when the bureau already refused it, ``rejected``."""
        facts = DocumentFacts.from_answer(document)
        attempt = self._record(
            doc,
            AttemptOutcome.ADOPTED if adopted else AttemptOutcome.ISSUED,
            None,
            started,
            kind=AttemptKind.LOOKUP if adopted else AttemptKind.CREATE,
            http_status=200 if adopted else 201,
        )
        try:
            state = self.ledger.mark_issued(
                doc.pk, owner=self.owner, facts=facts, adopted=adopted, attempt=attempt
            )
        except LeaseLostError:
            outcome.skipped += 1
            return
        except DuplicateKoyweDocumentError as err:
            self._held(doc, outcome, str(err), "DuplicateKoyweDocument")
            outcome.duplicate_alarms += 1
            return
        if self.on_recorded is not None:
            try:
                self.on_recorded(doc, document, state, adopted=adopted)
            except Exception:  # e.g. the archive: never undo or fail a recorded issuance
                log.exception("Ledger row %s (%s): recorded, but its follow-up failed", doc.pk, doc.reference)
        if state is DocumentState.REJECTED:
            outcome.rejected += 1
        elif adopted:
            outcome.adopted += 1
        elif state is DocumentState.NOT_SENT:
            outcome.not_sent += 1
        else:
            outcome.issued += 1

    def _handled_by_lookup(self, doc: ClaimedDocument, outcome: BatchOutcome) -> bool:
        """Look the row's current generation up by its Koywe reference; adopt a single match with our
        content; alarm on several or on other content. True when the row was handled."""
        rate_limited_tries = 0
        while True:
            outcome.lookups += 1
            started = time.monotonic()
            try:
                found = self.hook.find_documents_by_reference(doc.koywe_reference, account_id=doc.account_id)
                break
            except (KoyweAuthError, KoyweConfigurationError):
                self.ledger.release(doc.pk, owner=self.owner)
                raise
            except KoyweRateLimitedError as err:
                rate_limited_tries += 1
                outcome.rate_limited += 1
                wait = self.hook.pause_for_rate_limit(err, rng=self.rng)
                left = self._time_left(doc.lease_expires_at, wait)
                if rate_limited_tries < RATE_LIMIT_TRIES and (left is None or left > 0):
                    continue
                self._attempt(doc, AttemptOutcome.UNKNOWN, err, started, kind=AttemptKind.LOOKUP)
                self._unknown(doc, err, outcome, sent=doc.attempts, prefix="lookup failed: ", delay=wait)
                return True
            except KoyweError as err:
                # Could not check: sending now might duplicate; leave it for a later lookup.
                self._attempt(doc, AttemptOutcome.UNKNOWN, err, started, kind=AttemptKind.LOOKUP)
                self._unknown(doc, err, outcome, sent=doc.attempts, prefix="lookup failed: ")
                return True
        judgement = judge_lookup(doc.koywe_reference, doc.payload, found)
        if judgement.verdict is LookupVerdict.NOT_FOUND:
            self._attempt(
                doc, AttemptOutcome.NOT_FOUND, None, started, kind=AttemptKind.LOOKUP, http_status=200
            )
            return False
        if judgement.verdict is LookupVerdict.ADOPT:
            self._record_document(doc, judgement.document, outcome, started, adopted=True)
            return True
        duplicate = judgement.verdict is LookupVerdict.DUPLICATE
        self._attempt(
            doc,
            AttemptOutcome.DUPLICATE_ALARM if duplicate else AttemptOutcome.CONTENT_MISMATCH,
            None,
            started,
            kind=AttemptKind.LOOKUP,
            http_status=200,
            error=judgement.message,
        )
        self._held(doc, outcome, judgement.message, DUPLICATE_ALARM if duplicate else CONTENT_MISMATCH_ALARM)
        if duplicate:
            outcome.duplicate_alarms += 1
        else:
            outcome.mismatch_alarms += 1
        return True

    # --- helpers -------------------------------------------------------------------------------
    def _held(self, doc: ClaimedDocument, outcome: BatchOutcome, message: str, error_class: str) -> None:
        log.error("Ledger row %s (%s): %s", doc.pk, doc.reference, message)
        self._guarded(self.ledger.mark_held, doc, outcome, error=message, error_class=error_class)

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

    def _record(
        self,
        doc: ClaimedDocument,
        outcome: str,
        err: KoyweError | None,
        started: float,
        *,
        kind: str = AttemptKind.CREATE,
        http_status: int | None = None,
        error: str | None = None,
    ) -> AttemptRecord:
        return AttemptRecord(
            kind=kind,
            outcome=outcome,
            http_status=err.status_code if err is not None else http_status,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=error or (err.message if err is not None else None),
            run_id=self.run_id,
            task=self.task,
        )

    def _attempt(
        self, doc: ClaimedDocument, outcome: str, err: KoyweError | None, started: float, **kwargs
    ) -> None:
        self.ledger.record_attempt(doc.pk, self._record(doc, outcome, err, started, **kwargs))
