"""Koywe's status fields, one enum each, every one knowing which of its values are final.

Koywe reports a document's life in four fields (Koywe's OpenAPI ``Document`` schema; seed ``004_…``
"Update Document"; ``docs/DESIGN.md`` "Koywe's statuses"), which must never be read as one another:

=====================================  ==================================================================
field                                  values
=====================================  ==================================================================
top-level ``document_status``          :class:`DocumentStatus`: 0 draft (Chile only), 1 issued,
                                       2 cancelled (Mexico only). What ``PUT /documents/{id}`` changes.
``header.document_status``             :class:`CounterpartyStatus`: 0 draft, 1 issued, 2 sent to the
                                       counterparty, 3 accepted by the counterparty.
``taxbureau_sending_status``           :class:`TaxBureauSendingStatus`: 0 sending, 1XX retrying, 2XX
                                       rejected, 1 received, 2 closed without sending, 3 imported.
``taxbureau_validation_status``        :class:`TaxBureauValidationStatus`: 0/1 in process, 2 sending
                                       rejected, 3 accepted, 4 accepted with warnings, 5 content rejected.
``result.status`` (answer to a POST)   :class:`ResultStatus`: 0 OK, 1 error, 2 generated but not sent
                                       to the tax bureau (the document exists: follow it, never re-issue).
=====================================  ==================================================================

:func:`parse_status` reads any of them from what Koywe sends (``1``, ``"1"``, ``"001"``, ``None``):
known values become enum members, an unknown integer stays a plain ``int`` (kept, never guessed), and
anything else is ``None``. Pure module: no Airflow import.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, TypeVar

E = TypeVar("E", bound=IntEnum)


class DocumentStatus(IntEnum):
    """Top-level ``document_status``: the document's own life (seed ``004_…``)."""

    DRAFT = 0
    ISSUED = 1
    CANCELLED = 2

    @classmethod
    def terminal_statuses(cls) -> frozenset[DocumentStatus]:
        """Nothing follows a cancellation."""
        return frozenset({cls.CANCELLED})

    def is_terminal(self) -> bool:
        return self in self.terminal_statuses()


class CounterpartyStatus(IntEnum):
    """``header.document_status``: the counterparty's view (OpenAPI ``Document.header``)."""

    DRAFT = 0
    ISSUED = 1
    SENT = 2
    ACCEPTED = 3

    @classmethod
    def terminal_statuses(cls) -> frozenset[CounterpartyStatus]:
        return frozenset({cls.ACCEPTED})

    def is_terminal(self) -> bool:
        return self in self.terminal_statuses()


class TaxBureauSendingStatus(IntEnum):
    """``taxbureau_sending_status`` (API_NOTES "Documents").

    Besides the named values, every ``1XX`` is a retry (:attr:`is_retrying`) and every ``2XX`` a
    rejection of the sending (:attr:`is_rejected`); both are members made on demand
    (``TaxBureauSendingStatus(104).name == "RETRYING"``).
    """

    SENDING = 0
    RECEIVED = 1
    CLOSED_WITHOUT_SENDING = 2
    IMPORTED = 3

    @classmethod
    def _missing_(cls, value: object) -> TaxBureauSendingStatus | None:
        if isinstance(value, int) and 100 <= value < 300:
            member = int.__new__(cls, value)
            member._name_ = "RETRYING" if value < 200 else "REJECTED"
            member._value_ = value
            return member
        return None

    @property
    def is_retrying(self) -> bool:
        return 100 <= self.value < 200

    @property
    def is_rejected(self) -> bool:
        return 200 <= self.value < 300

    def is_terminal(self) -> bool:
        """Received, closed, imported and rejected are final; sending and retrying are not."""
        return self.value != 0 and not self.is_retrying

    @property
    def rank(self) -> int:
        """Progress order for "forwards only" merges: sending 0 < retrying 1 < final 2."""
        if self.value == 0:
            return 0
        return 1 if self.is_retrying else 2


class TaxBureauValidationStatus(IntEnum):
    """``taxbureau_validation_status`` (API_NOTES "Documents")."""

    IN_PROCESS = 0
    VALIDATING = 1
    SENDING_REJECTED = 2
    ACCEPTED = 3
    ACCEPTED_WITH_WARNINGS = 4
    CONTENT_REJECTED = 5

    @classmethod
    def accepted_statuses(cls) -> frozenset[TaxBureauValidationStatus]:
        return frozenset({cls.ACCEPTED, cls.ACCEPTED_WITH_WARNINGS})

    @classmethod
    def rejected_statuses(cls) -> frozenset[TaxBureauValidationStatus]:
        return frozenset({cls.SENDING_REJECTED, cls.CONTENT_REJECTED})

    @classmethod
    def terminal_statuses(cls) -> frozenset[TaxBureauValidationStatus]:
        return cls.accepted_statuses() | cls.rejected_statuses()

    def is_terminal(self) -> bool:
        return self in self.terminal_statuses()

    @property
    def is_accepted(self) -> bool:
        return self in self.accepted_statuses()

    @property
    def is_rejected(self) -> bool:
        return self in self.rejected_statuses()


class ResultStatus(IntEnum):
    """``result.status`` of Koywe's answer to ``POST /documents`` (API_NOTES "Errors")."""

    OK = 0
    ERROR = 1
    NOT_SENT = 2

    @classmethod
    def terminal_statuses(cls) -> frozenset[ResultStatus]:
        """``NOT_SENT`` is not final: Koywe goes on trying the tax bureau."""
        return frozenset({cls.OK, cls.ERROR})

    def is_terminal(self) -> bool:
        return self in self.terminal_statuses()

    @property
    def document_exists(self) -> bool:
        """OK and NOT_SENT documents exist at Koywe (they have a ``document_id``)."""
        return self is not ResultStatus.ERROR


def as_int(value: Any) -> int | None:
    """``value`` as an ``int`` when it is a whole number or a numeric string, else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def parse_status(enum: type[E], value: Any) -> E | int | None:
    """``value`` as a member of ``enum``; an unknown whole number stays an ``int``; else ``None``."""
    number = as_int(value)
    if number is None:
        return None
    try:
        return enum(number)
    except ValueError:
        return number


def is_terminal(enum: type[IntEnum], value: Any) -> bool:
    """Whether ``value`` (any shape :func:`parse_status` reads) is a final value of ``enum``."""
    member = parse_status(enum, value)
    return isinstance(member, enum) and bool(member.is_terminal())  # type: ignore[attr-defined]


__all__ = [
    "CounterpartyStatus",
    "DocumentStatus",
    "ResultStatus",
    "TaxBureauSendingStatus",
    "TaxBureauValidationStatus",
    "as_int",
    "is_terminal",
    "parse_status",
]
