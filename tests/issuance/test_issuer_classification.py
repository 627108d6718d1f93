"""Each classification path of the Issuer, against the sandbox over HTTP with injected faults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from koywe_provider.exceptions import KoyweAuthError
from koywe_provider.services.issuance import (
    DUPLICATE_ALARM,
    RETRY_STATES,
    IssuancePolicy,
    retry_delay_seconds,
)
from koywe_provider.services.report import build_report, render_markdown

LATER = datetime(2999, 1, 1, tzinfo=UTC)  # "due or not": ignore next_attempt_at in a second pass


def kinds(ledger, pk):
    return [(a["kind"], a["outcome"]) for a in ledger.attempts_for(pk)]


def test_first_issuance_posts_without_lookup(ledger, ingest, make_issuer, clean_sandbox, factura):
    ids = ingest(ledger, {"R-OK-1": factura(), "R-OK-2": factura(net=20_000)})
    outcome = make_issuer(ledger).issue_range(min(ids.values()), max(ids.values()))
    assert (outcome.issued, outcome.lookups, outcome.retried) == (2, 0, 0)
    row = ledger.get(ids["R-OK-1"])
    assert row["state"] == "issued" and row["attempts"] == 1
    assert row["koywe_document_id"] and row["document_number"]
    stats = clean_sandbox.stats()
    assert (stats["documents_created"], stats["lookups"], stats["auth_calls"]) == (2, 0, 1)
    assert kinds(ledger, ids["R-OK-1"]) == [("create", "issued")]


def test_lost_response_is_unknown_then_adopted_by_lookup(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-LOST": factura()})["R-LOST"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(lost_response_rate=1.0)
    first = issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(lost_response_rate=0)
    row = ledger.get(pk)
    assert first.unknown == 1 and row["state"] == "unknown" and row["attempts"] == 1
    assert row["next_attempt_at"] > datetime.now(UTC)  # backoff: not due at once
    assert issuer.issue_range(pk, pk, states=RETRY_STATES).as_dict()["retried"] == 0  # not due yet

    second = issuer.issue_range(pk, pk, states=RETRY_STATES, due_before=LATER)
    assert (second.adopted, second.lookups, second.retried, second.issued) == (1, 1, 1, 0)
    row = ledger.get(pk)
    created = clean_sandbox.documents()
    assert row["state"] == "issued" and row["attempts"] == 1  # adopted, not sent again
    assert [str(d["document_id"]) for d in created] == [row["koywe_document_id"]]
    assert clean_sandbox.stats()["duplicate_references"] == 0
    assert kinds(ledger, pk) == [("create", "unknown"), ("lookup", "adopted")]


def test_timeout_after_send_is_unknown(ledger, ingest, make_issuer, koywe_conn, clean_sandbox, factura):
    pk = ingest(ledger, {"R-SLOW": factura()})["R-SLOW"]
    issuer = make_issuer(ledger, conn_id=koywe_conn("koywe_slow", timeout=1))
    issuer.hook.get_token()
    clean_sandbox.set_faults(slow_response_rate=1.0, slow_response_ms=2500)
    outcome = issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(slow_response_rate=0)
    assert outcome.unknown == 1
    assert ledger.get(pk)["state"] == "unknown"
    assert ledger.get(pk)["last_error_class"] == "KoyweOutcomeUnknownError"


def test_5xx_is_retryable_at_the_backoff_schedule(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-5XX": factura()})["R-5XX"]
    issuer = make_issuer(ledger, policy=IssuancePolicy(retry_base_seconds=600))
    issuer.hook.get_token()
    clean_sandbox.set_faults(error_5xx_rate=1.0)
    before = datetime.now(UTC)
    outcome = issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(error_5xx_rate=0)
    row = ledger.get(pk)
    assert outcome.retryable == 1 and row["state"] == "retryable"
    assert row["last_error_class"] == "KoyweTransientError"
    # first retry: base (600 s) + up to 10 % jitter
    assert (
        before + timedelta(seconds=600)
        <= row["next_attempt_at"]
        <= datetime.now(UTC) + timedelta(seconds=661)
    )
    assert clean_sandbox.stats()["documents_created"] == 0

    # the retry looks up first (a 5xx may hide a created document), finds nothing, POSTs once
    again = issuer.issue_range(pk, pk, states=RETRY_STATES, due_before=LATER)
    assert (again.lookups, again.issued) == (1, 1)
    assert ledger.get(pk)["attempts"] == 2
    assert kinds(ledger, pk) == [("create", "retryable"), ("lookup", "not_found"), ("create", "issued")]


def test_400_is_rejected_with_kowyes_message(ledger, ingest, make_issuer, clean_sandbox, factura):
    bad = factura()
    bad["details"] = []
    pk = ingest(ledger, {"R-400": bad})["R-400"]
    outcome = make_issuer(ledger).issue_range(pk, pk)
    row = ledger.get(pk)
    assert outcome.rejected == 1 and row["state"] == "rejected"
    assert "details must be a non-empty list" in row["last_error"]
    assert row["next_attempt_at"] is None
    # permanent: neither the daily nor the retry selection picks it again
    assert ledger.ids_in_range(pk, pk, states=RETRY_STATES, due_before=LATER) == []


def test_429_waits_retry_after_slows_the_batch_then_issues(
    ledger, ingest, make_issuer, clean_sandbox, factura, monkeypatch
):
    pk = ingest(ledger, {"R-429": factura()})["R-429"]
    issuer = make_issuer(ledger)
    pauses: list[float] = []
    monkeypatch.setattr(issuer.hook.budget, "pause", pauses.append)
    # request 1 (/auth) passes, the next 2 get 429 with Retry-After 0, the 4th passes
    clean_sandbox.set_faults(burst_429={"every": 1, "length": 2, "retry_after": 0})
    outcome = issuer.issue_range(pk, pk)
    assert (outcome.rate_limited, outcome.issued) == (2, 1)
    # the shared budget (every task of the deployment) pauses; Retry-After 0 still waits the 30 s floor,
    # doubling on the second 429 in a row, with up to 20 % jitter
    assert len(pauses) == 2
    assert 30 <= pauses[0] <= 36 and 60 <= pauses[1] <= 72
    assert ledger.get(pk)["attempts"] == 3
    assert clean_sandbox.stats()["documents_created"] == 1


def test_429_three_times_is_retryable(ledger, ingest, make_issuer, clean_sandbox, factura, monkeypatch):
    pk = ingest(ledger, {"R-429x3": factura()})["R-429x3"]
    issuer = make_issuer(ledger)
    pauses: list[float] = []
    monkeypatch.setattr(issuer.hook.budget, "pause", pauses.append)
    clean_sandbox.set_faults(burst_429={"every": 1, "length": 5, "retry_after": 0})
    outcome = issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(burst_429=None)
    row = ledger.get(pk)
    assert (outcome.rate_limited, outcome.retryable) == (3, 1)
    assert len(pauses) == 3
    assert row["state"] == "retryable" and row["attempts"] == 3 and row["next_attempt_at"] > datetime.now(UTC)


def test_backoff_schedule():
    assert [retry_delay_seconds(n) / 60 for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 360]
    assert retry_delay_seconds(0) == 60
    assert retry_delay_seconds(3, base=1, cap=3) == 3


def test_revoked_token_refreshes_once_and_issues(ledger, ingest, make_issuer, clean_sandbox, factura):
    ids = ingest(ledger, {"R-REV-1": factura(), "R-REV-2": factura(net=5_000)})
    issuer = make_issuer(ledger)
    issuer.hook.get_token()
    clean_sandbox.set_faults(revoke_tokens=True)
    outcome = issuer.issue_range(min(ids.values()), max(ids.values()))
    assert outcome.issued == 2
    stats = clean_sandbox.stats()
    assert stats["auth_calls"] == 2 and stats["revocations"] == 1


def test_bad_credentials_fail_the_task_and_release_the_row(
    ledger, ingest, make_issuer, koywe_conn, clean_sandbox, factura
):
    pk = ingest(ledger, {"R-AUTH": factura()})["R-AUTH"]
    creds = {**clean_sandbox.credentials, "password": "wrong-password"}
    issuer = make_issuer(ledger, conn_id=koywe_conn("koywe_badcreds", credentials=creds))
    with pytest.raises(KoyweAuthError):
        issuer.issue_range(pk, pk)
    row = ledger.get(pk)
    assert row["state"] == "pending" and row["lease_owner"] is None
    assert clean_sandbox.stats()["documents_created"] == 0


def test_crashed_in_flight_row_whose_post_landed_is_adopted(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"R-CRASH": factura()})["R-CRASH"]
    issuer = make_issuer(ledger)
    # a task claimed the row, counted the send, POSTed, and was killed before recording the answer
    crashed = ledger.claim(pk, owner="killed-task")
    ledger.mark_sent(pk, owner="killed-task", lease_seconds=-1)  # sent, then the lease ran out
    issuer.hook.create_document(crashed.payload, reference="R-CRASH")
    assert issuer.issue_range(pk, pk).issued == 0  # the daily selection (pending) does not take it

    outcome = issuer.issue_range(pk, pk, states=RETRY_STATES)
    assert (outcome.adopted, outcome.lookups, outcome.issued) == (1, 1, 0)
    assert clean_sandbox.stats()["documents_created"] == 1
    assert ledger.get(pk)["state"] == "issued"


def test_crashed_in_flight_row_whose_post_never_left_is_sent_after_lookup(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"R-CRASH2": factura()})["R-CRASH2"]
    ledger.claim(pk, owner="killed-task")
    ledger.mark_sent(pk, owner="killed-task", lease_seconds=-1)  # sent, then the lease ran out
    outcome = make_issuer(ledger).issue_range(pk, pk, states=RETRY_STATES)
    assert (outcome.lookups, outcome.issued) == (1, 1)
    assert clean_sandbox.stats()["documents_created"] == 1


def test_live_lease_is_not_taken_over(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-LEASED": factura()})["R-LEASED"]
    ledger.claim(pk, owner="running-task", lease_seconds=600)
    outcome = make_issuer(ledger).issue_range(pk, pk, states=RETRY_STATES, due_before=LATER)
    assert outcome.as_dict()["retried"] == 0
    assert clean_sandbox.stats()["requests_total"] == 0


def test_max_attempts_makes_the_row_dead_with_its_reason(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-DEAD": factura()})["R-DEAD"]
    issuer = make_issuer(ledger, max_attempts=1)
    issuer.hook.get_token()
    clean_sandbox.set_faults(error_5xx_rate=1.0)
    outcome = issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(error_5xx_rate=0)
    row = ledger.get(pk)
    assert outcome.dead == 1 and row["state"] == "dead"
    assert row["last_error"].startswith("gave up after 1 attempts (maximum 1)")
    assert "server error" in row["last_error"]

    report = build_report(ledger, dag_id="d", run_id="r", outcomes=[outcome.as_dict()])
    assert [d["reference"] for d in report["dead"]] == ["R-DEAD"]
    assert "R-DEAD" in render_markdown(report) and "need a person" in render_markdown(report)


def test_lookup_not_found_after_max_attempts_is_dead(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-DEAD2": factura()})["R-DEAD2"]
    ledger.claim(pk, owner="killed-task")
    ledger.mark_sent(pk, owner="killed-task", lease_seconds=-1)  # sent, then the lease ran out
    outcome = make_issuer(ledger, max_attempts=1).issue_range(pk, pk, states=RETRY_STATES)
    assert (outcome.lookups, outcome.dead, outcome.issued) == (1, 1, 0)
    assert "reference not found" in ledger.get(pk)["last_error"]
    assert clean_sandbox.stats()["documents_created"] == 0


def test_unknown_row_is_never_dead_before_a_lookup(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-UNK-MAX": factura()})["R-UNK-MAX"]
    issuer = make_issuer(ledger, max_attempts=1)
    clean_sandbox.set_faults(lost_response_rate=1.0)
    issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(lost_response_rate=0)
    assert ledger.get(pk)["state"] == "unknown"
    assert issuer.issue_range(pk, pk, states=RETRY_STATES, due_before=LATER).adopted == 1


def test_duplicate_alarm_is_recorded_and_not_acted_on(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"R-DUP": factura()})["R-DUP"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(lost_response_rate=1.0)
    issuer.issue_range(pk, pk)
    clean_sandbox.set_faults(lost_response_rate=0)
    issuer.hook.create_document(factura(), reference="R-DUP")  # someone issued it again by hand
    created = clean_sandbox.stats()["documents_created"]

    outcome = issuer.issue_range(pk, pk, states=RETRY_STATES, due_before=LATER)
    row = ledger.get(pk)
    assert (outcome.duplicate_alarms, outcome.adopted, outcome.issued) == (1, 0, 0)
    assert row["state"] == "dead" and row["last_error_class"] == DUPLICATE_ALARM
    assert "2 Koywe documents carry reference 'R-DUP'" in row["last_error"]
    assert clean_sandbox.stats()["documents_created"] == created  # nothing sent, nothing cancelled
    assert ("lookup", "duplicate_alarm") in kinds(ledger, pk)

    report = build_report(ledger, dag_id="d", run_id="r", outcomes=[outcome.as_dict()])
    assert [a["reference"] for a in report["duplicate_alarms"]] == ["R-DUP"]
    assert report["batches"]["duplicate_alarms"] == 1
    assert "Duplicate alarms (1)" in render_markdown(report)


def test_references_filter_and_requeue_of_a_fixed_payload(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    bad = factura()
    bad["details"] = []
    ids = ingest(ledger, {"R-FIX": bad, "R-OTHER": bad})
    issuer = make_issuer(ledger)
    issuer.issue_range(min(ids.values()), max(ids.values()))
    assert {ledger.get(pk)["state"] for pk in ids.values()} == {"rejected"}
    assert ledger.requeue(["R-FIX"]) == 1

    outcome = issuer.issue_range(
        min(ids.values()), max(ids.values()), states=("pending", *RETRY_STATES), references=["R-FIX"]
    )
    # still the bad payload, sent as generation 2 (a new Koywe reference: no lookup), rejected again;
    # R-OTHER untouched
    assert (outcome.lookups, outcome.rejected) == (0, 1)
    assert ledger.get(ids["R-FIX"])["generation"] == 2
    assert ledger.get(ids["R-OTHER"])["attempts"] == 1


def test_policy_from_airflow_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__KOYWE__LEASE_SECONDS", "42")
    monkeypatch.setenv("AIRFLOW__KOYWE__MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AIRFLOW__KOYWE__RETRY_BASE_SECONDS", "0")
    policy = IssuancePolicy.from_config()
    assert (policy.lease_seconds, policy.max_attempts, policy.retry_base_seconds) == (42, 3, 0.0)
    assert policy.retry_max_seconds == 6 * 3600
