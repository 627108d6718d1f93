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
    "retried",
)
#: ``last_error_class`` of a row several Koywe documents carry (set by the issuer; never acted on).
DUPLICATE_ALARM = "DuplicateAlarm"
#: Most dead rows listed by name in one report.
MAX_LISTED = 1000


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
    stuck_after_seconds: float | None = None,
) -> dict[str, Any]:
    """The report of one DAG run.

    ``states`` counts the rows this run ingested; ``ledger_states`` counts the whole ledger (outstanding
    work from earlier runs shows there); ``failures`` lists every row of this run that is neither issued
    nor pending, with reference, state, error class, message, file and line. ``batches`` adds up the issue
    tasks' outcomes (``retried``, ``adopted`` = found by lookup, ``dead``, ``duplicate_alarms`` …);
    ``dead`` lists every ``dead`` row of the whole ledger (they need a person) with reference and last
    error, and ``duplicate_alarms`` those of them that several Koywe documents carry. With
    ``stuck_after_seconds``, ``stuck`` holds the whole ledger's rows that should still move but have not
    changed for that long (``{"after_seconds", "count", "rows"}``, see ``Ledger.stuck``).
    """
    dead = [f for f in ledger.failures(limit=10**9) if f["state"] == "dead"][:MAX_LISTED]
    stuck = None
    if stuck_after_seconds is not None:
        count, rows = ledger.stuck(idle_seconds=stuck_after_seconds, limit=MAX_LISTED)
        stuck = {"after_seconds": stuck_after_seconds, "count": count, "rows": rows}
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
        "dead": dead,
        "duplicate_alarms": [f for f in dead if f.get("last_error_class") == DUPLICATE_ALARM],
        "reissued": ledger.reissued(run_id=run_id, limit=MAX_LISTED),
        "stuck": stuck,
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
    done = ("issued", "draft", "deleted", "external")  # deleted drafts and originals issued elsewhere: done
    outstanding = {k: v for k, v in report["ledger_states"].items() if v and k not in done}
    if outstanding:
        lines += ["", "## Whole ledger: not yet issued", ""]
        lines += [f"- {state}: {count}" for state, count in outstanding.items()]
    batches = report["batches"]
    lines += ["", "## Retries", ""]
    lines += [
        f"- retried: {batches.get('retried', 0)}",
        f"- adopted (found at Koywe by reference, not sent again): {batches.get('adopted', 0)}",
        f"- dead (gave up in this run): {batches.get('dead', 0)}",
        f"- duplicate alarms (this run): {batches.get('duplicate_alarms', 0)}",
        f"- content mismatch alarms (this run): {batches.get('mismatch_alarms', 0)}",
        f"- not sent to the tax bureau yet (followed): {batches.get('not_sent', 0)}",
    ]
    alarms = report.get("duplicate_alarms") or []
    if alarms:
        lines += ["", f"## Duplicate alarms ({len(alarms)}): several Koywe documents, a person decides", ""]
        lines += [f"- {_cell(a['reference'])}: {_cell(a.get('last_error') or '')}" for a in alarms]
    dead = report.get("dead") or []
    if dead:
        lines += ["", f"## Dead rows in the ledger ({len(dead)}): need a person", ""]
        lines += ["| reference | attempts | last error |", "|---|---|---|"]
        for d in dead:
            error = _cell(f"{d.get('last_error_class') or ''}: {d.get('last_error') or ''}".strip(": "))
            lines.append(f"| {_cell(d['reference'])} | {d.get('attempts', 0)} | {error} |")
    stuck = report.get("stuck") or {}
    if stuck.get("count"):
        lines += [
            "",
            f"## Stuck rows in the ledger ({stuck['count']}): unchanged for more than "
            f"{stuck['after_seconds'] / 3600:g} h",
            "",
            "| reference | state | attempts | last change |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(r['reference'])} | {r['state']} | {r.get('attempts', 0)} | {r.get('updated_at')} |"
            for r in stuck.get("rows") or []
        ]
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
    reissued = report.get("reissued") or []
    if reissued:
        lines += ["", f"## Re-issued after a refusal ({len(reissued)}): every generation", ""]
        lines += [
            "| reference | state | generation | Koywe reference | Koywe id | folio | bureau | outcome |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for r in reissued:
            for g in r.get("generations") or []:
                lines.append(
                    f"| {_cell(r['reference'])} | {r['state']} | {g['generation']} | "
                    f"{_cell(g.get('koywe_reference') or '')} | {_cell(g.get('koywe_document_id') or '')} | "
                    f"{_cell(g.get('document_number') or '')} | {g.get('taxbureau_validation_status') or ''} | "
                    f"{g.get('outcome') or ''} |"
                )
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


#: Folder of the reports when ``[koywe] reports_dir`` is not set: ``$AIRFLOW_HOME/koywe_reports``.
REPORTS_FOLDER = "koywe_reports"


def reports_dir() -> str:
    """Where the report tasks write and the Koywe page reads the reports: ``[koywe] reports_dir`` (a local
    path or an ``ObjectStoragePath`` URL such as ``s3://bucket/koywe-reports``), else
    ``$AIRFLOW_HOME/koywe_reports``. Read when called (task run time, page request), never at import."""
    import os
    from pathlib import Path

    from airflow.configuration import conf

    configured = conf.get("koywe", "reports_dir", fallback=None)
    if configured:
        return configured
    return str(Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / REPORTS_FOLDER)


def report_stem(run_id: str) -> str:
    """The file name (without ``.json``/``.md``) of run ``run_id``'s report."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def find_report(directory, run_id: str, *, dag_id: str | None = None) -> tuple[str, Any] | None:
    """``(dag_id, Markdown path)`` of run ``run_id``'s report under ``directory`` (an
    ``ObjectStoragePath``), looking in ``<directory>/<dag_id>/`` (every DAG's folder when ``dag_id`` is
    not given); ``None`` when no such report exists."""
    stem = report_stem(run_id)
    if dag_id:
        folders = [directory / dag_id]
    elif directory.exists():
        folders = sorted((p for p in directory.iterdir() if p.is_dir()), key=lambda p: p.name)
    else:
        folders = []
    for folder in folders:
        path = folder / f"{stem}.md"
        if path.exists():
            return folder.name, path
    return None


def write_report(report: dict[str, Any], directory) -> tuple[Any, Any]:
    """Write ``<directory>/<dag_id>/<run_id>.json`` and ``.md``; returns both paths.

    :param directory: an ``ObjectStoragePath`` (created when missing).
    """
    folder = directory / report["dag_id"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report["run_id"])
    json_path = folder / f"{stem}.json"
    md_path = folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(render_markdown(report))
    return json_path, md_path


#: Task states that mean a task's work did not happen.
FAILED_TASK_STATES = ("failed", "upstream_failed")
#: Default ``[koywe] max_invalid_fraction``: invalid lines are recorded rejections (listed in the report
#: with file, line and field), so by default they never fail the run; dead rows and duplicate alarms do.
DEFAULT_MAX_INVALID_FRACTION = 1.0
#: Default ``[koywe] stuck_after_seconds`` (6 h; the reconciliation's setting too): a row that keeps
#: retrying changes at each attempt (backoff capped at 6 h), so it is not called stuck.
DEFAULT_STUCK_AFTER_SECONDS = 6 * 3600.0


def run_counts(report: dict[str, Any]) -> dict[str, int]:
    """The counts a person (and the Asset event's ``extra``) needs about one run's report."""
    states = report.get("states") or {}
    batches = report.get("batches") or {}
    return {
        "documents": sum(int(v or 0) for v in states.values()),
        "issued": int(batches.get("issued", 0)),
        "adopted": int(batches.get("adopted", 0)),
        "rejected": int(states.get("rejected", 0)),
        "invalid": int(states.get("invalid", 0)),
        "dead": max(int(states.get("dead", 0)), int(batches.get("dead", 0))),
        "duplicate_alarms": int(batches.get("duplicate_alarms", 0)),
        "mismatch_alarms": int(batches.get("mismatch_alarms", 0)),
        "not_sent": int(states.get("not_sent", 0)),
        "reissued": len(report.get("reissued") or ()),
        "failures": len(report.get("failures") or ()),
        "stuck": int((report.get("stuck") or {}).get("count") or 0),
    }


def run_problems(
    task_states: dict[str, str | None],
    counts: dict[str, int] | None,
    *,
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION,
    fail_on_stuck: bool = False,
) -> list[str]:
    """Why a run must fail (``[]`` = it did its work): failed tasks, no report, dead rows, duplicate
    alarms, more than ``max_invalid_fraction`` of the run's documents invalid, and with
    ``fail_on_stuck`` stuck rows in the ledger (``counts["stuck"]``).

    :param task_states: ``{task_id or task_id_<map_index>: state}`` of the run's other tasks.
    :param counts: :func:`run_counts` of the run's report, ``None`` when no report was written.
    """
    problems = []
    failed = sorted(t for t, s in task_states.items() if s == "failed")
    if failed:
        problems.append(f"task{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed")
    else:
        blocked = sorted(t for t, s in task_states.items() if s in FAILED_TASK_STATES)
        if blocked:
            problems.append(f"task(s) {', '.join(blocked)} did not run")
    if counts is None:
        problems.append("no report was written")
        return problems
    if counts.get("dead"):
        problems.append(f"{counts['dead']} dead row(s) need a person")
    if counts.get("duplicate_alarms"):
        problems.append(
            f"{counts['duplicate_alarms']} duplicate alarm(s): several Koywe documents per reference"
        )
    if counts.get("mismatch_alarms"):
        problems.append(
            f"{counts['mismatch_alarms']} content mismatch alarm(s): a Koywe document under our reference "
            f"is not ours"
        )
    if fail_on_stuck and counts.get("stuck"):
        problems.append(f"{counts['stuck']} row(s) stuck (unchanged past [koywe] stuck_after_seconds)")
    documents, invalid = counts.get("documents", 0), counts.get("invalid", 0)
    if invalid and documents and invalid / documents > max_invalid_fraction:
        problems.append(
            f"{invalid} of {documents} documents invalid (above [koywe] max_invalid_fraction={max_invalid_fraction})"
        )
    return problems


#: The counts a run note shows, in this order, with their labels.
NOTE_COUNTS = (
    ("documents", "documents"),
    ("issued", "issued"),
    ("adopted", "adopted"),
    ("invalid", "invalid"),
    ("rejected", "rejected"),
    ("dead", "dead"),
    ("duplicate_alarms", "duplicate alarms"),
    ("mismatch_alarms", "mismatch alarms"),
    ("not_sent", "not sent to the tax bureau"),
    ("stuck", "stuck"),
)


def run_note(problems: list[str], counts: dict[str, int] | None, report: str | None) -> str:
    """The DAG run's note (Markdown, well under the API's 1000 characters): the verdict, the counts, the
    report's path. A run with invalid or dead documents says so in its first line even when it passed.

    :param problems: :func:`run_problems`' answer (``[]``: the run did its work).
    :param counts: :func:`run_counts` of the report (``None``: no report was written).
    """
    counts = counts or {}
    if problems:
        head = "**Koywe: run failed** — " + "; ".join(problems)
    elif counts.get("invalid") or counts.get("dead") or counts.get("rejected"):
        marks = [
            f"{counts[k]} {label}"
            for k, label in (("invalid", "invalid"), ("rejected", "rejected"), ("dead", "dead"))
            if counts.get(k)
        ]
        head = f"**Koywe: done, with {', '.join(marks)} document(s)** (listed in the report)"
    else:
        head = "**Koywe: OK**"
    shown = [
        f"{label} {int(counts.get(key) or 0)}"
        for key, label in NOTE_COUNTS
        if counts.get(key) or key == "issued"
    ]
    lines = [head[:600], "", " · ".join(shown) if counts else "no counts: no report was written"]
    if report:
        lines += ["", f"Report: `{report[-250:]}`"]
    return "\n".join(lines)
