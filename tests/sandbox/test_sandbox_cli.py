"""Command line and the run_sandbox helper."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from koywe_sandbox.testing import SandboxStartError, options_to_args, run_sandbox

OPTIONS = [
    "--host",
    "--port",
    "--token-ttl",
    "--rate-limit",
    "--client-id",
    "--client-secret",
    "--username",
    "--password",
    "--seed",
    "--latency-ms",
    "--list-envelope",
    "--error-5xx-rate",
    "--burst-429",
    "--lost-response-rate",
    "--slow-response-rate",
    "--slow-response-ms",
    "--revoke-tokens",
    "--revoke-after-documents",
]


def test_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "koywe_sandbox", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for option in OPTIONS:
        assert option in out


def test_options_to_args():
    args = options_to_args(
        {
            "rate_limit": 5,
            "burst_429": {"every": 2, "length": 1},
            "revoke_tokens": True,
            "seed": None,
            "x_y": False,
        }
    )
    assert args == ["--rate-limit", "5", "--burst-429", '{"every": 2, "length": 1}', "--revoke-tokens"]


def test_bad_option_raises_with_stderr():
    with pytest.raises(SandboxStartError, match="error_5xx_rate"), run_sandbox(error_5xx_rate=3):
        pass


def test_run_sandbox_urls_and_shutdown():
    with run_sandbox(seed=3) as sb:
        assert sb.base_url == f"http://127.0.0.1:{sb.port}/V1"
        assert sb.url == f"http://127.0.0.1:{sb.port}"
        assert requests.get(f"{sb.url}/_sandbox/stats").ok
        assert requests.get(f"{sb.url}/v1/documents").status_code == 401  # lower-case alias
        assert requests.get(f"{sb.url}/V1/nothing").json() == {"error": "Not found"}
        process = sb.process
    assert process.poll() is not None
