"""Task retry rules for Koywe tasks (Airflow 3.3 ``ExceptionRetryPolicy``).

Retrying only helps when the cause passes: rate limits and transient server or network errors are
retried after a delay; rejected documents, refused credentials and a missing inbox fail at once (a retry would send the
same thing and be refused again — and repeated logins get IPs banned, seed ``000_…``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

_PKG = "koywe_provider.exceptions"


def koywe_retry_policy() -> ExceptionRetryPolicy:
    """The retry policy of tasks that call Koywe (anything unlisted follows the task's ``retries``)."""
    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=[f"{_PKG}.KoyweAuthError", f"{_PKG}.KoyweConfigurationError"],
                action=RetryAction.FAIL,
                reason="Koywe refused the credentials: fix the connection; retrying would only add logins",
            ),
            RetryRule(
                exception=[f"{_PKG}.KoyweRejectedError", f"{_PKG}.DocumentValidationError"],
                action=RetryAction.FAIL,
                reason="Rejected by Koywe or by local validation: the payload must be fixed",
            ),
            RetryRule(
                # The inbox path does not exist (ObjectStoragePath raises NotADirectoryError for a missing
                # folder): the same path would be missing again on every retry.
                exception=["builtins.FileNotFoundError", "builtins.NotADirectoryError"],
                action=RetryAction.FAIL,
                reason="The inbox (or a file it names) does not exist: fix the path and trigger again",
            ),
            RetryRule(
                exception=f"{_PKG}.KoyweRateLimitedError",
                action=RetryAction.RETRY,
                retry_delay=timedelta(minutes=5),
                reason="Rate limited by Koywe: back off before trying again",
            ),
            RetryRule(
                exception=[f"{_PKG}.KoyweTransientError", f"{_PKG}.KoyweOutcomeUnknownError"],
                action=RetryAction.RETRY,
                retry_delay=timedelta(minutes=2),
                reason="Transient Koywe or network failure",
            ),
        ]
    )


def koywe_default_args(
    *, owner: str = "invoicing", retry_delay: timedelta = timedelta(minutes=2)
) -> dict[str, Any]:
    """``default_args`` shared by the Koywe DAGs: an owner, 2 retries, ``retry_delay`` and the policy above."""
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": retry_delay,
        "retry_policy": koywe_retry_policy(),
    }
