"""Exceptions raised by the Koywe provider.

Every class maps to one outcome of a Koywe call (see ``KoyweHook``) so that callers (the issuance
ledger, ``ExceptionRetryPolicy`` rules) decide on the class alone. Messages never carry credentials,
tokens or document payloads.
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowException


class KoyweError(AirflowException):
    """Base class of every Koywe provider error.

    :param status_code: HTTP status of Koywe's answer, ``None`` when there was no answer.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class KoyweConfigurationError(KoyweError):
    """The connection is unusable (empty or placeholder credentials, bad base URL); nothing was sent."""


class KoyweAuthError(KoyweError):
    """``POST /auth`` refused the credentials, or a call still answered 401 after one token refresh."""


class KoyweRejectedError(KoyweError):
    """Koywe refused the request for good: HTTP 400, or a 2xx whose ``result.status`` is not 0.

    Permanent until the payload is fixed. ``error_message`` is Koywe's text; ``result_status`` is the
    document's ``result.status`` (``None`` for a 400); ``response`` is the typed document
    (:class:`~koywe_provider.models.answers.DocumentAnswer`) when Koywe answered one, else the parsed
    error body (``dict``) or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_message: str = "",
        result_status: int | None = None,
        response: Any = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.error_message = error_message
        self.result_status = result_status
        self.response = response


class KoyweNotFoundError(KoyweError):
    """HTTP 404: the document or account does not exist at Koywe."""


class KoyweRateLimitedError(KoyweError):
    """HTTP 429. ``retry_after`` is Koywe's ``Retry-After`` in seconds, ``None`` when absent."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=429)
        self.retry_after = retry_after


class KoyweTransientError(KoyweError):
    """A failure where the request certainly did not take effect: 5xx, or no connection was made.

    Safe to send again.
    """


class KoyweOutcomeUnknownError(KoyweError):
    """A write was sent but no answer came (timeout, connection dropped after the body was sent).

    The document may or may not exist at Koywe: look it up by reference before sending it again.
    """


class DocumentValidationError(ValueError):
    """A document payload failed local validation; nothing was sent to Koywe.

    ``errors`` is a list of ``(field, message)`` where ``field`` is a dotted path such as
    ``details.0.total_amount_line``. ``str()`` names the document (``reference``) and every field.
    """

    def __init__(self, errors: list[tuple[str, str]], *, reference: str | None = None) -> None:
        self.errors = errors
        self.reference = reference
        who = f"document {reference!r}" if reference else "document"
        detail = "; ".join(f"{field}: {msg}" for field, msg in errors)
        super().__init__(f"{who} is invalid: {detail}")
