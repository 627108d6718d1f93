"""Command line: ``python -m koywe_sandbox --host 127.0.0.1 --port 8099 [options]`` (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .faults import LIST_ITEMS, LIST_SHAPES, NO_DOCUMENT_ID_BODIES, FaultError, FaultSettings
from .state import DEFAULT_VALIDATION_OUTCOMES, SandboxConfig, parse_outcomes, parse_references


def _json_list(text: str) -> list | None:
    value = json.loads(text)
    if value is not None and not isinstance(value, list):
        raise argparse.ArgumentTypeError("expected a JSON list")
    return value


def _json_object(text: str) -> dict | None:
    value = json.loads(text)
    if value is not None and not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Argument parser; every option is documented in ``--help``."""
    d = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="python -m koywe_sandbox",
        description="Local Koywe Billing API sandbox (in-memory, with fault injection).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=d.host, help="interface to bind")
    p.add_argument("--port", type=int, default=d.port, help="TCP port to bind")
    p.add_argument("--token-ttl", type=float, default=d.token_ttl, help="access token lifetime, seconds")
    p.add_argument(
        "--rate-limit",
        type=float,
        default=d.rate_limit,
        help="token bucket over all /V1 calls, requests/s (burst = max(1, rate)); 0 = off",
    )
    p.add_argument("--client-id", default=d.client_id, help="accepted client_id")
    p.add_argument("--client-secret", default=d.client_secret, help="accepted client_secret")
    p.add_argument("--username", default=d.username, help="accepted API username")
    p.add_argument("--password", default=d.password, help="accepted API password")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the fault random generator (reproducible faults)"
    )
    p.add_argument(
        "--manual-clock",
        action="store_true",
        help="freeze the sandbox clock: time (token expiry, rate limit, validation delay, the one-second "
        "window of max_requests_in_any_second) moves only with POST /_sandbox/clock",
    )
    p.add_argument(
        "--list-envelope",
        "--list-shape",
        dest="list_envelope",
        choices=LIST_SHAPES,
        default=d.list_envelope,
        help="GET /V1/documents envelope (start-up value of the list_shape fault key)",
    )
    p.add_argument(
        "--list-items",
        choices=LIST_ITEMS,
        default="full",
        help="GET /V1/documents items: whole documents, or flat OpenAPI SimplifiedDocument items",
    )
    v = p.add_argument_group("tax-bureau validation (also settable with POST /_sandbox/validation)")
    v.add_argument(
        "--validation-delay",
        type=float,
        default=None,
        help="seconds (sandbox clock) after which the validation of a document in process (Chile, or "
        "result.status 2) completes by itself and DOCUMENT.STATUSUPDATE callbacks go to subscribed URLs; "
        "unset = only on POST /_sandbox/validate",
    )
    v.add_argument(
        "--validation-outcomes",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='mix of final taxbureau_validation_status values, e.g. \'{"3": 0.8, "4": 0.1, "5": 0.1}\' '
        '(default {"3": 1})',
    )
    v.add_argument(
        "--reject-references",
        type=_json_list,
        default=None,
        metavar="JSON",
        help="internal references (references[] code 5) whose documents the tax bureau rejects "
        '(taxbureau_validation_status 5), e.g. \'["tx-1", "tx-2"]\'',
    )
    v.add_argument(
        "--cancel-pending-acceptance",
        action="store_true",
        help="a Mexico cancellation waits for the receiver's acceptance (POST /_sandbox/cancellations/{id})",
    )
    f = p.add_argument_group("faults (also settable at run time with POST /_sandbox/faults)")
    f.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every /V1 call, ms")
    f.add_argument(
        "--error-5xx-rate",
        type=float,
        default=0.0,
        help="probability (0..1) of answering 500/502/503 before doing anything",
    )
    f.add_argument(
        "--burst-429",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="after every N /V1 requests answer the next K with 429, e.g. "
        '\'{"every": 10, "length": 2, "retry_after": 1}\'',
    )
    f.add_argument(
        "--lost-response-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that POST /V1/documents creates the document, then closes the "
        "connection without any response",
    )
    f.add_argument(
        "--slow-response-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that POST /V1/documents creates the document, then answers late",
    )
    f.add_argument("--slow-response-ms", type=float, default=0.0, help="delay of a slow response, ms")
    f.add_argument(
        "--revoke-tokens",
        action="store_true",
        help="revoke every token issued so far (a one-shot action; useful at run time only)",
    )
    f.add_argument(
        "--revoke-after-documents",
        type=int,
        default=None,
        help="revoke all tokens once this many documents have been created in total",
    )
    f.add_argument(
        "--no-document-id-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that POST /V1/documents creates nothing and answers a 2xx without document_id",
    )
    f.add_argument(
        "--no-document-id-body",
        choices=NO_DOCUMENT_ID_BODIES,
        default="error",
        help='shape of that answer: empty = 201 {}, error = 200 {"error": "Internal processing error"}',
    )
    f.add_argument(
        "--result-status-2-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that POST /V1/documents creates the document with result.status 2 "
        "(generated but not sent to the tax bureau; validation then in process)",
    )
    return p


def config_from_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    """Parse the command line into a :class:`SandboxConfig` (exits with status 2 on bad values)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    faults = FaultSettings()
    try:
        faults.update(
            {
                "latency_ms": args.latency_ms,
                "error_5xx_rate": args.error_5xx_rate,
                "burst_429": args.burst_429,
                "lost_response_rate": args.lost_response_rate,
                "slow_response_rate": args.slow_response_rate,
                "slow_response_ms": args.slow_response_ms,
                "revoke_after_documents": args.revoke_after_documents,
                "no_document_id_rate": args.no_document_id_rate,
                "no_document_id_body": args.no_document_id_body,
                "result_status_2_rate": args.result_status_2_rate,
                "list_items": args.list_items,
            }
        )
    except FaultError as exc:
        parser.error(str(exc))
    try:
        rejects = parse_references(args.reject_references)
    except ValueError as exc:
        parser.error(f"--reject-references: {exc}")
    try:
        outcomes = parse_outcomes(args.validation_outcomes) if args.validation_outcomes else None
    except ValueError as exc:
        parser.error(f"--validation-outcomes: {exc}")
    if args.validation_delay is not None and args.validation_delay < 0:
        parser.error("--validation-delay must be >= 0")
    if args.rate_limit < 0 or args.token_ttl <= 0:
        parser.error("--rate-limit must be >= 0 and --token-ttl > 0")
    return SandboxConfig(
        host=args.host,
        port=args.port,
        token_ttl=args.token_ttl,
        rate_limit=args.rate_limit,
        client_id=args.client_id,
        client_secret=args.client_secret,
        username=args.username,
        password=args.password,
        seed=args.seed,
        list_envelope=args.list_envelope,
        validation_delay=args.validation_delay,
        validation_outcomes=outcomes or dict(DEFAULT_VALIDATION_OUTCOMES),
        reject_references=rejects,
        cancel_pending_acceptance=args.cancel_pending_acceptance,
        manual_clock=args.manual_clock,
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m koywe_sandbox``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    from .server import serve  # imported late so that --help stays fast

    serve(config_from_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
