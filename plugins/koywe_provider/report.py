"""The issuance report: counts by ledger state and every failure with its reason.

Written as JSON and Markdown next to each other (``<dir>/<dag_id>/<run_id>.json|.md``) in any
``ObjectStoragePath`` location, and logged. Carries references, states and Koywe's error texts — never
payloads or credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from koywe_provider.ledger import Ledger

OUTCOME_KEYS = (
    "issued",
    "adopted",
    "rejected",
    "retryable",
    "unknown",
    "dead",
    "duplicate_alarms",
    "skipped",
    "lookups",
    "rate_limited",
)


def sum_outcomes(outcomes: Iterable[dict[str, int] | None]) -> dict[str, int]:
    """Add up the per-batch outcome dicts of the mapped issue tasks (missing batches count as zero)."""
    total = dict.fromkeys(OUTCOME_KEYS, 0)
    for outcome in outcomes or ():
        for key, value in (outcome or {}).items():
            total[key] = total.get(key, 0) + int(value or 0)
    return total


def build_report(
    ledger: Ledger,
    *,
    dag_id: str,
    run_id: str,
    ingest: dict | None = None,
    outcomes: Iterable[dict[str, int] | None] = (),
    dry_run: bool = False,
) -> dict[str, Any]:
    """The report of one DAG run.

    ``states`` counts the rows this run ingested; ``ledger_states`` counts the whole ledger (outstanding
    work from earlier runs shows there); ``failures`` lists every row of this run that is neither issued
    nor pending, with reference, state, error class, message, file and line.
    """
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "dry_run": dry_run,
        "ingest": ingest or {},
        "states": ledger.counts_by_state(run_id=run_id),
        "ledger_states": ledger.counts_by_state(),
        "batches": sum_outcomes(outcomes),
        "failures": ledger.failures(run_id=run_id),
        "conflicts": ledger.conflicts(run_id=run_id),
    }


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`build_report`'s dict."""
    lines = [f"# Koywe issuance report — {report['dag_id']} / {report['run_id']}", ""]
    if report.get("dry_run"):
        lines += ["**Dry run**: documents were validated and recorded, nothing was sent to Koywe.", ""]
    lines += ["## Documents of this run by state", "", "| state | count |", "|---|---|"]
    lines += [f"| {state} | {count} |" for state, count in report["states"].items() if count]
    lines += ["", "## This run's issuing tasks", "", "| outcome | count |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in report["batches"].items() if value]
    outstanding = {k: v for k, v in report["ledger_states"].items() if v and k not in ("issued", "draft")}
    if outstanding:
        lines += ["", "## Whole ledger: not yet issued", ""]
        lines += [f"- {state}: {count}" for state, count in outstanding.items()]
    failures = report["failures"]
    lines += ["", f"## Failures ({len(failures)})", ""]
    if failures:
        lines += ["| reference | state | error | where |", "|---|---|---|---|"]
        for f in failures:
            where = f"{f.get('source') or ''}:{f.get('line_no') or ''}".strip(":")
            error = _cell(f"{f.get('last_error_class') or ''}: {f.get('last_error') or ''}".strip(": "))
            lines.append(f"| {_cell(f['reference'])} | {f['state']} | {error} | {_cell(where)} |")
        if any(f["state"] == "dead" for f in failures):
            lines += ["", "Rows in state `dead` need a person: fix the cause, then re-queue them."]
    conflicts = report["conflicts"]
    if conflicts:
        lines += [
            "",
            f"## Conflicts ({len(conflicts)}): same reference, different payload (not overwritten)",
            "",
        ]
        lines += [
            f"- {_cell(c['reference'])} (account {c['account_id']}) in {c.get('source')}:{c.get('line_no')}"
            for c in conflicts
        ]
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")[:500]


def write_report(report: dict[str, Any], directory) -> tuple[Any, Any]:
    """Write ``<directory>/<dag_id>/<run_id>.json`` and ``.md``; returns both paths.

    :param directory: an ``ObjectStoragePath`` (created when missing).
    """
    folder = directory / report["dag_id"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", report["run_id"])
    json_path = folder / f"{stem}.json"
    md_path = folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(render_markdown(report))
    return json_path, md_path
