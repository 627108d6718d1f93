"""Command line for the issuance ledger: find what the DAGs find, and re-queue rows after a fix.

    airflow koywe show --reference R [--reference R2 …]
    airflow koywe list [--state dead --state rejected] [--account-id A] [--run-id RUN] [--limit N] [--json]
    airflow koywe export --csv FILE|- [--state S …] [--account-id A] [--run-id RUN]
    airflow koywe requeue --reference R [--reference R2 …] [--state rejected --state dead]
    airflow koywe fix --reference R --file F [--account-id A] [--dry-run]

(``python -m koywe_provider.cli …`` is the same command without Airflow's CLI start-up.) The ledger is
``--ledger-url`` (SQLAlchemy URL) or, by default, the one of the Airflow connection ``koywe_ledger`` of this
``AIRFLOW_HOME`` (:class:`~koywe_provider.hooks.ledger.KoyweLedgerHook`), as the DAGs read it; a ledger
that does not exist is one line on stderr and exit code 2, never created here. A re-queued row goes back
to ``pending``; when it was sent before it is looked up by reference before any new POST, so a re-queue
never duplicates a document Koywe already holds. ``fix`` replaces the payload of an ``invalid``,
``rejected`` or unsent ``pending`` row by the corrected document in ``F``, validated as an inbox line is
(:mod:`koywe_provider.services.corrections`); a refusal is one line on stderr naming the field. Never
prints payloads or raw lines.
"""

from __future__ import annotations

import argparse
import csv
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


def ledger_url_of_airflow(conn_id: str = "koywe_ledger") -> str:
    """The ledger URL of connection ``conn_id`` as this ``AIRFLOW_HOME``'s DAGs resolve it: environment
    variables, the secrets backend and the metadata database (where the UI and ``airflow connections
    add`` store connections), else ``$AIRFLOW_HOME/koywe_ledger.db``.

    A task reads connections through its supervisor; a command line has none, and the Task SDK's
    ``BaseHook.get_connection`` then skips the metadata database. Airflow's own
    ``Connection.get_connection_from_secrets`` (what ``airflow connections get`` uses) does not.
    """
    from koywe_provider.hooks.ledger import (
        KoyweLedgerHook,
        default_ledger_url,
        sqlalchemy_url_from_connection,
    )

    try:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection
    except ImportError:  # pragma: no cover - Airflow's core is installed with the provider
        return KoyweLedgerHook(conn_id).get_url()
    if not _metadata_database_exists():
        return KoyweLedgerHook(conn_id).get_url()
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return default_ledger_url()
    except Exception:  # no metadata database here (never set up): what the Task SDK finds
        return KoyweLedgerHook(conn_id).get_url()
    return sqlalchemy_url_from_connection(conn)


def _metadata_database_exists() -> bool:
    """False when Airflow's metadata database is a SQLite file that does not exist (asking it would
    create an empty one)."""
    from airflow.configuration import conf
    from sqlalchemy.engine import make_url

    url = make_url(conf.get("database", "sql_alchemy_conn"))
    if url.get_backend_name() != "sqlite":
        return True
    from pathlib import Path

    return bool(url.database) and Path(url.database).exists()


def _ledger(url: str | None) -> Ledger:
    """The ledger at ``url`` (default: the ``koywe_ledger`` connection's), never created here.

    :raises LedgerMissingError: the SQLite file does not exist or the database was never migrated.
    """
    if not url:
        url = ledger_url_of_airflow()
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


#: Columns ``list`` prints as a table.
LISTED = (
    "id",
    "reference",
    "account_id",
    "state",
    "attempts",
    "last_error_class",
    "document_number",
    "updated_at",
)
#: Rows per ledger page for ``list`` and ``export``.
PAGE = 1000


def iter_rows(
    ledger: Ledger,
    *,
    states: Sequence[str] = (),
    account_id: str | None = None,
    run_id: str | None = None,
    limit: int | None = None,
):
    """Rows in id order (no payload, no raw line), page by page; at most ``limit`` when given."""
    after, left = 0, limit
    while left is None or left > 0:
        page = ledger.rows(
            states=states,
            account_id=account_id,
            run_id=run_id,
            after_id=after,
            limit=PAGE if left is None else min(PAGE, left),
        )
        if not page:
            return
        yield from page
        after = page[-1]["id"]
        if left is not None:
            left -= len(page)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)


def print_table(rows: list[dict[str, Any]], columns: Sequence[str] = LISTED, out=None) -> None:
    """``rows`` as an aligned text table of ``columns`` (long cells cut at 40 characters)."""
    out = out or sys.stdout
    cells = [[_text(r.get(c))[:40] for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def export_csv(ledger: Ledger, out, **filters: Any) -> int:
    """Write every row matching ``filters`` (see :func:`iter_rows`) as CSV with a header; returns the count."""
    writer = None
    count = 0
    for row in iter_rows(ledger, **filters):
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), extrasaction="ignore")
            writer.writeheader()
        writer.writerow({k: _text(v) for k, v in row.items()})
        count += 1
    if writer is None:
        from koywe_provider.ledger.queries import ROW_COLUMNS

        csv.writer(out).writerow(ROW_COLUMNS)
    return count


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in DocumentState],
        help="only rows in this state (repeatable)",
    )
    parser.add_argument("--account-id", help="only rows of this Koywe account")
    parser.add_argument("--run-id", help="only rows ingested by this DAG run")


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m koywe_provider.cli") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
    list_p = commands.add_parser(
        "list", help="print the rows in these states (default: every row), oldest first"
    )
    _add_filters(list_p)
    list_p.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100; 0: all)")
    list_p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    export_p = commands.add_parser("export", help="write the rows (every column but the payload) as CSV")
    _add_filters(export_p)
    export_p.add_argument(
        "--csv", required=True, metavar="FILE", help="the CSV file to write, or - for stdout"
    )
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
    filters = (
        {
            "states": args.state or (),
            "account_id": args.account_id,
            "run_id": args.run_id,
        }
        if args.command in ("list", "export")
        else {}
    )
    if args.command == "list":
        rows = list(iter_rows(ledger, limit=args.limit or None, **filters))
        if args.json:
            for row in rows:
                print(
                    json.dumps({k: _text(v) if k.endswith("_at") else v for k, v in row.items()}, default=str)
                )
        else:
            print_table(rows)
        return 0
    if args.command == "export":
        if args.csv == "-":
            count = export_csv(ledger, sys.stdout, **filters)
        else:
            with open(args.csv, "w", newline="", encoding="utf-8") as out:
                count = export_csv(ledger, out, **filters)
        print(f"koywe: exported {count} row(s) to {args.csv}", file=sys.stderr)
        return 0
    states = args.state or [DocumentState.REJECTED.value, DocumentState.DEAD.value]
    count = ledger.requeue(args.reference, states=states, account_id=args.account_id)
    print(json.dumps({"requeued": count, "references": args.reference, "states": states}))
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
