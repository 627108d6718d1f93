"""Start the Koywe sandbox as a subprocess for tests, demos and benchmarks (no pytest dependency).

Example::

    with run_sandbox(rate_limit=5, seed=1, burst_429={"every": 10, "length": 2, "retry_after": 1}) as sb:
        requests.post(f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials})
        assert sb.stats()["auth_calls"] == 1

:class:`SandboxProcess` wraps every ``/_sandbox`` admin endpoint (see ``koywe_sandbox.app``); each helper
raises ``httpx.HTTPStatusError`` on a 4xx/5xx answer. :func:`wait_for` polls a condition with a deadline:
use it (or ``manual_clock=True`` plus :meth:`SandboxProcess.advance_clock`) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

DEFAULT_CREDENTIALS = {
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "username": "sandbox-user",
    "password": "sandbox-password",
}
START_TIMEOUT_S = 20.0
T = TypeVar("T")


class SandboxStartError(RuntimeError):
    """The sandbox process died or did not answer in time; the message holds its stderr."""


@dataclass
class SandboxProcess:
    """A running sandbox. ``url`` is ``http://127.0.0.1:<port>``, ``base_url`` is ``<url>/V1``."""

    port: int
    process: subprocess.Popen[bytes]
    credentials: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CREDENTIALS))
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/V1"

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.request(method, f"{self.url}/_sandbox/{path}", json=payload)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, int]:
        """``GET /_sandbox/stats``: counters (see the README of the sandbox / ``state.STAT_KEYS``)."""
        return self._admin("GET", "stats")

    def arrivals(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/arrivals``: every ``/V1`` arrival since the last reset, oldest first
        (``{"at": seconds since the reset, "method", "target": path and query}``)."""
        return self._admin("GET", "arrivals")

    def reset(self) -> None:
        """``POST /_sandbox/reset``: clear documents, accounts, tokens and stats (keeps configuration)."""
        self._admin("POST", "reset")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """``POST /_sandbox/faults`` with the given keys; returns the current fault settings."""
        return self._admin("POST", "faults", faults)

    def faults(self) -> dict[str, Any]:
        """``GET /_sandbox/faults``."""
        return self._admin("GET", "faults")

    def set_validation(self, **settings: Any) -> dict[str, Any]:
        """``POST /_sandbox/validation`` with any of ``delay_seconds`` (float|None), ``outcomes``
        (``{"3": p, …}``), ``reject_references`` (list of internal references, None = none) and
        ``cancel_pending_acceptance`` (bool); returns the current settings plus ``in_process``."""
        return self._admin("POST", "validation", settings)

    def validation(self) -> dict[str, Any]:
        """``GET /_sandbox/validation``: the validation settings plus ``in_process`` (document ids)."""
        return self._admin("GET", "validation")

    def reject_references(self, *references: str) -> dict[str, Any]:
        """Make the tax bureau reject (``taxbureau_validation_status`` 5) documents created from now on with
        any of these internal references (``references[]`` code 5); no argument = reject none. Replaces the
        previous list (``set_validation(reject_references=[...])``)."""
        return self.set_validation(reject_references=[str(r) for r in references])

    def validate(self, document_ids: list[int] | None = None, outcome: int | None = None) -> dict[str, Any]:
        """``POST /_sandbox/validate``: finish validations in process now (all of them when ``document_ids``
        is None), callbacks delivered before it returns; ``{"validated": [...], "callbacks": {...}}``."""
        return self._admin("POST", "validate", {"document_ids": document_ids, "outcome": outcome})

    def documents(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/documents``: every stored document, ordered by document_id."""
        return self._admin("GET", "documents")

    def plant_document(self, body: dict[str, Any], stamp: bool = False) -> dict[str, Any]:
        """``POST /_sandbox/documents``: store ``body`` (a ``POST /V1/documents`` body, ``references[]``
        included) as a document created out of band, bypassing auth, faults and rate limits; counted in
        ``documents_planted`` only. Returns the stored document (with ``document_id``)."""
        return self._admin("POST", "documents?generate_stamp=1" if stamp else "documents", body)

    def forget_document(self, document_id: int | str) -> dict[str, Any]:
        """``DELETE /_sandbox/documents/{id}``: Koywe loses the document (it disappears from lists and
        ``GET``): a ledger row that holds it is then a document Koywe does not have."""
        return self._admin("DELETE", f"documents/{document_id}")

    def complete_cancellation(self, document_id: int | str, outcome: str) -> dict[str, Any]:
        """``POST /_sandbox/cancellations/{id}`` with ``outcome`` ``"accepted"`` (``document_status`` 2,
        ``cancellation_status`` ``"cancelled"``) or ``"refused"`` (stays 1, ``"refused"``); the callback is
        delivered before it returns ``{"document": {...}, "callbacks": {"sent", "failed"}}``."""
        return self._admin("POST", f"cancellations/{document_id}", {"outcome": outcome})

    def set_counterparty_status(self, document_id: int | str, status: int) -> dict[str, Any]:
        """``POST /_sandbox/counterparty/{id}``: set ``header.document_status`` to 2 (sent to the
        counterparty) or 3 (accepted by it); the top-level ``document_status`` is unchanged. The callback
        is delivered before it returns ``{"document": {...}, "callbacks": {"sent", "failed"}}``."""
        return self._admin("POST", f"counterparty/{document_id}", {"status": status})

    def clock(self) -> dict[str, Any]:
        """``GET /_sandbox/clock``: ``{"now": seconds, "offset_seconds": s, "manual": bool}``."""
        return self._admin("GET", "clock")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """``POST /_sandbox/clock``: move the sandbox clock forward by ``seconds`` (token expiry, token
        bucket, validation delay, one-second window); validations that became due are finished and their
        callbacks delivered before it returns the clock plus ``{"validated": [...], "callbacks": {...}}``."""
        return self._admin("POST", "clock", {"advance_seconds": seconds})


def wait_for(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, message: str = "condition"
) -> T:
    """Call ``condition`` until it returns a truthy value (returned) or ``timeout`` seconds pass (raises
    ``TimeoutError`` naming ``message``). The deadline is generous by default: on a busy machine only the
    waiting gets longer, the outcome does not change."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} did not hold within {timeout}s")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def options_to_args(options: dict[str, Any]) -> list[str]:
    """``{"rate_limit": 5, "burst_429": {...}, "revoke_tokens": True}`` -> ``--rate-limit 5 --burst-429 '{...}' ...``.

    ``None`` and ``False`` values are left out; ``True`` becomes a bare flag; dicts and lists become JSON.
    """
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, dict | list):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def _wait_ready(sandbox: SandboxProcess, stderr_file: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if sandbox.process.poll() is not None:
                stderr_file.seek(0)
                err = stderr_file.read().decode(errors="replace")
                raise SandboxStartError(f"sandbox exited with {sandbox.process.returncode}:\n{err}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{sandbox.url}/_sandbox/stats").status_code == 200:
                    return
            time.sleep(0.05)
    stderr_file.seek(0)
    raise SandboxStartError(
        f"sandbox did not answer within {timeout}s:\n{stderr_file.read().decode(errors='replace')}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def run_sandbox(*, port: int | None = None, **options: Any) -> Iterator[SandboxProcess]:
    """Run ``python -m koywe_sandbox`` on 127.0.0.1 (a free port unless ``port`` is given) until exit.

    ``options`` are the command-line options with underscores (``rate_limit=5``, ``token_ttl=10``,
    ``seed=1``, ``error_5xx_rate=0.1``, ``list_envelope="flat"``, ``list_items="flat"``, ``burst_429={...}``,
    ``manual_clock=True``, ``reject_references=["tx-1"]``...). Waits until
    ``GET /_sandbox/stats`` answers (20 s), raising :class:`SandboxStartError` with the process's stderr
    if it dies; on exit terminates it (then kills it after 5 s).
    """
    credentials = dict(DEFAULT_CREDENTIALS)
    for key in credentials:
        if options.get(key) is not None:
            credentials[key] = str(options[key])
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        cmd = [sys.executable, "-m", "koywe_sandbox", "--host", "127.0.0.1", "--port", str(chosen)]
        cmd += options_to_args(options)
        with tempfile.TemporaryFile() as stderr_file:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr_file, env=env)
            sandbox = SandboxProcess(port=chosen, process=process, credentials=credentials)
            try:
                try:
                    _wait_ready(sandbox, stderr_file, START_TIMEOUT_S)
                except SandboxStartError as exc:
                    # Another process may have taken the free port between the probe and the bind.
                    if "address already in use" in str(exc).lower() and attempt + 1 < attempts:
                        continue
                    raise
                yield sandbox
                return
            finally:
                _stop(process)
