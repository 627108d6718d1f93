"""Start the Koywe sandbox as a subprocess for tests, demos and benchmarks (no pytest dependency).

Example::

    with run_sandbox(rate_limit=5, seed=1, burst_429={"every": 10, "length": 2, "retry_after": 1}) as sb:
        requests.post(f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials})
        assert sb.stats()["auth_calls"] == 1
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_CREDENTIALS = {
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "username": "sandbox-user",
    "password": "sandbox-password",
}
START_TIMEOUT_S = 20.0


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
        """``POST /_sandbox/validation`` (``delay_seconds``, ``outcomes``); returns the current settings."""
        return self._admin("POST", "validation", settings)

    def validate(self, document_ids: list[int] | None = None, outcome: int | None = None) -> dict[str, Any]:
        """``POST /_sandbox/validate``: finish Chile validations now (all in process when ``document_ids``
        is None), callbacks delivered before it returns; ``{"validated": [...], "callbacks": {...}}``."""
        return self._admin("POST", "validate", {"document_ids": document_ids, "outcome": outcome})

    def documents(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/documents``: every stored document, ordered by document_id."""
        return self._admin("GET", "documents")


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
    ``seed=1``, ``error_5xx_rate=0.1``, ``list_envelope="flat"``, ``burst_429={...}``...). Waits until
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
