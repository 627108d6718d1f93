"""Fault settings and the token bucket of the Koywe sandbox.

Fault keys (identical on the command line, as ``--key-with-dashes``, and in ``POST /_sandbox/faults``):

- ``latency_ms`` (float, milliseconds): delay added to every ``/V1`` call.
- ``error_5xx_rate`` (0..1): probability that a ``/V1`` call is answered 500/502/503 before doing anything.
- ``burst_429`` (object ``{"every": N, "length": K, "retry_after": S}`` or null): after every N ``/V1``
  requests the next K are answered 429 with ``Retry-After: S`` (seconds).
- ``lost_response_rate`` (0..1, ``POST /V1/documents`` only): the document is created, then the TCP
  connection is closed without any HTTP response byte.
- ``slow_response_rate`` (0..1) and ``slow_response_ms`` (milliseconds, ``POST /V1/documents`` only):
  the document is created, then the answer is delayed by ``slow_response_ms``.
- ``revoke_tokens`` (bool, one-shot action): revoke every token issued so far; never stored, so
  ``GET /_sandbox/faults`` always shows ``false``.
- ``revoke_after_documents`` (int or null): revoke all tokens once that many documents have been created
  in total (fires once per setting / reset).
- ``no_document_id_rate`` (0..1, ``POST /V1/documents`` only): the document is NOT created and the answer
  is a 2xx without ``document_id``; its shape is ``no_document_id_body``: ``"empty"`` → ``201 {}``,
  ``"error"`` (default) → ``200 {"error": "Internal processing error"}`` (API_NOTES "Errors": a 2xx is not
  success by itself).
- ``result_status_2_rate`` (0..1, ``POST /V1/documents`` only, not drafts): the document IS created (id,
  folio, listed, found by reference) but answers ``result {"status": 2, "error_message": "Error 1033: …"}``
  ("generated but could not be sent to the tax bureau", API_NOTES "Errors") with
  ``taxbureau_sending_status`` 0 and ``taxbureau_validation_status`` 0 in every country; it is then in
  process like a Chile document: ``POST /_sandbox/validate``, the validation delay or a clock advance
  finish it (final status from the validation outcomes, 3 by default; sending status 1, or 201 for 2).
  ``result`` keeps the creation answer afterwards.
- ``list_shape`` (``"hal"`` default | ``"flat"`` | ``"data"``; on the command line ``--list-envelope``, alias
  ``--list-shape``): envelope of
  ``GET /V1/documents``: HAL ``{_embedded: {documents}, _links, page_count, total_items, page, page_size}``,
  OpenAPI ``{documents, page_count, total_items, page, page_size}`` or seed ``000_…``
  ``{data, pagination: {total, per_page, current_page}}``.
- ``list_items`` (``"full"`` default | ``"flat"``): list items are whole ``Document`` objects, or the
  OpenAPI ``SimplifiedDocument`` (see :func:`koywe_sandbox.documents.list_item`).

The document-outcome keys (``no_document_id_*``, ``result_status_2_rate``, ``list_shape``, ``list_items``,
:data:`SCENARIO_KEYS`) go back to their start-up values on ``POST /_sandbox/reset``; the transport keys
above them persist across resets.

Extra run-time keys accepted by ``POST /_sandbox/faults``: ``rate_limit`` (requests/s, 0 = off),
``seed`` (int or null, re-seeds the fault random generator) and ``cancel_pending_acceptance`` (bool, the
validation setting of the same name, see ``POST /_sandbox/validation``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

FAULT_KEYS = (
    "latency_ms",
    "error_5xx_rate",
    "burst_429",
    "lost_response_rate",
    "slow_response_rate",
    "slow_response_ms",
    "revoke_tokens",
    "revoke_after_documents",
    "no_document_id_rate",
    "no_document_id_body",
    "result_status_2_rate",
    "list_shape",
    "list_items",
)
#: Keys restored to their start-up values by ``POST /_sandbox/reset``.
SCENARIO_KEYS = (
    "no_document_id_rate",
    "no_document_id_body",
    "result_status_2_rate",
    "list_shape",
    "list_items",
)
LIST_SHAPES = ("hal", "flat", "data")
LIST_ITEMS = ("full", "flat")
NO_DOCUMENT_ID_BODIES = ("empty", "error")
RATE_KEYS = (
    "error_5xx_rate",
    "lost_response_rate",
    "slow_response_rate",
    "no_document_id_rate",
    "result_status_2_rate",
)


class FaultError(ValueError):
    """Raised for an invalid fault value; the message names the key."""


@dataclass
class FaultSettings:
    """Current fault injection settings (see the module docstring for units)."""

    latency_ms: float = 0.0
    error_5xx_rate: float = 0.0
    burst_429: dict[str, int] | None = None
    lost_response_rate: float = 0.0
    slow_response_rate: float = 0.0
    slow_response_ms: float = 0.0
    revoke_tokens: bool = False
    revoke_after_documents: int | None = None
    no_document_id_rate: float = 0.0
    no_document_id_body: str = "error"
    result_status_2_rate: float = 0.0
    list_shape: str = "hal"
    list_items: str = "full"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the settings."""
        data = asdict(self)
        data["revoke_tokens"] = False
        return data

    def update(self, values: dict[str, Any]) -> None:
        """Validate and apply ``values`` (a subset of the fault keys); raises FaultError, changes nothing then."""
        known = {f.name for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise FaultError(f"Unknown fault option: {key}")
            parsed[key] = _parse(key, value)
        for key, value in parsed.items():
            setattr(self, key, value)


def _rate(key: str, value: Any) -> float:
    number = _number(key, value)
    if not 0.0 <= number <= 1.0:
        raise FaultError(f"{key} must be between 0 and 1")
    return number


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise FaultError(f"{key} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FaultError(f"{key} must be a number") from None
    if math.isnan(number) or number < 0:
        raise FaultError(f"{key} must be a non-negative number")
    return number


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise FaultError(f"{key} must be an integer")
    try:
        number = int(str(value))
    except ValueError:
        raise FaultError(f"{key} must be an integer") from None
    if number < minimum:
        raise FaultError(f"{key} must be >= {minimum}")
    return number


def _parse(key: str, value: Any) -> Any:
    if key in RATE_KEYS:
        return _rate(key, value)
    choices = {
        "no_document_id_body": NO_DOCUMENT_ID_BODIES,
        "list_shape": LIST_SHAPES,
        "list_items": LIST_ITEMS,
    }
    if key in choices:
        if value not in choices[key]:
            raise FaultError(f"{key} must be one of {', '.join(choices[key])}")
        return value
    if key in ("latency_ms", "slow_response_ms"):
        return _number(key, value)
    if key == "revoke_tokens":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if key == "revoke_after_documents":
        return None if value in (None, 0, "") else _int(key, value, 1)
    if key == "burst_429":
        if value in (None, {}, ""):
            return None
        if not isinstance(value, dict):
            raise FaultError("burst_429 must be an object {every, length, retry_after}")
        return {
            "every": _int("burst_429.every", value.get("every"), 1),
            "length": _int("burst_429.length", value.get("length"), 1),
            "retry_after": _int("burst_429.retry_after", value.get("retry_after", 1), 0),
        }
    raise FaultError(f"Unknown fault option: {key}")  # pragma: no cover


class TokenBucket:
    """Token bucket: ``rate`` tokens per second, capacity ``max(1, rate)``; ``rate <= 0`` disables it."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: monotonic seconds (the sandbox passes its :class:`~koywe_sandbox.clock.SandboxClock`)."""
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> float | None:
        """Take one token; returns None when allowed, else the seconds until a token is available."""
        if self.rate <= 0:
            return None
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate

    @staticmethod
    def retry_after(wait_seconds: float) -> int:
        """Retry-After header value: whole seconds, rounded up, at least 1."""
        return max(1, math.ceil(wait_seconds))
