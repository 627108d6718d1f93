"""Koywe's status enums: values, final values, and how answers' raw values are read."""

from __future__ import annotations

import pytest

from koywe_provider.models.statuses import (
    CounterpartyStatus,
    DocumentStatus,
    ResultStatus,
    TaxBureauSendingStatus,
    TaxBureauValidationStatus,
    is_terminal,
    parse_status,
)


def test_document_status_is_the_documents_life_and_only_cancellation_is_final():
    assert [s.value for s in DocumentStatus] == [0, 1, 2]
    assert DocumentStatus.CANCELLED.is_terminal()
    assert not DocumentStatus.ISSUED.is_terminal() and not DocumentStatus.DRAFT.is_terminal()


def test_counterparty_status_2_and_3_are_sent_and_accepted_not_cancelled():
    assert CounterpartyStatus(2) is CounterpartyStatus.SENT
    assert CounterpartyStatus(3) is CounterpartyStatus.ACCEPTED
    assert CounterpartyStatus.ACCEPTED.is_terminal() and not CounterpartyStatus.SENT.is_terminal()
    with pytest.raises(ValueError):
        DocumentStatus(3)


@pytest.mark.parametrize(
    ("value", "name", "retrying", "rejected", "final", "rank"),
    [
        (0, "SENDING", False, False, False, 0),
        (1, "RECEIVED", False, False, True, 2),
        (2, "CLOSED_WITHOUT_SENDING", False, False, True, 2),
        (3, "IMPORTED", False, False, True, 2),
        (100, "RETRYING", True, False, False, 1),
        (137, "RETRYING", True, False, False, 1),
        (200, "REJECTED", False, True, True, 2),
        (299, "REJECTED", False, True, True, 2),
    ],
)
def test_sending_status_ranges(value, name, retrying, rejected, final, rank):
    status = TaxBureauSendingStatus(value)
    assert (status.name, status.is_retrying, status.is_rejected, status.is_terminal(), status.rank) == (
        name,
        retrying,
        rejected,
        final,
        rank,
    )
    assert int(status) == value


def test_sending_status_outside_the_documented_ranges_is_unknown():
    with pytest.raises(ValueError):
        TaxBureauSendingStatus(7)
    assert parse_status(TaxBureauSendingStatus, 7) == 7  # kept as a plain int, never guessed
    assert not isinstance(parse_status(TaxBureauSendingStatus, 7), TaxBureauSendingStatus)


def test_validation_status_accepted_rejected_and_final():
    V = TaxBureauValidationStatus
    assert V.accepted_statuses() == {V.ACCEPTED, V.ACCEPTED_WITH_WARNINGS}
    assert V.rejected_statuses() == {V.SENDING_REJECTED, V.CONTENT_REJECTED}
    assert {int(v) for v in V.terminal_statuses()} == {2, 3, 4, 5}
    assert not V.IN_PROCESS.is_terminal() and not V.VALIDATING.is_terminal()
    assert V(4).is_accepted and V(5).is_rejected and not V(3).is_rejected


def test_result_status_two_exists_and_is_not_final():
    assert ResultStatus.NOT_SENT.value == 2
    assert ResultStatus.NOT_SENT.document_exists and not ResultStatus.NOT_SENT.is_terminal()
    assert ResultStatus.OK.document_exists and ResultStatus.OK.is_terminal()
    assert not ResultStatus.ERROR.document_exists and ResultStatus.ERROR.is_terminal()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, 3),
        ("3", 3),
        ("003", 3),
        (3.0, 3),
        (None, None),
        ("", None),
        ("x", None),
        (True, None),
        (2.5, None),
    ],
)
def test_parse_status_reads_what_koywe_sends(raw, expected):
    parsed = parse_status(TaxBureauValidationStatus, raw)
    assert parsed == expected
    if expected is not None:
        assert isinstance(parsed, TaxBureauValidationStatus)


def test_is_terminal_on_raw_values():
    assert is_terminal(TaxBureauValidationStatus, "5")
    assert not is_terminal(TaxBureauValidationStatus, "1")
    assert not is_terminal(TaxBureauValidationStatus, 9)
    assert is_terminal(TaxBureauSendingStatus, 204)
