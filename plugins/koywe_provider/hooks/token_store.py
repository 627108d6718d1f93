"""Where ``KoyweHook`` keeps the Koywe access token between processes.

Koywe (seed ``000_…``, "Manage access_token efficiently") asks clients to cache the token returned by
``POST /auth`` for its whole life (``expires_in``: 3600 s) and reuse it for every call. Inside Airflow
the token lives in the Variable ``koywe_token__<conn_id>``; the name contains "token", so Airflow's
secrets masker hides its value. Tests and command-line use inject a :class:`MemoryTokenStore`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedToken:
    """A bearer token and the moment it expires (timezone-aware UTC). ``repr`` never shows the token."""

    access_token: str = field(repr=False)
    expires_at: datetime

    @classmethod
    def from_auth_response(cls, body: dict, *, now: datetime | None = None) -> CachedToken:
        """Build from ``POST /auth``'s ``{access_token, token_type, expires_in}`` (seconds; default 3600)."""
        now = now or datetime.now(UTC)
        expires_in = float(body.get("expires_in") or 3600)
        return cls(access_token=str(body["access_token"]), expires_at=now + timedelta(seconds=expires_in))

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds()

    def to_json(self) -> str:
        return json.dumps({"access_token": self.access_token, "expires_at": self.expires_at.isoformat()})

    @classmethod
    def from_json(cls, raw: str | dict) -> CachedToken:
        """Parse the Variable value ``{"access_token": str, "expires_at": ISO-8601}``; raises ``ValueError``."""
        data = json.loads(raw) if isinstance(raw, str) else raw
        try:
            expires_at = datetime.fromisoformat(data["expires_at"])
            token = data["access_token"]
        except (KeyError, TypeError) as err:
            raise ValueError("token cache entry lacks access_token or expires_at") from err
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if not isinstance(token, str) or not token:
            raise ValueError("token cache entry has an empty access_token")
        return cls(access_token=token, expires_at=expires_at)


class TokenStore(Protocol):
    """Shared storage of one connection's token (read by every task that calls Koywe)."""

    def load(self) -> CachedToken | None: ...

    def save(self, token: CachedToken) -> None: ...


class MemoryTokenStore:
    """A token store local to this object; for tests, scripts and the benchmark's baseline."""

    def __init__(self) -> None:
        self._token: CachedToken | None = None
        self._lock = threading.Lock()

    def load(self) -> CachedToken | None:
        with self._lock:
            return self._token

    def save(self, token: CachedToken) -> None:
        with self._lock:
            self._token = token


class VariableTokenStore:
    """Keeps the token in the Airflow Variable ``key`` as JSON ``{access_token, expires_at}``.

    Works wherever the Task SDK can read and write Variables (a running task, ``dag.test()``).
    A missing, unreadable or corrupt value reads as "no token"; it is never logged.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def load(self) -> CachedToken | None:
        from airflow.sdk import Variable

        raw = Variable.get(self.key, default=None)
        if not raw:
            return None
        try:
            return CachedToken.from_json(raw)
        except ValueError:
            log.warning("Ignoring unreadable Koywe token cache in Variable %s", self.key)
            return None

    def save(self, token: CachedToken) -> None:
        from airflow.sdk import Variable

        Variable.set(self.key, token.to_json(), description="Koywe API token cache, managed by KoyweHook")


def variable_key(conn_id: str) -> str:
    """Name of the Variable caching ``conn_id``'s token: ``koywe_token__<conn_id>``."""
    return f"koywe_token__{conn_id}"
