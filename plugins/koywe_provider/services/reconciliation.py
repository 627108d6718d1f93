"""Daily reconciliation, both ways: Koywe's documents of an issue-date window against the ledger.

Koywe's list is read with ``GET /documents?issue_date_from=…&issue_date_to=…``, 100 per page, so
``ceil(n / 100)`` calls for ``n`` documents, each through the shared rate budget — never one call per
document (seeds ``001_…``/``002_…``: "Search Documents" is the retrieval path). Each page is compared
with the ledger as it arrives. Every difference is one :class:`Discrepancy` of one kind, counted once:

=======================  ===================================================================================
kind                     what
=======================  ===================================================================================
``missing_in_ledger``    a Koywe document carrying an internal reference (``references[]`` code 5) that no
                         ledger row holds: issued out of band (no row has the reference), or lost by a crash
                         (the row exists and holds no Koywe document: ``adoptable``)
``missing_at_koywe``     a ledger row ``issued``/``draft``/``not_sent`` of the window that Koywe does not list
``duplicates``           several Koywe documents carry one reference (or Koywe lists another document under
                         a reference whose row holds one): one per reference
``status_differs``       Koywe's statuses carry news the ledger lacks, or both are final and disagree; the
                         news is written forwards into the ledger
``stuck``                ``unknown``/``in_flight`` since the first POST, ``not_sent`` (``result.status`` 2)
                         or ``issued`` with a tax-bureau validation still pending, for longer than
                         ``[koywe] stuck_after_seconds`` (6 h)
``missed_callbacks``     status news that polling found and no ``DOCUMENT.STATUSUPDATE`` callback brought
                         within that threshold (only when callbacks are expected)
=======================  ===================================================================================

Documents without any internal reference are not ours (``foreign``, or ``unidentified`` when the list
does not show references at all: Koywe's ``SimplifiedDocument`` has none); an earlier generation's
document is known. Neither is a difference.

``adopt``: each ``adoptable`` document is adopted through the adoption service
(:func:`~koywe_provider.services.adoption.judge_lookup`: only when its content — issuer and receiver tax
ids, document type, total, issue date — matches the row's payload), with the row claimed under a lease
like the issuing engine does; a content mismatch holds the row for a person (``ContentMismatchAlarm``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import (
    CLAIMABLE,
    AttemptKind,
    AttemptOutcome,
    AttemptRecord,
    DocumentFacts,
    LeaseLostError,
    Ledger,
)
from koywe_provider.ledger.errors import DuplicateKoyweDocumentError, InvalidTransitionError
from koywe_provider.ledger.reconciliation import (
    documents_koywe_should_list,
    known_documents,
    missed_callbacks,
    rows_by_reference,
    stuck_rows,
)
from koywe_provider.ledger.status_updates import apply_status_reports
from koywe_provider.ledger.values import is_validation_final, merge_statuses, sending_rank
from koywe_provider.models.answers import LIST_PAGE_SIZE, DocumentAnswer
from koywe_provider.models.references import koywe_reference, split_koywe_reference
from koywe_provider.services.adoption import LookupVerdict, judge_lookup
from koywe_provider.services.issuance import CONTENT_MISMATCH_ALARM, DUPLICATE_ALARM

log = logging.getLogger(__name__)

#: Every discrepancy kind, in report order.
KINDS: tuple[str, ...] = (
    "missing_in_ledger",
    "missing_at_koywe",
    "duplicates",
    "status_differs",
    "stuck",
    "missed_callbacks",
)
#: Status fields compared with Koywe's (the counterparty's only when Koywe's list reports it).
COMPARED_STATUSES = (
    "document_status",
    "counterparty_status",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
)
DEFAULT_STUCK_AFTER_SECONDS = 6 * 3600
#: Most discrepancies of one kind listed by name in a report (all are counted).
MAX_LISTED = 1000
#: Lease (seconds) under which the reconciliation holds a row while it adopts it.
ADOPTION_LEASE_SECONDS = 300
_FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReconciliationPolicy:
    """``[koywe]`` settings of the reconciliation, read at task run time.

    :param stuck_after_seconds: ``stuck_after_seconds`` (default 21600 = 6 h): a row ``unknown``,
        ``in_flight``, ``not_sent`` or waiting for the tax bureau longer than this is stuck, and status
        news that polling found this long ago without a callback since is a missed callback.
    :param callbacks_expected: ``callbacks_expected`` = ``auto`` (default: true when the Airflow
        connection ``koywe_callbacks``, the callback receiver's credentials, exists), ``true`` or
        ``false``: whether polling's news means a callback went missing.
    """

    stuck_after_seconds: float = DEFAULT_STUCK_AFTER_SECONDS
    callbacks_expected: bool = False

    @classmethod
    def from_config(cls) -> ReconciliationPolicy:
        from airflow.sdk import conf

        expected = conf.get("koywe", "callbacks_expected", fallback="auto").strip().lower()
        if expected in ("auto", ""):
            callbacks = _connection_exists("koywe_callbacks")
        else:
            callbacks = expected in ("1", "true", "yes", "on")
        return cls(
            stuck_after_seconds=conf.getfloat(
                "koywe", "stuck_after_seconds", fallback=DEFAULT_STUCK_AFTER_SECONDS
            ),
            callbacks_expected=callbacks,
        )


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


@dataclass(slots=True)
class Discrepancy:
    """One difference between Koywe and the ledger (see the module docstring for the ``kind``\\ s).

    ``reference`` is the internal reference (the ledger's, without a generation suffix, when known),
    ``koywe_document_ids`` the Koywe documents involved, ``ledger_id``/``state`` the ledger row when there
    is one, ``detail`` one line saying what differs, ``resolution`` what this run did about it
    (``adopted``, ``applied``, ``held`` …; ``None``: nothing), ``adoptable`` whether ``adopt`` may take it.
    """

    kind: str
    account_id: str | None
    reference: str | None
    detail: str
    koywe_document_ids: list[str] = field(default_factory=list)
    document_number: str | None = None
    ledger_id: int | None = None
    state: str | None = None
    adoptable: bool = False
    resolution: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconciliationResult:
    """A reconciliation of the window ``issue_date_from``..``issue_date_to`` (``account_id``: only that
    account): Koywe's ``listed`` documents read in ``list_calls`` calls, how many were ``matched`` to a
    ledger row, of an ``earlier_generation``, ``foreign`` (references, none internal) or
    ``unidentified`` (no references shown), ``expected`` ledger documents, and the discrepancies."""

    issue_date_from: str
    issue_date_to: str
    account_id: str | None = None
    listed: int = 0
    list_calls: int = 0
    matched: int = 0
    earlier_generation: int = 0
    foreign: int = 0
    unidentified: int = 0
    expected: int = 0
    adopt: bool = False
    callbacks_expected: bool = False
    stuck_after_seconds: float = DEFAULT_STUCK_AFTER_SECONDS
    statuses_applied: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    unidentified_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{kind: n}`` for every kind, plus ``differences`` (all of them), ``adopted`` and
        ``unresolved`` (differences not adopted), ``listed``, ``list_calls``, ``adoptable``."""
        counts = dict.fromkeys(KINDS, 0)
        for d in self.discrepancies:
            counts[d.kind] += 1
        counts["differences"] = len(self.discrepancies)
        counts["adoptable"] = sum(1 for d in self.discrepancies if d.adoptable)
        counts["adopted"] = sum(1 for d in self.discrepancies if d.resolution == "adopted")
        counts["unresolved"] = counts["differences"] - counts["adopted"]
        counts["listed"] = self.listed
        counts["list_calls"] = self.list_calls
        return counts

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        return data


class Reconciler:
    """Compares Koywe's documents of a window with the ledger (see the module docstring).

    :param owner: lease owner while adopting (the task instance). :param clock: now, aware UTC
        (injectable; default the ledger's clock).
    """

    def __init__(
        self,
        hook: KoyweHook,
        ledger: Ledger,
        *,
        policy: ReconciliationPolicy | None = None,
        owner: str = "reconciliation",
        run_id: str | None = None,
        task: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.policy = policy or ReconciliationPolicy()
        self.owner = owner
        self.run_id = run_id
        self.task = task
        self.clock = clock or ledger._now

    def run(
        self,
        issue_date_from: str,
        issue_date_to: str,
        *,
        account_id: str | None = None,
        adopt: bool = False,
    ) -> ReconciliationResult:
        """Reconcile the window (``YYYY-MM-DD``, both ends included).

        Raises the hook's exceptions when a page cannot be read (status news of the pages read before
        are already written to the ledger); ``ValueError`` for a bad window.
        """
        issue_date_from, issue_date_to = _window(issue_date_from, issue_date_to)
        account = None if account_id in (None, "") else str(account_id)
        result = ReconciliationResult(
            issue_date_from,
            issue_date_to,
            account,
            adopt=adopt,
            callbacks_expected=self.policy.callbacks_expected,
            stuck_after_seconds=self.policy.stuck_after_seconds,
        )
        started = self.clock()
        listed_ids: set[str] = set()
        # internal Koywe reference (account, number) -> every listed Koywe document carrying it
        carriers: dict[tuple[str, str], dict[str, DocumentAnswer]] = defaultdict(dict)
        unrecorded: dict[str, DocumentAnswer] = {}
        calls_before = self.hook.calls
        try:
            for page in _pages(self._list(issue_date_from, issue_date_to, account)):
                self._compare_page(page, result, listed_ids, carriers, unrecorded)
        finally:
            result.list_calls = self.hook.calls - calls_before
        self._unrecorded(result, carriers, unrecorded)
        missing = self._missing_at_koywe(result, listed_ids, started)
        self._stuck(result, missing)
        self._missed_callbacks(result)
        if adopt:
            self._adopt(result, unrecorded)
        return result

    # --- listing ---------------------------------------------------------------------------------
    def _list(
        self, issue_date_from: str, issue_date_to: str, account: str | None
    ) -> Iterator[DocumentAnswer]:
        filters: dict[str, Any] = {
            "issue_date_from": issue_date_from,
            "issue_date_to": issue_date_to,
            "per_page": LIST_PAGE_SIZE,
        }
        if account is not None:
            filters["account_id"] = account
        for document in self.hook.list_documents(**filters):
            if account is not None and document.owner_account_id not in (None, account):
                continue
            yield document

    def _compare_page(
        self,
        page: list[DocumentAnswer],
        result: ReconciliationResult,
        listed_ids: set[str],
        carriers: dict[tuple[str, str], dict[str, DocumentAnswer]],
        unrecorded: dict[str, DocumentAnswer],
    ) -> None:
        known = known_documents(self.ledger, (d.document_id for d in page if d.document_id))
        news: list[DocumentFacts] = []
        differing: list[Discrepancy] = []
        for document in page:
            koywe_id = document.document_id
            if koywe_id is None or koywe_id in listed_ids:
                continue
            listed_ids.add(koywe_id)
            result.listed += 1
            account = document.owner_account_id or result.account_id or ""
            for number in dict.fromkeys(document.internal_references):
                carriers[(account, number)][koywe_id] = document
            found = known.get(koywe_id)
            if found is None:
                if document.internal_references:
                    unrecorded[koywe_id] = document
                elif document.references:
                    result.foreign += 1
                else:
                    result.unidentified += 1
                    if len(result.unidentified_ids) < MAX_LISTED:
                        result.unidentified_ids.append(koywe_id)
                continue
            if found.earlier_generation is not None:
                result.earlier_generation += 1
                continue
            result.matched += 1
            row = found.row
            facts = DocumentFacts.from_answer(document)
            differences = status_differences(row, facts)
            if differences:
                news.append(facts)
                differing.append(
                    Discrepancy(
                        "status_differs",
                        row["account_id"],
                        row["reference"],
                        "; ".join(differences),
                        [koywe_id],
                        row["document_number"],
                        row["id"],
                        row["state"],
                    )
                )
        if news:
            # Written forwards only, like polling: the ledger catches up with what Koywe says.
            counts = apply_status_reports(self.ledger, news, source="reconciliation")
            result.statuses_applied += counts.changed
            for discrepancy in differing:
                discrepancy.resolution = "applied"
        result.discrepancies.extend(differing)

    # --- Koywe has, the ledger does not ---------------------------------------------------------
    def _unrecorded(
        self,
        result: ReconciliationResult,
        carriers: dict[tuple[str, str], dict[str, DocumentAnswer]],
        unrecorded: dict[str, DocumentAnswer],
    ) -> None:
        """Each unrecorded document with an internal reference: a duplicate (its reference has several
        documents, or its row holds another one), else missing from the ledger (out of band or lost)."""
        keys: dict[str, tuple[str, str, int]] = {}
        for koywe_id, document in unrecorded.items():
            account = document.owner_account_id or result.account_id or ""
            number = document.internal_references[0]
            base, generation = split_koywe_reference(number)
            keys[koywe_id] = (account, base, generation)
        rows = rows_by_reference(self.ledger, {(a, b) for a, b, _ in keys.values()})
        reported: set[tuple[str, str]] = set()
        for koywe_id, document in unrecorded.items():
            account, base, generation = keys[koywe_id]
            number = koywe_reference(base, generation)
            group = carriers.get((account, number), {})
            row = rows.get((account, base))
            holds_other = (
                row is not None
                and row["generation"] == generation
                and row["koywe_document_id"] not in (None, koywe_id)
            )
            if len(group) > 1 or holds_other:
                if (account, number) in reported:
                    continue
                reported.add((account, number))
                ids = sorted(set(group) | ({row["koywe_document_id"]} if holds_other else set()))
                ledger_holds = (
                    f"; the ledger holds {row['koywe_document_id']}"
                    if row and row["koywe_document_id"]
                    else ""
                )
                result.discrepancies.append(
                    Discrepancy(
                        "duplicates",
                        account or None,
                        base,
                        f"{len(ids)} Koywe documents carry reference {number!r} ({', '.join(ids)}){ledger_holds}",
                        ids,
                        document.document_number,
                        row["id"] if row else None,
                        row["state"] if row else None,
                    )
                )
                continue
            if row is None:
                detail = f"Koywe document {koywe_id} carries reference {number!r}, which no ledger row has (out of band)"
                result.discrepancies.append(
                    Discrepancy(
                        "missing_in_ledger",
                        account or None,
                        base,
                        detail,
                        [koywe_id],
                        document.document_number,
                    )
                )
                continue
            adoptable = row["generation"] == generation and row["state"] in {s.value for s in CLAIMABLE}
            if row["generation"] == generation:
                detail = (
                    f"Koywe document {koywe_id} carries reference {number!r}; its ledger row is "
                    f"{row['state']} without a Koywe document (lost by a crash?)"
                )
            else:
                detail = (
                    f"Koywe document {koywe_id} carries reference {number!r} (generation {generation}); "
                    f"its ledger row is at generation {row['generation']}, {row['state']}"
                )
            result.discrepancies.append(
                Discrepancy(
                    "missing_in_ledger",
                    account or None,
                    base,
                    detail,
                    [koywe_id],
                    document.document_number,
                    row["id"],
                    row["state"],
                    adoptable=adoptable,
                )
            )

    # --- the ledger has, Koywe does not ---------------------------------------------------------
    def _missing_at_koywe(
        self, result: ReconciliationResult, listed_ids: set[str], started: datetime
    ) -> set[int]:
        expected = documents_koywe_should_list(
            self.ledger,
            issue_date_from=result.issue_date_from,
            issue_date_to=result.issue_date_to,
            account_id=result.account_id,
            issued_before=started,
        )
        result.expected = len(expected)
        missing: set[int] = set()
        for row in expected:
            if str(row["koywe_document_id"]) in listed_ids:
                continue
            missing.add(row["id"])
            result.discrepancies.append(
                Discrepancy(
                    "missing_at_koywe",
                    row["account_id"],
                    row["reference"],
                    f"the ledger has it {row['state']} as Koywe document {row['koywe_document_id']}, which "
                    f"Koywe does not list in the window",
                    [str(row["koywe_document_id"])],
                    row["document_number"],
                    row["id"],
                    row["state"],
                )
            )
        return missing

    # --- stuck rows and missed callbacks -------------------------------------------------------
    def _stuck(self, result: ReconciliationResult, skip: set[int]) -> None:
        older_than = self.clock() - timedelta(seconds=self.policy.stuck_after_seconds)
        differing = {d.ledger_id for d in result.discrepancies if d.kind == "status_differs"}
        for row in stuck_rows(
            self.ledger,
            issue_date_from=result.issue_date_from,
            issue_date_to=result.issue_date_to,
            older_than=older_than,
            account_id=result.account_id,
        ):
            if row["id"] in skip or row["id"] in differing:
                continue  # already counted: Koywe does not have it, or its news was just found
            what = {
                "unknown": "outcome unknown (no answer to the POST)",
                "in_flight": "in flight",
                "not_sent": "generated but not sent to the tax bureau (result.status 2)",
                "bureau_pending": "waiting for the tax bureau's validation",
            }[row["stuck"]]
            result.discrepancies.append(
                Discrepancy(
                    "stuck",
                    row["account_id"],
                    row["reference"],
                    f"{row['stuck']}: {what} since {row['since'].isoformat(timespec='seconds')}",
                    [str(row["koywe_document_id"])] if row["koywe_document_id"] else [],
                    row["document_number"],
                    row["id"],
                    row["state"],
                )
            )

    def _missed_callbacks(self, result: ReconciliationResult) -> None:
        if not self.policy.callbacks_expected:
            return
        older_than = self.clock() - timedelta(seconds=self.policy.stuck_after_seconds)
        for row in missed_callbacks(
            self.ledger,
            issue_date_from=result.issue_date_from,
            issue_date_to=result.issue_date_to,
            older_than=older_than,
            account_id=result.account_id,
        ):
            last = row["last_callback_at"]
            result.discrepancies.append(
                Discrepancy(
                    "missed_callbacks",
                    row["account_id"],
                    row["reference"],
                    f"polling found status news at {row['last_polled_news_at'].isoformat(timespec='seconds')}; "
                    + (f"last callback {last.isoformat(timespec='seconds')}" if last else "no callback ever"),
                    [str(row["koywe_document_id"])] if row["koywe_document_id"] else [],
                    row["document_number"],
                    row["id"],
                    row["state"],
                )
            )

    # --- adoption ------------------------------------------------------------------------------
    def _adopt(self, result: ReconciliationResult, unrecorded: dict[str, DocumentAnswer]) -> None:
        for discrepancy in result.discrepancies:
            if discrepancy.kind != "missing_in_ledger":
                continue
            if discrepancy.ledger_id is None:
                discrepancy.resolution = "not adopted: no ledger row has this reference (out of band)"
                continue
            if not discrepancy.adoptable:
                discrepancy.resolution = "not adoptable: a person decides (re-queue the row to look it up)"
                continue
            document = unrecorded[discrepancy.koywe_document_ids[0]]
            discrepancy.resolution = self._adopt_one(discrepancy, document)

    def _adopt_one(self, discrepancy: Discrepancy, document: DocumentAnswer) -> str:
        claimed = self.ledger.claim(
            discrepancy.ledger_id,
            owner=self.owner,
            lease_seconds=ADOPTION_LEASE_SECONDS,
            states=CLAIMABLE,
            due_before=_FAR_FUTURE,
        )
        if claimed is None:
            return "not adopted: another task holds the row, or it changed"
        judgement = judge_lookup(claimed.koywe_reference, claimed.payload, [document])
        attempt = AttemptRecord(
            kind=AttemptKind.LOOKUP,
            outcome=AttemptOutcome.ADOPTED,
            http_status=200,
            run_id=self.run_id,
            task=self.task,
        )
        if judgement.verdict is LookupVerdict.ADOPT:
            try:
                state = self.ledger.mark_issued(
                    claimed.pk,
                    owner=self.owner,
                    facts=DocumentFacts.from_answer(document),
                    adopted=True,
                    attempt=attempt,
                )
            except (DuplicateKoyweDocumentError, InvalidTransitionError) as err:
                self._hold(claimed.pk, str(err), DUPLICATE_ALARM, attempt)
                return "held: duplicate alarm"
            except LeaseLostError:
                return "not adopted: the row was taken over"
            log.info("Adopted Koywe document %s for %s (%s)", document.document_id, claimed.reference, state)
            return "adopted"
        alarm = DUPLICATE_ALARM if judgement.verdict is LookupVerdict.DUPLICATE else CONTENT_MISMATCH_ALARM
        outcome = (
            AttemptOutcome.DUPLICATE_ALARM
            if judgement.verdict is LookupVerdict.DUPLICATE
            else AttemptOutcome.CONTENT_MISMATCH
        )
        self._hold(
            claimed.pk,
            judgement.message,
            alarm,
            AttemptRecord(
                kind=AttemptKind.LOOKUP,
                outcome=outcome,
                http_status=200,
                error=judgement.message,
                run_id=self.run_id,
                task=self.task,
            ),
        )
        discrepancy.detail += f"; {judgement.message}"
        return f"held: {alarm}"

    def _hold(self, pk: int, message: str, alarm: str, attempt: AttemptRecord) -> None:
        log.error("Ledger row %s: %s", pk, message)
        with contextlib.suppress(LeaseLostError):  # taken over: that task decides
            self.ledger.mark_held(pk, owner=self.owner, error=message, error_class=alarm, attempt=attempt)


def status_differences(row: dict[str, Any], facts: DocumentFacts) -> list[str]:
    """``["field: ledger X, Koywe Y", …]`` where Koywe's statuses (``facts``) carry news the ledger row
    lacks (what a forwards-only merge would write), or where both are final and disagree (the tax
    bureau's validation or sending). A field Koywe does not report is not compared; a ledger ahead of
    Koywe's list (a callback that arrived while the list was read) is not a difference."""
    stored = {name: row.get(name) for name in COMPARED_STATUSES}
    news = merge_statuses(stored, facts)
    out = [f"{name}: ledger {stored[name]}, Koywe {news[name]}" for name in COMPARED_STATUSES if name in news]
    ours, theirs = stored["taxbureau_validation_status"], facts.taxbureau_validation_status
    if (
        "taxbureau_validation_status" not in news
        and is_validation_final(ours)
        and is_validation_final(theirs)
        and ours != theirs
    ):
        out.append(f"taxbureau_validation_status: ledger {ours}, Koywe {theirs} (both final)")
    ours, theirs = stored["taxbureau_sending_status"], facts.taxbureau_sending_status
    if (
        "taxbureau_sending_status" not in news
        and ours is not None
        and theirs is not None
        and sending_rank(ours) == sending_rank(theirs) == 2
        and ours != theirs
    ):
        out.append(f"taxbureau_sending_status: ledger {ours}, Koywe {theirs} (both final)")
    return out


def _pages(documents: Iterable[DocumentAnswer], size: int = LIST_PAGE_SIZE) -> Iterator[list[DocumentAnswer]]:
    page: list[DocumentAnswer] = []
    for document in documents:
        page.append(document)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _window(issue_date_from: Any, issue_date_to: Any) -> tuple[str, str]:
    try:
        start = date.fromisoformat(str(issue_date_from).strip()[:10])
        end = date.fromisoformat(str(issue_date_to).strip()[:10])
    except ValueError:
        raise ValueError(
            f"issue_date_from/issue_date_to must be dates YYYY-MM-DD, got {issue_date_from!r}, {issue_date_to!r}"
        ) from None
    if end < start:
        raise ValueError(f"issue_date_to {end} is before issue_date_from {start}")
    return start.isoformat(), end.isoformat()


# --- the report ----------------------------------------------------------------------------------
def build_report(
    result: ReconciliationResult, *, dag_id: str, run_id: str, archive: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report of one reconciliation run: window, counts, every discrepancy (at most
    :data:`MAX_LISTED` of each kind) and, when given, the archive pass's counts. Carries references, Koywe
    ids and statuses — never payloads or credentials."""
    data = result.as_dict()
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for d in result.discrepancies:
        if len(by_kind[d.kind]) < MAX_LISTED:
            by_kind[d.kind].append(d.as_dict())
    data.pop("discrepancies")
    return {"dag_id": dag_id, "run_id": run_id, **data, "discrepancies": by_kind, "archive": archive or {}}


_TITLES = {
    "missing_in_ledger": "At Koywe, not in the ledger",
    "missing_at_koywe": "In the ledger, not at Koywe",
    "duplicates": "Several Koywe documents for one reference",
    "status_differs": "Statuses that differ",
    "stuck": "Stuck rows",
    "missed_callbacks": "Callbacks that never came (polling found the news)",
}


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`build_report`'s dict (the daily report's style)."""
    counts = report["counts"]
    account = f", account {report['account_id']}" if report.get("account_id") else ""
    lines = [
        f"# Koywe reconciliation — {report['dag_id']} / {report['run_id']}",
        "",
        f"Issue dates {report['issue_date_from']} to {report['issue_date_to']}{account}: Koywe listed "
        f"{report['listed']} document(s) in {report['list_calls']} call(s); the ledger expected "
        f"{report['expected']}.",
        "",
    ]
    if counts["unresolved"]:
        lines += [f"**{counts['unresolved']} difference(s) need attention.**", ""]
    else:
        lines += [
            "**Koywe and the ledger agree.**"
            if not counts["differences"]
            else "**Every difference was adopted.**",
            "",
        ]
    lines += ["| difference | count |", "|---|---|"]
    lines += [f"| {_TITLES[kind]} (`{kind}`) | {counts[kind]} |" for kind in KINDS]
    lines += [
        "",
        f"- matched: {report['matched']}; earlier generations: {report['earlier_generation']}; "
        f"not ours (no internal reference): {report['foreign']}; references not shown by the list: "
        f"{report['unidentified']}",
        f"- statuses written forwards into the ledger: {report['statuses_applied']}",
        f"- adoptable: {counts['adoptable']}; adopted: {counts['adopted']}"
        + ("" if report.get("adopt") else " (run with `adopt` to adopt them)"),
        f"- stuck after: {report['stuck_after_seconds']:g} s; callbacks expected: "
        f"{'yes' if report['callbacks_expected'] else 'no'}",
    ]
    for kind in KINDS:
        items = report["discrepancies"].get(kind) or []
        if not items:
            continue
        lines += ["", f"## {_TITLES[kind]} ({counts[kind]})", ""]
        lines += [
            "| reference | account | Koywe id(s) | folio | ledger row | what | done |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in items:
            row = f"{d['ledger_id']} ({d['state']})" if d.get("ledger_id") is not None else ""
            lines.append(
                f"| {_cell(d.get('reference') or '')} | {_cell(d.get('account_id') or '')} | "
                f"{_cell(', '.join(d.get('koywe_document_ids') or []))} | {_cell(d.get('document_number') or '')} | "
                f"{row} | {_cell(d['detail'])} | {_cell(d.get('resolution') or '')} |"
            )
    archive = report.get("archive") or {}
    if archive:
        lines += ["", "## Legal archive", ""]
        lines += [
            f"- {name.replace('_', ' ')}: {value}" for name, value in archive.items() if name != "errors"
        ]
        for error in (archive.get("errors") or [])[:MAX_LISTED]:
            lines.append(f"- error: {_cell(error)}")
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")[:500]


def write_report(report: dict[str, Any], directory) -> tuple[Any, Any]:
    """Write ``<directory>/<dag_id>/<run_id>.json`` and ``.md`` (an ``ObjectStoragePath``; created when
    missing); returns both paths."""
    folder = directory / report["dag_id"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", report["run_id"])
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def reconciliation_problems(task_states: dict[str, str | None], counts: dict[str, int] | None) -> list[str]:
    """Why a reconciliation run must fail (``[]``: Koywe and the ledger agree, or every difference was
    adopted): failed tasks, no reconciliation, unresolved differences (each kind named with its count)."""
    problems = []
    failed = sorted(t for t, s in task_states.items() if s in ("failed", "upstream_failed"))
    if failed:
        problems.append(f"task(s) {', '.join(failed)} failed or did not run")
    if counts is None:
        problems.append("no reconciliation was made")
        return problems
    if counts.get("unresolved"):
        kinds = ", ".join(f"{counts[k]} {k}" for k in KINDS if counts.get(k))
        problems.append(f"{counts['unresolved']} difference(s) between Koywe and the ledger ({kinds})")
    return problems


__all__ = [
    "DEFAULT_STUCK_AFTER_SECONDS",
    "KINDS",
    "Discrepancy",
    "ReconciliationPolicy",
    "ReconciliationResult",
    "Reconciler",
    "build_report",
    "reconciliation_problems",
    "render_markdown",
    "status_differences",
    "write_report",
]
