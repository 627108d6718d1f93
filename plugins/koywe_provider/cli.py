"""Command line for the issuance ledger: look at a document and re-queue it after its payload was fixed.

    python -m koywe_provider.cli show --reference R [--ledger-url URL]
    python -m koywe_provider.cli requeue --reference R [--reference R2 …] [--state rejected --state dead]
    python -m koywe_provider.cli fix --reference R --file F [--account-id A] [--dry-run]

The ledger is ``--ledger-url`` (SQLAlchemy URL) or, by default, the one of the Airflow connection
``koywe_ledger`` (:class:`~koywe_provider.hooks.ledger.KoyweLedgerHook`). A re-queued row goes back to
``pending``; when it was sent before it is looked up by reference before any new POST, so a re-queue
never duplicates a document Koywe already holds. ``fix`` replaces the payload of an ``invalid``,
``rejected`` or unsent ``pending`` row by the corrected document in ``F``, validated as an inbox line is
(:mod:`koywe_provider.services.corrections`); a refusal is one line on stderr naming the field. Prints
JSON; never prints payloads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from koywe_provider.ledger import DocumentState, Ledger

#: Columns ``show`` prints (no payload, no raw line).
SHOWN = (
    "id",
    "account_id",
    "reference",
    "state",
    "attempts",
    "koywe_document_id",
    "document_number",
    "last_error_class",
    "last_error",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "source",
    "line_no",
    "original_pk",
    "note_kind",
    "cancellation_status",
)


class LedgerMissingError(RuntimeError):
    """The ledger named by the URL has not been created (no file, or no ``koywe_alembic_version``)."""


def _ledger(url: str | None) -> Ledger:
    """The ledger at ``url`` (default: the ``koywe_ledger`` connection's), never created here.

    :raises LedgerMissingError: the SQLite file does not exist or the database was never migrated.
    """
    if not url:
        from koywe_provider.hooks.ledger import KoyweLedgerHook

        url = KoyweLedgerHook().get_url()
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    hint = (
        "make demo and make up keep theirs in <checkout>/airflow_home: export AIRFLOW_HOME=<checkout>/airflow_home, "
        "or pass --ledger-url"
    )
    if parsed.get_backend_name() == "sqlite":
        from pathlib import Path

        if not parsed.database or not Path(parsed.database).exists():
            raise LedgerMissingError(f"no ledger at {parsed.database or '(memory)'}; {hint}")
    import sqlalchemy as sa

    from koywe_provider.ledger.models import VERSION_TABLE

    ledger = Ledger(url)
    if not sa.inspect(ledger.engine).has_table(VERSION_TABLE):  # no alembic here: it logs to stdout
        ledger.dispose()
        raise LedgerMissingError(f"the database {parsed.render_as_string()} holds no Koywe ledger; {hint}")
    return ledger


def _rows(ledger: Ledger, references: Sequence[str]) -> list[dict[str, Any]]:
    return [ledger.get(pk) for pk in ledger.ids_for_references(references)]


def show(ledger: Ledger, references: Sequence[str]) -> list[dict[str, Any]]:
    """Every row carrying one of ``references`` (any account) with its attempts, oldest first."""
    out = []
    for row in _rows(ledger, references):
        shown = {k: row.get(k) for k in SHOWN}
        # Where the document stands after issuance: issued, credited in part (how much), voided.
        shown["credit_position"] = ledger.credit_position(row["id"]).as_dict()
        shown["attempt_log"] = [
            {k: a[k] for k in ("attempted_at", "kind", "outcome", "http_status", "error")}
            for a in ledger.attempts_for(row["id"])
        ]
        out.append(shown)
    return out


def fix(
    ledger: Ledger, reference: str, file: str, *, account_id: str | None = None, dry_run: bool = False
) -> int:
    """``fix --reference R --file F``: correct row ``R`` with the document in ``F`` (no SQL).

    Reads at most ``[koywe] max_line_bytes`` of ``F`` (the inbox's limit), validates it exactly as an
    inbox line and applies :func:`~koywe_provider.services.corrections.correct_document`. Prints one
    JSON line (reference, outcome, state, generation, attempts; never the payload) and returns 0; on a
    refusal prints one line to stderr naming the field and returns 1 (nothing changed); 2 when ``F``
    cannot be read.
    """
    from pathlib import Path

    from koywe_provider.services.corrections import CorrectionRefused, correct_document, load_document
    from koywe_provider.services.ingestion import DEFAULT_MAX_LINE_BYTES

    try:
        from airflow.sdk import conf

        max_bytes = conf.getint("koywe", "max_line_bytes", fallback=DEFAULT_MAX_LINE_BYTES)
    except Exception:  # no Airflow configuration here: the documented default
        max_bytes = DEFAULT_MAX_LINE_BYTES
    path = Path(file).expanduser()
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        print(f"koywe fix: cannot read {file}: {err.strerror or err}", file=sys.stderr)
        return 2
    try:
        document = load_document(data, source=str(path), max_bytes=max_bytes)
        done = correct_document(
            ledger,
            reference=reference,
            document=document,
            account_id=account_id,
            source=str(path.resolve()),
            run_id="cli fix",
            dry_run=dry_run,
        )
    except CorrectionRefused as err:
        print(f"koywe fix: {reference} refused, nothing changed: {err.message}", file=sys.stderr)
        return 1
    print(
        json.dumps({"fixed": done.reference, **{k: v for k, v in done.as_dict().items() if k != "reference"}})
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m koywe_provider.cli", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ledger-url", help="SQLAlchemy URL of the ledger (default: connection koywe_ledger)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show_p = commands.add_parser("show", help="print the rows of these references and their attempts")
    show_p.add_argument("--reference", action="append", required=True, help="internal reference (repeatable)")
    requeue_p = commands.add_parser("requeue", help="put rejected/dead rows back to pending")
    requeue_p.add_argument(
        "--reference", action="append", required=True, help="internal reference (repeatable)"
    )
    requeue_p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in (DocumentState.REJECTED, DocumentState.DEAD)],
        help="states to re-queue (default: rejected and dead)",
    )
    requeue_p.add_argument("--account-id", help="only rows of this Koywe account")
    fix_p = commands.add_parser("fix", help="replace the payload of an invalid, rejected or unsent row")
    fix_p.add_argument("--reference", required=True, help="internal reference of the row to correct")
    fix_p.add_argument(
        "--file", required=True, help="JSON file: the corrected document (or a whole inbox line)"
    )
    fix_p.add_argument("--account-id", help="the row's Koywe account (when several use the reference)")
    fix_p.add_argument("--dry-run", action="store_true", help="validate only, change nothing")
    args = parser.parse_args(argv)

    try:
        ledger = _ledger(args.ledger_url)
    except LedgerMissingError as err:
        print(f"koywe: {err}", file=sys.stderr)
        return 2
    if args.command == "fix":
        return fix(ledger, args.reference, args.file, account_id=args.account_id, dry_run=args.dry_run)
    if args.command == "show":
        rows = show(ledger, args.reference)
        print(json.dumps(rows, indent=2, default=str))
        return 0 if rows else 1
    states = args.state or [DocumentState.REJECTED.value, DocumentState.DEAD.value]
    count = ledger.requeue(args.reference, states=states, account_id=args.account_id)
    print(json.dumps({"requeued": count, "references": args.reference, "states": states}))
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
