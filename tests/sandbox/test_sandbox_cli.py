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
    "--no-document-id-rate",
    "--no-document-id-body",
    "--result-status-2-rate",
    "--list-shape",
    "--list-items",
    "--manual-clock",
    "--validation-delay",
    "--validation-outcomes",
    "--reject-references",
    "--cancel-pending-acceptance",
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


def test_document_outcome_options_are_start_up_values_restored_on_reset():
    options = {
        "no_document_id_rate": 0.25,
        "no_document_id_body": "empty",
        "result_status_2_rate": 0.5,
        "list_shape": "flat",
        "list_items": "flat",
        "reject_references": ["r-1", "r-2"],
        "cancel_pending_acceptance": True,
        "manual_clock": True,
    }
    with run_sandbox(**options) as sb:
        started = sb.faults()
        expected = {k: v for k, v in options.items() if k not in ("reject_references", "manual_clock")}
        assert {k: started[k] for k in expected} == expected
        assert sb.validation()["reject_references"] == ["r-1", "r-2"]
        assert sb.clock()["manual"] is True
        sb.set_faults(
            no_document_id_rate=0, list_shape="data", list_items="full", cancel_pending_acceptance=False
        )
        sb.set_validation(reject_references=None)
        sb.advance_clock(5)
        sb.reset()
        assert sb.faults() == started
        assert sb.validation()["reject_references"] == ["r-1", "r-2"]
        assert sb.clock()["offset_seconds"] == 5  # the clock never goes back


@pytest.mark.parametrize(
    ("option", "value"),
    [("no_document_id_body", "html"), ("result_status_2_rate", 2), ("reject_references", {"a": 1})],
)
def test_bad_outcome_options_refuse_to_start(option, value):
    with pytest.raises(SandboxStartError, match=option.replace("_", "[-_]")), run_sandbox(**{option: value}):
        pass
